"""InstancesV2 and InstancesBatch against the fake ARM server, through the real SDK clients and
the real bearer-token policy."""

from __future__ import annotations

from typing import Any

import pytest
from ccm_azure.instances import provider_id
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld

from ccm import errors
from ccm.cloudprovider import InstanceMetadata, Node, NodeAddress


def node(name: str, pid: str = "") -> Node:
    return Node({"metadata": {"name": name}, "spec": {"providerID": pid} if pid else {}})


def pid(name: str, group: str = "rg-1") -> str:
    return provider_id("sub-1", group, name)


async def test_metadata_of_a_zonal_vm(make_provider: Any, world: AzureWorld, arm: FakeArm) -> None:
    world.create_vm(
        "vm-a", zone="2", private_ip="10.0.0.4", public_ip="20.1.2.3", size="Standard_B2s"
    )
    provider = await make_provider()
    meta = await provider.instances_v2().instance_metadata(node("vm-a"))
    assert meta == InstanceMetadata(
        provider_id="azure:///subscriptions/sub-1/resourceGroups/rg-1/providers/"
        "Microsoft.Compute/virtualMachines/vm-a",
        instance_type="Standard_B2s",
        node_addresses=(
            NodeAddress(type="InternalIP", address="10.0.0.4"),
            NodeAddress(type="Hostname", address="vm-a"),
            NodeAddress(type="ExternalIP", address="20.1.2.3"),
        ),
        zone="eastus-2",
        region="eastus",
    )
    assert arm.tokens_issued == 1
    assert arm.api_versions, "the SDK's api-versions were recorded"


async def test_metadata_of_a_vm_without_zone_uses_the_fault_domain(
    make_provider: Any, world: AzureWorld
) -> None:
    world.create_vm("vm-b", fault_domain=3, private_ip="10.0.0.5", public_ip=None, extra_nics=1)
    provider = await make_provider()
    meta = await provider.instances_v2().instance_metadata(node("vm-b"))
    assert meta.zone == "3"
    assert meta.node_addresses == (
        NodeAddress(type="InternalIP", address="10.0.0.5"),
        NodeAddress(type="Hostname", address="vm-b"),
    )


async def test_provider_id_wins_over_the_node_name_and_its_resource_group(
    make_provider: Any, world: AzureWorld
) -> None:
    world.create_vm("vm-a", private_ip="10.0.0.4")
    world.create_vm("vm-b", private_ip="10.0.0.5", group="Other-RG")
    provider = await make_provider()
    meta = await provider.instances_v2().instance_metadata(node("vm-a", pid("vm-b", "Other-RG")))
    assert meta.provider_id == pid("vm-b", "other-rg")
    assert meta.node_addresses[0].address == "10.0.0.5"


@pytest.mark.parametrize(
    ("power", "provisioning", "shutdown"),
    [
        ("running", "Succeeded", False),
        ("stopped", "Succeeded", True),
        ("deallocated", "Succeeded", True),
        ("deallocating", "Succeeded", True),
        ("stopping", "Succeeded", False),
        ("deallocated", "Failed", False),
        ("starting", "Succeeded", False),
    ],
)
async def test_shutdown_follows_upstream_power_and_provisioning_rules(
    make_provider: Any, world: AzureWorld, power: str, provisioning: str, shutdown: bool
) -> None:
    world.create_vm("vm-a")
    world.set_power("vm-a", power)
    world.set_provisioning_state("vm-a", provisioning)
    provider = await make_provider()
    instances = provider.instances_v2()
    assert await instances.instance_shutdown(node("vm-a", pid("vm-a"))) is shutdown
    assert await instances.instance_exists(node("vm-a", pid("vm-a"))) is True
    batch = provider.instances_batch()
    assert list(await batch.instance_shutdown_batch([node("vm-a", pid("vm-a"))])) == [shutdown]


async def test_a_deleted_or_deleting_vm_is_gone(make_provider: Any, world: AzureWorld) -> None:
    world.create_vm("vm-a")
    world.create_vm("vm-b")
    world.set_provisioning_state("vm-b", "Deleting")
    provider = await make_provider()
    instances = provider.instances_v2()
    assert await instances.instance_exists(node("vm-a", pid("vm-a"))) is True
    world.delete_vm("vm-a")
    for name in ("vm-a", "vm-b"):
        assert await instances.instance_exists(node(name, pid(name))) is False
        assert await instances.instance_exists(node(name)) is False
        assert await instances.instance_shutdown(node(name, pid(name))) is False
        with pytest.raises(errors.InstanceNotFoundError):
            await instances.instance_metadata(node(name, pid(name)))


async def test_provider_ids_malformed_and_unmanaged(make_provider: Any) -> None:
    provider = await make_provider()
    instances = provider.instances_v2()
    bad = "azure:///subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Compute/disks/d1"
    with pytest.raises(errors.CloudProviderError, match="does not name an Azure virtual machine"):
        await instances.instance_exists(node("n", bad))
    with pytest.raises(errors.CloudProviderError):
        await instances.instance_shutdown(node("n", bad))
    # Upstream's unmanaged node: a provider ID outside Azure compute always exists.
    other = "baremetal://rack-1/n"
    assert await instances.instance_exists(node("n", other)) is True
    assert await instances.instance_metadata(node("n", other)) == InstanceMetadata(
        provider_id=other
    )
    assert await instances.instance_shutdown(node("n", other)) is False
    assert await instances.instance_shutdown(node("n")) is False
    batch = provider.instances_batch()
    answers = await batch.instance_shutdown_batch([node("n", other), node("n", bad)])
    assert answers[0] is False
    assert isinstance(answers[1], errors.CloudProviderError)
    answers = await batch.instance_exists_batch([node("n", other), node("n", bad)])
    assert answers[0] is True
    assert isinstance(answers[1], errors.CloudProviderError)


async def test_batch_agrees_with_single_calls_in_one_list_call_per_kind(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    for name, zone in (("vm-a", "1"), ("vm-b", "2"), ("vm-c", None)):
        world.create_vm(name, zone=zone)
    world.set_power("vm-b", "deallocated")
    provider = await make_provider()
    nodes = [
        node("vm-a"),
        node("vm-b", pid("vm-b")),
        node("vm-c"),
        node("gone", pid("gone")),
        node("never"),
    ]
    single = provider.instances_v2()
    batch = provider.instances_batch()
    arm.calls.clear()
    metas = await batch.instance_metadata_batch(nodes)
    assert arm.calls == {
        "GET virtualMachines": 1,
        "GET networkInterfaces": 1,
        "GET publicIPAddresses": 1,
    }
    for n, meta in zip(nodes, metas, strict=True):
        if n.name in ("gone", "never"):
            assert isinstance(meta, errors.InstanceNotFoundError)
        else:
            assert meta == await single.instance_metadata(n)
    assert list(await batch.instance_exists_batch(nodes)) == [True, True, True, False, False]
    assert [await single.instance_exists(n) for n in nodes] == [True, True, True, False, False]
    assert list(await batch.instance_shutdown_batch(nodes)) == [False, True, False, False, False]
