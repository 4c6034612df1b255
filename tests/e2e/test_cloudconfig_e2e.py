"""End to end: the real daemon notices a changed ``--cloud-config`` (a rotated Secret).

With the fake provider (which has the reload hook) the new configuration serves the Nodes
registered after it; a malformed file is refused and the daemon goes on. With the minimal sample
provider (no hook) the daemon gives the Lease up and exits 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import wellknown
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes, is_tainted

pytestmark = pytest.mark.e2e

POLL = "--cloud-config-poll-interval=0.2s"


def test_fake_provider_reloads_a_changed_config_and_refuses_a_malformed_one(
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    cloud = fake_cloud_files(defaultInstance={"instanceType": "fake.small", "region": "r-1"})
    daemon = daemon_factory(cloud, "--controllers=cloud-node", POLL)
    first, second = unique_name("node"), unique_name("node")
    nodes.create(first, internal_ip="10.0.0.5")
    node = nodes.wait(first, lambda n: not is_tainted(n), what="initialized")
    assert node.metadata.labels[wellknown.LABEL_INSTANCE_TYPE] == "fake.small"

    doc = yaml.safe_load(cloud.config.read_text())
    cloud.config.write_text("defaultInstance: [this is not a mapping\n")
    daemon.wait_for_log("Refusing the changed cloud config")
    doc["defaultInstance"]["instanceType"] = "fake.large"
    cloud.config.write_text(yaml.safe_dump(doc))
    daemon.wait_for_log("Reloaded the changed cloud config")
    nodes.create(second, internal_ip="10.0.0.6")
    node = nodes.wait(second, lambda n: not is_tainted(n), what="initialized")
    assert node.metadata.labels[wellknown.LABEL_INSTANCE_TYPE] == "fake.large"
    assert daemon.running


def test_a_provider_without_reload_releases_the_lease_and_exits_0(
    k8s_admin: Any,
    tmp_path: Path,
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    from kubernetes import client

    inventory = tmp_path / "inventory.yaml"
    machines = {"machines": {"w-1": {"id": "vm-1", "type": "small", "ip": "10.0.0.11"}}}
    inventory.write_text(yaml.safe_dump(machines))
    lease = unique_name("lease")
    daemon = daemon_factory(
        None,
        "--cloud-provider=minimal",
        f"--cloud-config={inventory}",
        "--controllers=cloud-node",
        POLL,
        lease_name=lease,
    )
    daemon.wait_for_log("successfully acquired lease")
    coordination = client.CoordinationV1Api(k8s_admin)
    held = coordination.read_namespaced_lease(lease, wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE)
    assert held.spec.holder_identity

    inventory.write_text("machines: [unclosed\n")
    daemon.wait_for_log("Refusing the changed cloud config")
    assert daemon.running
    machines["machines"]["w-2"] = {"id": "vm-2", "type": "small", "ip": "10.0.0.12"}
    inventory.write_text(yaml.safe_dump(machines))
    assert daemon.wait(30) == 0
    assert "releasing the Lease and exiting" in daemon.log()
    released = coordination.read_namespaced_lease(
        lease, wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    )
    assert not released.spec.holder_identity
