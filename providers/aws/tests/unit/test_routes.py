"""Routes against moto's EC2: the cluster's route table, one route per pod CIDR to the Node's
instance with source/destination check off, idempotent create and delete, blackholes reported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ccm_aws.routes import routes_from_table
from ccm_aws.testing import Ec2Console

from ccm.cloudprovider import Route
from ccm.errors import CloudProviderError

MakeProvider = Callable[..., Awaitable[Any]]
CLUSTER = "kubernetes"


def _pairs(routes: Any) -> set[tuple[str, str]]:
    return {(r.target_node, r.destination_cidr) for r in routes}


async def test_routes_round_trip_in_the_clusters_route_table(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    table = console.create_route_table(network["vpc"], cluster_id)
    console.create_route_table(network["vpc"], "another-cluster")
    subnet = next(iter(network["subnets"].values()))
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    name = instance["PrivateDnsName"]
    routes = (await make_provider()).routes()
    assert await routes.list_routes(CLUSTER) == []
    for cidr in ("10.250.1.0/24", "10.250.1.0/24", "fd00:10:250:1::/64"):
        await routes.create_route(CLUSTER, "uid", Route(target_node=name, destination_cidr=cidr))
    listed = await routes.list_routes(CLUSTER)
    assert _pairs(listed) == {(name, "10.250.1.0/24"), (name, "fd00:10:250:1::/64")}
    assert {r.name for r in listed} == {
        f"{CLUSTER}-10.250.1.0/24",
        f"{CLUSTER}-fd00:10:250:1::/64",
    }
    assert len(console.routes(table)) == 2
    attribute = console.ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="sourceDestCheck"
    )
    assert attribute["SourceDestCheck"]["Value"] is False
    for route in listed:
        await routes.delete_route(CLUSTER, route)
        await routes.delete_route(CLUSTER, route)
    assert await routes.list_routes(CLUSTER) == []
    assert console.routes(table) == []


async def test_route_table_id_from_the_config_wins_and_nodes_keep_their_names(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    chosen = console.create_route_table(network["vpc"])
    console.create_route_table(network["vpc"], cluster_id)
    subnet = next(iter(network["subnets"].values()))
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    routes = (await make_provider(RouteTableID=chosen)).routes()
    node_name = instance["InstanceId"]  # a Node named by its instance ID
    await routes.create_route(
        CLUSTER, "uid", Route(target_node=node_name, destination_cidr="10.250.7.0/24")
    )
    assert [r["DestinationCidrBlock"] for r in console.routes(chosen)] == ["10.250.7.0/24"]
    assert _pairs(await routes.list_routes(CLUSTER)) == {(node_name, "10.250.7.0/24")}


async def test_no_or_several_cluster_route_tables_is_an_error(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    routes = (await make_provider()).routes()
    with pytest.raises(CloudProviderError, match="unable to find route table"):
        await routes.list_routes(CLUSTER)
    console.create_route_table(network["vpc"], cluster_id)
    console.create_route_table(network["vpc"], cluster_id)
    with pytest.raises(CloudProviderError, match="multiple matching AWS route tables"):
        await routes.list_routes(CLUSTER)


def test_blackholed_routes_are_reported_and_foreign_routes_skipped() -> None:
    table = {
        "Routes": [
            {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
            {"DestinationCidrBlock": "10.250.1.0/24", "InstanceId": "i-1", "State": "active"},
            {"DestinationCidrBlock": "10.250.2.0/24", "InstanceId": "i-2", "State": "blackhole"},
            {"DestinationCidrBlock": "10.250.3.0/24", "InstanceId": "i-3", "State": "active"},
            {"DestinationIpv6CidrBlock": "fd00::/64", "InstanceId": "i-4", "State": "active"},
        ]
    }
    instances = {"i-1": {"PrivateDnsName": "ip-10-0-0-1.ec2.internal"}, "i-4": {}}
    routes = routes_from_table("c", table, instances, {"i-4": "node-4"})
    assert routes == [
        Route(
            name="c-10.250.1.0/24",
            target_node="ip-10-0-0-1.ec2.internal",
            destination_cidr="10.250.1.0/24",
        ),
        Route(name="c-10.250.2.0/24", destination_cidr="10.250.2.0/24", blackhole=True),
        Route(name="c-fd00::/64", target_node="node-4", destination_cidr="fd00::/64"),
    ]
