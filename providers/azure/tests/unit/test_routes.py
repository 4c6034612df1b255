"""Routes in the configured route table, named as upstream, next hop the Node's internal IP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from ccm_azure.routes import node_of_route, route_name
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld

from ccm import errors
from ccm.cloudprovider import Route


def test_route_names_are_upstreams() -> None:
    assert route_name("node-1", "10.244.1.0/24") == "node-1____102441024"
    assert route_name("node-1", "fd00:1::/64") == "node-1____fd00164"
    assert node_of_route("node-1____102441024") == "node-1"
    assert node_of_route("node-1") == "node-1"


async def test_create_list_delete_dual_stack_routes_leaving_others_alone(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    world.create_vm("node-1", private_ip="10.0.0.4", private_ipv6="fd00::4")
    world.create_vm("node-2", private_ip="10.0.0.5")
    world.create_route_table()
    provider = await make_provider()
    routes = provider.routes()
    assert routes is not None
    # Not ours: another cluster's route in the same table.
    table = world.resource_id("Microsoft.Network", "routeTables", "rt-1")
    arm.put_resource(
        table + "/routes/other", {"properties": {"addressPrefix": "192.168.9.0/24",
                                                 "nextHopType": "VirtualAppliance",
                                                 "nextHopIpAddress": "192.168.0.1"}},
    )  # fmt: skip
    want = [
        Route(target_node="node-1", destination_cidr="10.244.1.0/24"),
        Route(target_node="node-1", destination_cidr="fd00:1::/64"),
        Route(target_node="node-2", destination_cidr="10.244.2.0/24"),
    ]
    for route in want:
        await routes.create_route("c1", "hint", route)
        await routes.create_route("c1", "hint", route)  # idempotent
    held = world.routes()
    assert {n: r["properties"]["nextHopIpAddress"] for n, r in held.items()} == {
        "node-1____102441024": "10.0.0.4",
        "node-1____fd00164": "fd00::4",
        "node-2____102442024": "10.0.0.5",
        "other": "192.168.0.1",
    }
    assert {r["properties"]["nextHopType"] for r in held.values()} == {"VirtualAppliance"}
    listed = await routes.list_routes("c1")
    assert {(r.name, r.target_node, r.destination_cidr) for r in listed} == {
        ("node-1____102441024", "node-1", "10.244.1.0/24"),
        ("node-1____fd00164", "node-1", "fd00:1::/64"),
        ("node-2____102442024", "node-2", "10.244.2.0/24"),
        ("other", "other", "192.168.9.0/24"),
    }
    arm.calls.clear()
    for route in listed:
        if route.target_node == "node-1":
            await routes.delete_route("c1", route)
            await routes.delete_route("c1", route)  # idempotent
    assert arm.calls["GET operations"] >= 2, "the deletions were polled to their end"
    assert set(world.routes()) == {"node-2____102442024", "other"}


async def test_the_route_table_is_created_when_missing(
    make_provider: Any, world: AzureWorld
) -> None:
    world.create_vm("node-1", private_ip="10.0.0.4")
    provider = await make_provider()
    routes = provider.routes()
    assert await routes.list_routes("c1") == []
    await routes.create_route("c1", "", Route(target_node="node-1", destination_cidr="10.9.0.0/24"))
    assert set(world.routes()) == {"node-1____1090024"}


async def test_a_node_without_a_vm_or_an_address_of_the_family_is_an_error(
    make_provider: Any, world: AzureWorld
) -> None:
    world.create_vm("node-1", private_ip="10.0.0.4")
    world.create_route_table()
    routes = (await make_provider()).routes()
    with pytest.raises(errors.InstanceNotFoundError):
        await routes.create_route(
            "c1", "", Route(target_node="gone", destination_cidr="10.9.0.0/24")
        )
    with pytest.raises(errors.CloudProviderError, match="no internal IPv6 address"):
        await routes.create_route(
            "c1", "", Route(target_node="node-1", destination_cidr="fd00::/64")
        )
    assert world.routes() == {}


async def test_no_route_table_name_no_routes(make_provider: Any) -> None:
    assert (await make_provider(routeTableName="")).routes() is None


async def test_fake_arm_refuses_a_stale_etag(arm: FakeArm, world: AzureWorld) -> None:
    table = world.create_route_table()
    etag = arm.get_resource(table)["etag"]
    headers = {"Authorization": f"Bearer {arm.token}"}
    url = f"{arm.url.rstrip('/')}{table}?api-version=2024-05-01"
    body = {"location": "eastus", "properties": {}}
    async with aiohttp.ClientSession(headers=headers) as session:
        stale = {"If-Match": 'W/"stale"'}
        async with session.put(url, json=body, headers=stale, ssl=False) as response:
            assert response.status == 412
            assert (await response.json())["error"]["code"] == "PreconditionFailed"
        async with session.put(url, json=body, headers={"If-Match": etag}, ssl=False) as response:
            assert response.status == 200
            assert (await response.json())["etag"] != etag
