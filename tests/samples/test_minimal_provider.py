"""The minimal-provider sample: InstancesV2 only. The real daemon (provider found by its entry
point) initializes a Node and its start-up log names every capability the provider omits and every
controller it therefore skips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from tests.e2e.conftest import Nodes, is_tainted

OMITTED = ["Instances", "Zones", "LoadBalancer", "Routes", "Clusters"]


async def test_factory_and_metadata() -> None:
    from minimal_provider import factory

    from ccm.cloudprovider import Node
    from ccm.errors import ConfigError, InstanceNotFoundError

    provider = factory(b"machines: {w1: {id: vm-1, type: small, zone: z, region: r, ip: 10.0.0.1}}")
    assert provider.instances_v2() is provider
    assert [provider.load_balancer(), provider.routes(), provider.zones()] == [None] * 3
    meta = await provider.instance_metadata(Node({"metadata": {"name": "w1"}}))
    assert meta is not None
    assert meta.provider_id == "minimal://vm-1"
    assert await provider.instance_exists(Node({"metadata": {"name": "w2"}})) is False
    with pytest.raises(InstanceNotFoundError):
        await provider.instance_metadata(Node({"metadata": {"name": "w2"}}))
    with pytest.raises(ConfigError):
        factory(b"machines: {w1: {type: small}}")


async def test_provider_id_wins_over_the_node_name() -> None:
    """w1 was re-created (new id vm-2): its old Node, still carrying minimal://vm-1, is gone."""
    from minimal_provider import factory

    from ccm.cloudprovider import Node
    from ccm.errors import InstanceNotFoundError

    provider = factory(b"machines: {w1: {id: vm-2, ip: 10.0.0.2}}")
    stale = Node({"metadata": {"name": "w1"}, "spec": {"providerID": "minimal://vm-1"}})
    assert await provider.instance_exists(stale) is False
    with pytest.raises(InstanceNotFoundError):
        await provider.instance_metadata(stale)
    current = Node({"metadata": {"name": "w1"}, "spec": {"providerID": "minimal://vm-2"}})
    assert await provider.instance_exists(current) is True


@pytest.mark.e2e
def test_minimal_provider_initializes_nodes_and_reports_what_it_omits(
    control_plane: ControlPlane,
    nodes: Nodes,
    tmp_path: Path,
    unique_name: Callable[..., str],
    k8s_admin: Any,
) -> None:
    name = unique_name("min-node")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "machines": {
                    name: {
                        "id": "vm-001",
                        "type": "small",
                        "zone": "zone-a",
                        "region": "region-1",
                        "ip": "10.0.0.11",
                    }
                }
            }
        )
    )
    nodes.create(name)
    daemon = Daemon(
        [
            "--cloud-provider=minimal",
            f"--cloud-config={inventory}",
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--leader-elect-resource-name={unique_name('lease')}",
        ],
        log_dir=tmp_path,
    )
    with daemon:
        node = nodes.wait(name, lambda n: not is_tainted(n), what="initialized")
        assert node.spec.provider_id == "minimal://vm-001"
        labels = node.metadata.labels
        assert labels[wellknown.LABEL_INSTANCE_TYPE] == "small"
        assert labels[wellknown.LABEL_ZONE] == "zone-a"
        assert labels[wellknown.LABEL_REGION] == "region-1"
        node = nodes.wait(name, lambda n: len(n.status.addresses or []) == 2, what="addresses")
        assert node.status.addresses[0].address == "10.0.0.11"
        daemon.wait_for_log('Started "cloud-node-lifecycle-controller"')
        log = daemon.log()
    for iface in OMITTED:
        assert f"cloud provider 'minimal' does not implement the optional interface {iface}" in log
    assert "optional interface InstancesV2" not in log
    assert 'Skipping "service-lb-controller": the cloud provider does not support external' in log
    assert 'Skipping "node-route-controller": --configure-cloud-routes is set, but cloud' in log
    assert 'Started "cloud-node-controller"' in log
