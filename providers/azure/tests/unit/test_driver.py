"""The conformance driver through the real SDK's long-running operations (202 +
Azure-AsyncOperation), checked against the provider's answers."""

from __future__ import annotations

from typing import Any

from ccm_azure.driver import driver_factory
from ccm_azure.testing.arm import FakeArm

from ccm.cloudprovider import Node


async def test_driver_machines_as_the_provider_sees_them(make_provider: Any, arm: FakeArm) -> None:
    provider = await make_provider()
    driver = driver_factory(provider)
    instances = provider.instances_v2()
    try:
        a = await driver.create_machine("node-a")
        b = await driver.create_machine("node-b")
        assert (a.zone, b.zone) == ("eastus-1", "eastus-2")
        for machine in (a, b):
            node = Node({"metadata": {"name": machine.name}, "spec": {}})
            meta = await instances.instance_metadata(node)
            assert meta.provider_id == machine.provider_id
            assert meta.node_addresses == machine.addresses
            assert (meta.zone, meta.region, meta.instance_type) == (
                machine.zone,
                machine.region,
                machine.instance_type,
            )
        node_a = Node({"metadata": {"name": "node-a"}, "spec": {"providerID": a.provider_id}})
        arm.calls.clear()
        await driver.stop_machine("node-a")
        assert arm.calls["GET operations"] >= 2, "the deallocation was polled to its end"
        assert await instances.instance_shutdown(node_a) is True
        await driver.start_machine("node-a")
        assert await instances.instance_shutdown(node_a) is False
        changed = await driver.change_addresses("node-a")
        assert (await instances.instance_metadata(node_a)).node_addresses == changed
        assert len(changed) == len(a.addresses) + 1
        await driver.delete_machine("node-a")
        await driver.delete_machine("node-a")
        assert await instances.instance_exists(node_a) is False
    finally:
        await driver.cleanup()
    assert not [k for k in arm.resources if "node-" in k], "cleanup deleted everything"
