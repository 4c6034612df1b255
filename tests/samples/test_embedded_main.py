"""The embedded-main sample (upstream ``sample/basic_main.go``): ``mycloud-ccm`` registers its
provider in code and runs ccm with its own defaults, client names, controller and flag. Run as a
subprocess against the real control plane, it initializes a Node; the audit log shows the Node
written by the controller's custom client name; with ``--controllers=*,mycloud-node-tagger`` and
``--mycloud-tag-prefix`` its own controller labels the initialized Node with the cloud's tags."""

from __future__ import annotations

import json
import os
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


def test_help_shows_its_own_flag_and_controller() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "1000"},  # argparse wraps help at hyphens otherwise
    ).stdout
    text = " ".join(out.split())
    assert "mycloud flags: --mycloud-tag-prefix PREFIX Label prefix of the cloud tags" in text
    assert (
        "node-route-controller, mycloud-node-tagger. Disabled by default: mycloud-node-tagger"
        in (text)
    )


def test_an_unknown_controller_is_still_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--controllers=*,mycloud-node-taggr"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert '"mycloud-node-taggr" is not in the list of known controllers' in done.stderr
    assert "mycloud-node-tagger" in done.stderr


@pytest.mark.e2e
def test_its_own_controller_labels_initialized_nodes_with_the_prefix_of_its_own_flag(
    control_plane: ControlPlane,
    nodes: Nodes,
    tmp_path: Path,
    unique_name: Callable[..., str],
) -> None:
    name = unique_name("mycloud-tagged")
    nodes.create(name)
    daemon = Daemon(
        [
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--leader-elect-resource-name={unique_name('lease')}",
            "--controllers=*,tagger",  # its alias
            "--mycloud-tag-prefix=tags.mycloud.example.com/",
        ],
        command=[sys.executable, str(SCRIPT)],
        name="mycloud-ccm",
        log_dir=tmp_path,
    )
    with daemon:
        node = nodes.wait(
            name,
            lambda n: "tags.mycloud.example.com/team" in (n.metadata.labels or {}),
            what="tagged",
        )
        log = daemon.log()
    assert not is_tainted(node)
    labels = node.metadata.labels
    assert labels["tags.mycloud.example.com/team"] == "blue"
    assert labels["tags.mycloud.example.com/machine"] == name
    assert 'Started "mycloud-node-tagger"' in log


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
    # Its own controller is off unless named.
    assert '"mycloud-node-tagger" is disabled' in log
    assert not any(k.startswith("tags.mycloud.example.com/") for k in labels)

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
