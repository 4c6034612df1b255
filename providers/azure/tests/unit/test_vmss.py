"""Scale set instances (``vmType: vmss``): upstream's provider IDs, node names (computer names),
SKU, addresses from the instance's NIC, power states, and batches that agree with single calls."""

from __future__ import annotations

from typing import Any

import pytest
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld
from ccm_azure.vmss import parse_vmss_provider_id

from ccm import errors
from ccm.cloudprovider import InstanceMetadata, Node, NodeAddress

PID = (
    "azure:///subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Compute/"
    "virtualMachineScaleSets/pool1/virtualMachines/{}"
)


def node(name: str, pid: str = "") -> Node:
    return Node({"metadata": {"name": name}, "spec": {"providerID": pid} if pid else {}})


def test_provider_ids_parse_as_upstream() -> None:
    ref = parse_vmss_provider_id(PID.format("3"))
    assert (ref.resource_group, ref.scale_set, ref.instance_id) == ("rg-1", "pool1", "3")
    # An instance ID written <scale set>_<id> is the <id>.
    assert parse_vmss_provider_id(PID.format("pool1_7")).instance_id == "7"
    with pytest.raises(errors.CloudProviderError):
        parse_vmss_provider_id(PID.format("3") + "/extra")


async def test_metadata_by_computer_name_and_by_provider_id(
    make_provider: Any, world: AzureWorld
) -> None:
    world.create_vmss_vm(
        "pool1", "3", computer_name="AKS-Pool1-000003", zone="1",
        private_ip="10.2.0.7", public_ip="20.3.4.5",
    )  # fmt: skip
    world.create_vmss_vm("pool1", "4", fault_domain=2, private_ip="10.2.0.8")
    provider = await make_provider(vmType="vmss", resourceGroup="RG-1")
    instances = provider.instances_v2()
    want = InstanceMetadata(
        provider_id=PID.format("3"),
        instance_type="Standard_D4s_v3",
        node_addresses=(
            NodeAddress(type="InternalIP", address="10.2.0.7"),
            NodeAddress(type="Hostname", address="aks-pool1-000003"),
            NodeAddress(type="ExternalIP", address="20.3.4.5"),
        ),
        zone="eastus-1",
        region="eastus",
    )
    assert await instances.instance_metadata(node("aks-pool1-000003")) == want
    assert await instances.instance_metadata(node("aks-pool1-000003", PID.format("3"))) == want
    other = await instances.instance_metadata(node("pool1000004", PID.format("4")))
    assert other.zone == "2" and other.node_addresses[0].address == "10.2.0.8"
    batch = await provider.instances_batch().instance_metadata_batch(
        [node("aks-pool1-000003", PID.format("3")), node("pool1000004", PID.format("4")),
         node("aks-pool1-000003")]
    )  # fmt: skip
    assert list(batch) == [want, other, want]


async def test_exists_and_shutdown_follow_power_and_provisioning_states(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    world.create_vmss_vm("pool1", "0")
    world.create_vmss_vm("pool1", "1")
    world.create_vm("plain-vm")
    provider = await make_provider(vmType="vmss")
    instances, batch = provider.instances_v2(), provider.instances_batch()
    nodes = [node("a", PID.format("0")), node("b", PID.format("1")), node("c", PID.format("9")),
             node("plain-vm")]  # fmt: skip
    assert [await instances.instance_exists(n) for n in nodes] == [True, True, False, True]
    assert list(await batch.instance_exists_batch(nodes)) == [True, True, False, True]
    for state, down in (("running", False), ("stopped", True), ("deallocating", True),
                        ("deallocated", True)):  # fmt: skip
        arm.set_power(world.vmss_vm_id("pool1", "1"), state)
        assert await instances.instance_shutdown(nodes[1]) is down, state
        assert list(await batch.instance_shutdown_batch(nodes[:3])) == [False, down, False]
    arm.get_resource(world.vmss_vm_id("pool1", "0"))["properties"]["provisioningState"] = "Deleting"
    assert await instances.instance_exists(nodes[0]) is False
    world.arm.delete_resource(world.vmss_vm_id("pool1", "1"))
    assert list(await batch.instance_exists_batch(nodes)) == [False, False, False, True]
    with pytest.raises(errors.InstanceNotFoundError):
        await instances.instance_metadata(nodes[1])


async def test_a_vm_named_like_the_node_is_found_when_no_instance_is(
    make_provider: Any, world: AzureWorld
) -> None:
    world.create_vm("plain-vm", private_ip="10.0.0.9")
    provider = await make_provider(vmType="vmss")
    meta = await provider.instances_v2().instance_metadata(node("plain-vm"))
    assert meta.provider_id.endswith("/virtualMachines/plain-vm")
    (batched,) = await provider.instances_batch().instance_metadata_batch([node("plain-vm")])
    assert batched == meta


async def test_the_backend_pool_is_joined_through_the_scale_sets_network_profile(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    from ccm.cloudprovider import Service

    for i in range(3):
        world.create_vmss_vm("pool1", str(i))
    world.create_vmss_vm("pool2", "0")
    provider = await make_provider(vmType="vmss")
    lbs = provider.load_balancer()
    svc = Service(
        {
            "metadata": {"name": "web", "namespace": "ns", "uid": "0001"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}]},
        }
    )
    nodes = [node(f"n{i}", PID.format(i)) for i in range(2)]
    await lbs.ensure_load_balancer("k8s", svc, nodes)
    pool = (
        "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Network/loadBalancers/k8s"
        "/backendAddressPools/k8s"
    )
    assert world.backend_pools("pool1") == [pool]
    assert [world.backend_pools("pool1", str(i)) for i in range(3)] == [[pool], [pool], []]
    assert world.backend_pools("pool2") == [] and world.backend_pools("pool2", "0") == []
    body = arm.get_resource(pool.rsplit("/backendAddressPools", 1)[0])
    assert body is not None
    (backend,) = body["properties"]["backendAddressPools"]
    assert not backend.get("properties", {}).get("loadBalancerBackendAddresses")
    # A VM's power state and zone survive the instance's update (ARM keeps its read-only parts).
    assert (await provider.instances_v2().instance_metadata(nodes[0])).zone == "0"

    # The Nodes change: one leaves, one of another scale set joins; nothing else is written.
    arm.calls.clear()
    await lbs.update_load_balancer(
        "k8s", svc, [nodes[1], node("m0", PID.replace("pool1", "pool2").format(0))]
    )
    assert [world.backend_pools("pool1", str(i)) for i in range(3)] == [[], [pool], []]
    assert world.backend_pools("pool2") == [pool] and world.backend_pools("pool2", "0") == [pool]
    assert arm.calls["PUT virtualMachineScaleSets/virtualMachines"] == 2
    assert arm.calls["PUT virtualMachineScaleSets"] == 1

    # The last Service goes: the scale sets leave the pool before the load balancer is deleted.
    await lbs.ensure_load_balancer_deleted("k8s", svc)
    assert world.backend_pools("pool1") == [] and world.backend_pools("pool2") == []
    assert all(world.backend_pools("pool1", str(i)) == [] for i in range(3))
    assert arm.get_resource(pool.rsplit("/backendAddressPools", 1)[0]) is None
