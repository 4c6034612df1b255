"""The embedded-main sample (upstream ``sample/basic_main.go``): ``mycloud-ccm`` registers its
provider in code and runs ccm with its own defaults and client names. Run as a subprocess against
the real control plane, it initializes a Node; the audit log shows the Node written by the
controller's custom client name."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from tests.e2e.conftest import Nodes, is_tainted

SCRIPT = Path(__file__).resolve().parents[2] / "samples/embedded-main/mycloud_ccm.py"


def test_own_program_name_and_defaults() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("usage: mycloud-ccm")
    version = subprocess.run(
        [sys.executable, str(SCRIPT), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("mycloud-ccm ")


@pytest.mark.e2e
def test_embedded_main_initializes_a_node_with_its_own_client_names(
    control_plane: ControlPlane,
    nodes: Nodes,
    tmp_path: Path,
    unique_name: Callable[..., str],
    k8s_admin: Any,
) -> None:
    name = unique_name("mycloud-node")
    nodes.create(name)
    daemon = Daemon(
        [
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--leader-elect-resource-name={unique_name('lease')}",
            "-v",
            "2",
        ],
        command=[sys.executable, str(SCRIPT)],
        name="mycloud-ccm",
        log_dir=tmp_path,
    )
    with daemon:
        node = nodes.wait(name, lambda n: not is_tainted(n), what="initialized")
        log = daemon.log()
    assert node.spec.provider_id == f"mycloud://{name}"
    labels = node.metadata.labels
    assert labels[wellknown.LABEL_INSTANCE_TYPE] == "mc.standard"
    assert labels[wellknown.LABEL_ZONE] == "mc-zone-1"
    assert labels["mycloud.example.com/managed"] == "true"
    # Its defaults: no --cloud-provider flag was given, and routes are off.
    assert 'Skipping "node-route-controller": Will not configure cloud provider routes' in log

    def writers() -> set[str]:
        agents = set()
        for line in control_plane.audit_log_path.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                ref.get("resource") == "nodes"
                and ref.get("name") == name
                and event.get("verb") == "patch"
            ):
                agents.add(event.get("userAgent", ""))
        return agents

    deadline = time.monotonic() + 15
    while not writers() and time.monotonic() < deadline:
        time.sleep(0.2)  # the audit log is written asynchronously
    agents = writers()
    assert agents
    assert all(a.endswith("/mycloud-external-cloud-node-controller") for a in agents), agents
