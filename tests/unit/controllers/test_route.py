"""The route controller over the in-memory apiserver, a real Node informer and the fake cloud.

Upstream cases of controllers/route/route_controller_test.go (TestIsResponsibleForRoute,
TestReconcile, TestUpdateNetworkingCondition and the Calico scenario) are ported as pytest.param
ids; ccm-specific behaviour (bounded calls, malformed pod CIDRs, the fixed-rate loop) has its own
tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ccm import metrics, wellknown
from ccm.cloudprovider import NodeAddress, Route
from ccm.controllers import route as route_controller
from ccm.errors import CloudProviderError
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCall, FakeCloud
from tests.unit.recorder import Recorder

CLUSTER = "my-k8s"
V4 = ipaddress.ip_network("10.120.0.0/16")
V6 = ipaddress.ip_network("ace:cab:deca::/8", strict=False)
NUA = wellknown.CONDITION_NETWORK_UNAVAILABLE


@dataclass
class Env:
    client: FakeKubeClient
    cloud: FakeCloud
    informer: kinformer.Informer
    recorder: Recorder

    def controller(self, *cidrs: Any, **kwargs: Any) -> route_controller.RouteController:
        routes = self.cloud.routes()
        assert routes is not None
        return route_controller.RouteController(
            client=self.client,
            nodes=self.informer,
            routes=routes,
            recorder=self.recorder,
            cluster_name=CLUSTER,
            cluster_cidrs=cidrs or (V4,),
            **kwargs,
        )

    def node(self, name: str) -> dict[str, Any]:
        obj = self.client.get_object(kclient.NODES, name)
        assert obj is not None
        return obj

    def condition(self, name: str) -> tuple[str, str, str] | None:
        for c in self.node(name).get("status", {}).get("conditions") or ():
            if c["type"] == NUA:
                return (c["status"], c["reason"], c["message"])
        return None

    async def put(self, *nodes: dict[str, Any]) -> None:
        for node in nodes:
            self.client.put_object(kclient.NODES, node)
        await self.settle()

    async def settle(self) -> None:
        """Wait until the informer has seen every stored Node version."""
        for _ in range(500):
            stored = {
                n["metadata"]["name"]: n["metadata"]["resourceVersion"]
                for n in self.client.list_objects(kclient.NODES)
            }
            cached = {
                n["metadata"]["name"]: n["metadata"]["resourceVersion"]
                for n in self.informer.list()
            }
            if stored == cached:
                return
            await asyncio.sleep(0.001)
        raise AssertionError("informer did not catch up")

    def add_routes(self, *routes: Route) -> None:
        for r in routes:
            self.cloud.add_route(CLUSTER, r)

    def routes(self) -> list[Route]:
        return list(self.cloud.route_table.get(CLUSTER, {}).values())


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    client = FakeKubeClient()
    cloud = FakeCloud()
    informer = kinformer.Informer(client, kclient.NODES)
    task = asyncio.create_task(informer.run(), name="test/informer")
    await informer.wait_for_sync(timeout=5)
    try:
        yield Env(client, cloud, informer, Recorder())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()


def make_node(
    name: str,
    uid: str,
    cidrs: list[str] | None,
    internal_ip: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cidrs:
        spec = {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)}
    status: dict[str, Any] = {}
    if internal_ip:
        status["addresses"] = [{"type": "InternalIP", "address": internal_ip}]
    if conditions:
        status["conditions"] = conditions
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": uid},
        "spec": spec,
        "status": status,
    }


def ip(a: str) -> tuple[NodeAddress, ...]:
    return (NodeAddress(type="InternalIP", address=a),)


def r(
    name: str,
    node: str,
    cidr: str,
    addr: str | None = None,
    *,
    ena: bool = False,
    blackhole: bool = False,
) -> Route:
    return Route(
        name=f"{CLUSTER}-{name}",
        target_node=node,
        destination_cidr=cidr,
        target_node_addresses=ip(addr) if addr else (),
        enable_node_addresses=ena,
        blackhole=blackhole,
    )


# The upstream fixtures of TestReconcile.
NODE1 = make_node("node-1", "01", ["10.120.0.0/24"], "10.0.1.1")
NODE2 = make_node("node-2", "02", ["10.120.1.0/24"], "10.0.2.1")
NODE_NO_CIDR = make_node("node-2", "02", None, "10.0.5.1")
NODE3 = make_node("node-3", "03", ["10.120.0.0/24", "a00:100::/24"], "10.0.3.1")
NODE4 = make_node("node-4", "04", ["10.120.1.0/24", "a00:200::/24"], "10.0.4.1")
NODE_DUP = make_node("node-4", "04", ["10.120.1.0/24", "10.120.1.0/24"], "10.0.4.1")


def expected(node: str, cidr: str, addr: str) -> tuple[str, str, frozenset[NodeAddress]]:
    return (node, cidr, frozenset(ip(addr)))


def as_set(routes: list[Route]) -> set[tuple[str, str, frozenset[NodeAddress]]]:
    return {(x.target_node, x.destination_cidr, frozenset(x.target_node_addresses)) for x in routes}


DUAL_EXPECTED = [
    expected("node-3", "10.120.0.0/24", "10.0.3.1"),
    expected("node-4", "10.120.1.0/24", "10.0.4.1"),
    expected("node-3", "a00:100::/24", "10.0.3.1"),
    expected("node-4", "a00:200::/24", "10.0.4.1"),
]
SINGLE_EXPECTED = [
    expected("node-1", "10.120.0.0/24", "10.0.1.1"),
    expected("node-2", "10.120.1.0/24", "10.0.2.1"),
]
DUAL_ALL = [
    r("01", "node-3", "10.120.0.0/24", "10.0.3.1"),
    r("02", "node-4", "10.120.1.0/24", "10.0.4.1"),
    r("03", "node-3", "a00:100::/24", "10.0.3.1"),
    r("04", "node-4", "a00:200::/24", "10.0.4.1"),
]


@pytest.mark.parametrize(
    ("cluster_cidr", "route_cidr", "responsible"),
    [
        # Routes that belong to this cluster
        pytest.param("10.244.0.0/16", "10.244.0.0/24", True, id="10.244.0.0/16 has 10.244.0.0/24"),
        pytest.param("10.244.0.0/16", "10.244.10.0/24", True, id="10.244.0.0/16 has .10.0/24"),
        pytest.param("10.244.0.0/16", "10.244.255.0/24", True, id="10.244.0.0/16 has .255.0/24"),
        pytest.param("10.244.0.0/14", "10.244.0.0/24", True, id="10.244.0.0/14 has 10.244.0.0/24"),
        pytest.param("10.244.0.0/14", "10.247.255.0/24", True, id="10.244.0.0/14 has .247.255"),
        pytest.param("a00:100::/10", "a00:100::/24", True, id="a00:100::/10 has a00:100::/24"),
        # Routes that match our naming/tagging scheme, but are outside our cidr
        pytest.param("10.244.0.0/16", "10.224.0.0/24", False, id="10.244.0.0/16 not 10.224.0.0"),
        pytest.param("10.244.0.0/16", "10.0.10.0/24", False, id="10.244.0.0/16 not 10.0.10.0"),
        pytest.param("10.244.0.0/16", "10.255.255.0/24", False, id="10.244.0.0/16 not .255.255"),
        pytest.param("10.244.0.0/14", "10.248.0.0/24", False, id="10.244.0.0/14 not 10.248.0.0"),
        pytest.param("10.244.0.0/14", "10.243.255.0/24", False, id="10.244.0.0/14 not .243.255"),
        pytest.param("a00:100::/10", "b00:100::/24", False, id="a00:100::/10 not b00:100::/24"),
        # ccm additions: an unparsable route CIDR is ignored; a bigger route overlapping the end
        pytest.param("10.244.0.0/16", "not-a-cidr", False, id="unparsable route CIDR is ignored"),
        pytest.param("10.244.0.0/16", "10.0.0.0/8", False, id="route containing the cluster"),
        pytest.param("10.244.0.0/16", "10.244.0.5/24", True, id="sloppy route CIDR in range"),
    ],
)
async def test_is_responsible_for_route(
    env: Env, cluster_cidr: str, route_cidr: str, responsible: bool
) -> None:
    rc = env.controller(ipaddress.ip_network(cluster_cidr, strict=False))
    route = Route(
        name="my-awesome-cluster-12345678-90ab-cdef-1234-567890abcdef",
        target_node="doesnt-matter-for-this-test",
        destination_cidr=route_cidr,
    )
    assert rc.is_responsible_for_route(route) is responsible


@pytest.mark.parametrize(
    ("dual", "nodes", "initial", "want", "network_available"),
    [
        pytest.param(
            True,
            [NODE3, NODE4],
            [
                r("01", "node-3", "10.120.0.0/24", ena=True),
                r("02", "node-4", "10.120.1.0/24", ena=True),
                r("03", "node-3", "a00:100::/24", ena=True),
                r("04", "node-4", "a00:200::/24", ena=True),
            ],
            DUAL_EXPECTED,
            [True, True],
            id="routes have no TargetNodeAddresses at the beginning",
        ),
        pytest.param(
            True,
            [NODE3, NODE4],
            [
                r("01", "node-3", "10.120.0.0/24", "10.0.13.1", ena=True),
                r("02", "node-4", "10.120.1.0/24", "10.0.14.1", ena=True),
                r("03", "node-3", "a00:100::/24", "10.0.13.1", ena=True),
                r("04", "node-4", "a00:200::/24", "10.0.14.1", ena=True),
            ],
            DUAL_EXPECTED,
            [True, True],
            id="routes' TargetNodeAddresses changed",
        ),
        pytest.param(
            True,
            [NODE3, NODE4],
            [],
            DUAL_EXPECTED,
            [True, True],
            id="multicidr 2 nodes and no routes",
        ),
        pytest.param(
            True,
            [NODE3, NODE4],
            DUAL_ALL,
            DUAL_EXPECTED,
            [True, True],
            id="multicidr 2 nodes and all routes created",
        ),
        pytest.param(
            True,
            [NODE3, NODE4],
            [
                r("01", "node-3", "10.120.1.0/24", "10.0.3.1"),
                r("02", "node-4", "10.120.0.0/24", "10.0.4.1"),
                r("03", "node-3", "a00:200::/24", "10.0.3.1"),
                r("04", "node-4", "a00:100::/24", "10.0.4.1"),
            ],
            DUAL_EXPECTED,
            [True, True],
            id="multicidr 2 nodes and few wrong routes",
        ),
        pytest.param(
            True,
            [NODE3, NODE4],
            [
                r("01", "node-3", "10.120.0.0/24", "10.0.3.1"),
                r("04", "node-4", "a00:200::/24", "10.0.4.1"),
            ],
            DUAL_EXPECTED,
            [True, True],
            id="multicidr 2 nodes and some routes created",
        ),
        pytest.param(
            True,
            [NODE3, NODE4],
            [
                *DUAL_ALL,
                r("001", "node-x", "10.120.2.0/24", "10.0.5.1"),
                r("0002", "node-y", "a00:300::/24", "10.0.6.1"),
            ],
            DUAL_EXPECTED,
            [True, True],
            id="multicidr 2 nodes and too many routes",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [
                r("01", "node-1", "10.120.0.0/24", "10.0.1.1"),
                r("02", "node-2", "10.120.1.0/24", "10.0.2.1"),
            ],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr 2 nodes and routes created",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [
                r("01", "node-1", "10.120.0.0/24", "10.0.1.2", ena=True),
                r("02", "node-2", "10.120.1.0/24", "10.0.2.2", ena=True),
            ],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr node ips changed so routes should be updated",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [r("01", "node-1", "10.120.0.0/24", "10.0.1.1")],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr 2 nodes and one route created",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr 2 nodes and no routes",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [
                r("01", "node-1", "10.120.0.0/24", "10.0.1.1"),
                r("02", "node-2", "10.120.1.0/24", "10.0.2.1"),
                r("03", "node-3", "10.120.2.0/24", "10.0.3.1"),
                r("04", "node-4", "10.120.3.0/24", "10.0.4.1"),
            ],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr 2 nodes and too many routes",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [
                r("01", "node-1", "10.120.0.0/24", "10.0.1.1"),
                r("03", "node-3", "10.120.2.0/24", "10.0.2.1"),
            ],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr 2 nodes and 2 routes with 1 incorrect",
        ),
        pytest.param(
            False,
            [NODE1, NODE_NO_CIDR],
            [],
            [expected("node-1", "10.120.0.0/24", "10.0.1.1")],
            [True, None],
            id="single cidr 2 nodes and one node without cidr assigned",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [
                r("01", "node-1", "10.120.0.0/24", "10.0.1.1"),
                r("02", "node-2", "10.120.1.0/24", "10.0.2.1"),
                r("03", "", "10.120.2.0/24", "10.0.100.1", blackhole=True),
            ],
            SINGLE_EXPECTED,
            [True, True],
            id="single cidr 2 nodes and an extra blackhole route in our range",
        ),
        pytest.param(
            False,
            [NODE1, NODE2],
            [
                r("01", "node-1", "10.120.0.0/24", "10.0.1.1"),
                r("02", "node-2", "10.120.1.0/24", "10.0.2.1"),
                r("03", "", "10.1.2.0/24", "10.0.100.1", blackhole=True),
            ],
            [*SINGLE_EXPECTED, ("", "10.1.2.0/24", frozenset(ip("10.0.100.1")))],
            [True, True],
            id="single cidr 2 nodes and an extra blackhole route not in our range",
        ),
        pytest.param(
            False,
            [NODE_DUP],
            [],
            # Upstream races two creates of the same CIDR; ccm creates it once.
            [expected("node-4", "10.120.1.0/24", "10.0.4.1")],
            [True],
            id="duplicate pod cidr",
        ),
    ],
)
async def test_reconcile(
    env: Env,
    dual: bool,
    nodes: list[dict[str, Any]],
    initial: list[Route],
    want: list[tuple[str, str, frozenset[NodeAddress]]],
    network_available: list[bool | None],
) -> None:
    """``network_available[i]``: True → NetworkUnavailable=False/RouteCreated, None → untouched."""
    await env.put(*nodes)
    env.add_routes(*initial)
    rc = env.controller(V4, V6) if dual else env.controller(V4)

    await rc.reconcile_node_routes()

    assert as_set(env.routes()) == set(want)
    for node, available in zip(nodes, network_available, strict=True):
        name = node["metadata"]["name"]
        if available is None:
            assert env.condition(name) is None
        else:
            assert env.condition(name) == (
                "False",
                wellknown.ROUTE_CONDITION_REASON_CREATED,
                wellknown.ROUTE_CONDITION_MESSAGE_CREATED,
            )
    assert env.recorder.events == []
    # A second pass finds everything in place: no cloud writes, no Node writes.
    env.cloud.clear_calls()
    env.client.clear_actions()
    await env.settle()
    await rc.reconcile_node_routes()
    assert env.cloud.call_count("create-route") == 0
    assert env.cloud.call_count("delete-route") == 0
    assert env.client.writes() == []


def test_route_operations_are_bounded_like_upstream() -> None:
    assert route_controller.MAX_CONCURRENT_ROUTE_OPERATIONS == 200


async def test_creates_carry_the_node_uid_as_name_hint_and_the_node_addresses(env: Env) -> None:
    await env.put(NODE1)
    await env.controller().reconcile_node_routes()
    (route,) = env.routes()
    uid = env.node("node-1")["metadata"]["uid"]
    assert route.name == f"{CLUSTER}-{uid}-10.120.0.0-24"  # the fake names routes after the hint
    assert route.target_node_addresses == ip("10.0.1.1")


async def test_deletes_finish_before_creates_when_the_provider_tracks_addresses(env: Env) -> None:
    await env.put(NODE1, NODE2)
    env.add_routes(
        r("01", "node-1", "10.120.0.0/24", "10.0.9.1", ena=True),
        r("02", "node-2", "10.120.1.0/24", "10.0.9.2", ena=True),
    )
    env.cloud.set_latency("delete-route", 0.05)
    env.cloud.clear_calls()
    await env.controller().reconcile_node_routes()
    methods = [c.method for c in env.cloud.calls if c.method != "list-routes"]
    assert methods == ["delete-route", "delete-route", "create-route", "create-route"]
    assert as_set(env.routes()) == set(SINGLE_EXPECTED)


async def test_route_without_target_node_inside_the_cluster_cidr_is_deleted(env: Env) -> None:
    await env.put(NODE1)
    env.add_routes(
        r("01", "node-1", "10.120.0.0/24", "10.0.1.1"),
        r("x", "", "10.120.7.0/24"),
        r("y", "", "192.168.0.0/24"),
    )
    await env.controller().reconcile_node_routes()
    assert {x.destination_cidr for x in env.routes()} == {"10.120.0.0/24", "192.168.0.0/24"}


async def test_blackhole_route_of_a_live_node_is_replaced(env: Env) -> None:
    await env.put(NODE1)
    env.add_routes(r("01", "node-1", "10.120.0.0/24", "10.0.1.1", blackhole=True))
    await env.controller().reconcile_node_routes()
    # deleted this pass (blackhole), re-created by the next one (the action was "keep")
    assert env.routes() == []
    await env.settle()
    await env.controller().reconcile_node_routes()
    assert as_set(env.routes()) == {expected("node-1", "10.120.0.0/24", "10.0.1.1")}


async def test_routes_outside_every_cluster_cidr_are_never_touched(env: Env) -> None:
    await env.put(NODE1)
    foreign = [
        r("f1", "node-1", "172.16.0.0/24"),
        r("f2", "gone", "172.16.1.0/24", blackhole=True),
        r("f3", "gone", "fd00::/64"),
    ]
    env.add_routes(*foreign)
    await env.controller().reconcile_node_routes()
    assert env.cloud.call_count("delete-route") == 0
    assert {x.destination_cidr for x in env.routes()} >= {f.destination_cidr for f in foreign}


async def test_node_with_routes_but_no_pod_cidr_gets_network_unavailable(env: Env) -> None:
    await env.put(make_node("node-1", "01", None, "10.0.1.1"))
    env.add_routes(r("01", "node-1", "10.120.0.0/24", "10.0.1.1"))
    await env.controller().reconcile_node_routes()
    assert env.routes() == []
    assert env.condition("node-1") == (
        "True",
        wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
        wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
    )


async def test_failed_create_records_event_and_no_route_created_then_recovers(
    env: Env,
) -> None:
    await env.put(NODE1, NODE2)
    env.cloud.inject_error("create-route", CloudProviderError("quota exceeded"), key="node-1")
    rc = env.controller()
    await rc.reconcile_node_routes()

    assert as_set(env.routes()) == {expected("node-2", "10.120.1.0/24", "10.0.2.1")}
    assert env.condition("node-1") == (
        "True",
        wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
        wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
    )
    assert env.condition("node-2") == (
        "False",
        wellknown.ROUTE_CONDITION_REASON_CREATED,
        wellknown.ROUTE_CONDITION_MESSAGE_CREATED,
    )
    ((name, etype, reason, message),) = env.recorder.events
    assert (name, etype, reason) == ("node-1", "Warning", "FailedToCreateRoute")
    uid = env.node("node-1")["metadata"]["uid"]
    assert message.startswith(f"Could not create route {uid} 10.120.0.0/24 for node node-1 after ")
    assert message.endswith(": quota exceeded")

    env.cloud.clear_errors()
    await env.settle()
    await rc.reconcile_node_routes()
    assert as_set(env.routes()) == set(SINGLE_EXPECTED)
    assert env.condition("node-1") == (
        "False",
        wellknown.ROUTE_CONDITION_REASON_CREATED,
        wellknown.ROUTE_CONDITION_MESSAGE_CREATED,
    )


@pytest.mark.looptime
async def test_a_hung_cloud_call_is_bounded_by_the_cloud_timeout(env: Env) -> None:
    await env.put(NODE1)
    env.cloud.set_latency("create-route", 3600)
    started = asyncio.get_running_loop().time()
    await env.controller(cloud_timeout=5).reconcile_node_routes()
    assert asyncio.get_running_loop().time() - started == pytest.approx(5, abs=0.5)
    assert [e[2] for e in env.recorder.events] == ["FailedToCreateRoute"]
    assert env.condition("node-1") is not None
    assert env.condition("node-1")[1] == wellknown.ROUTE_CONDITION_REASON_NOT_CREATED  # type: ignore[index]


async def test_create_and_delete_calls_share_one_bound(env: Env) -> None:
    nodes = [make_node(f"n{i}", f"u{i}", [f"10.120.{i}.0/24"], f"10.0.0.{i}") for i in range(10)]
    await env.put(*nodes)
    env.add_routes(*[r(f"s{i}", f"gone-{i}", f"10.120.{100 + i}.0/24") for i in range(10)])
    in_flight = 0
    peak = 0

    async def hook(call: FakeCall) -> None:
        nonlocal in_flight, peak
        if call.method not in ("create-route", "delete-route"):
            return
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    env.cloud.call_hook = hook
    await env.controller(max_concurrent_operations=3).reconcile_node_routes()
    assert peak == 3
    assert env.cloud.call_count("create-route") == 10
    assert env.cloud.call_count("delete-route") == 10


@pytest.mark.looptime
async def test_a_pass_runs_as_many_tasks_as_the_bound_not_one_per_route(env: Env) -> None:
    nodes = [make_node(f"n{i}", f"u{i}", [f"10.120.{i}.0/24"], f"10.0.0.{i}") for i in range(60)]
    await env.put(*nodes)
    env.add_routes(*[r(f"s{i}", f"gone-{i}", f"10.120.{100 + i}.0/24") for i in range(60)])
    baseline = len(asyncio.all_tasks())
    peak_tasks = 0
    order: list[str] = []

    async def hook(call: FakeCall) -> None:
        nonlocal peak_tasks
        if call.method in ("create-route", "delete-route"):
            order.append(call.method)
            peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(1)

    env.cloud.call_hook = hook
    loop = asyncio.get_running_loop()
    start = loop.time()
    await env.controller(max_concurrent_operations=4).reconcile_node_routes()
    assert peak_tasks - baseline == 4  # the workers of the bound, nothing per route
    assert loop.time() - start == pytest.approx(120 / 4, abs=0.5)
    assert order == ["delete-route"] * 60 + ["create-route"] * 60  # deletes are queued first
    assert len(env.routes()) == 60


@pytest.mark.looptime
async def test_network_condition_writes_share_the_bound(env: Env) -> None:
    nodes = [make_node(f"n{i}", f"u{i}", [f"10.120.{i}.0/24"], f"10.0.0.{i}") for i in range(20)]
    await env.put(*nodes)
    real_patch = env.client.patch
    in_flight = 0
    peak = 0

    async def slow_patch(*args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(1)
            return await real_patch(*args, **kwargs)
        finally:
            in_flight -= 1

    env.client.patch = slow_patch  # type: ignore[method-assign]
    await env.controller(max_concurrent_operations=3).reconcile_node_routes()
    assert peak == 3
    assert all(env.condition(f"n{i}") == CREATED for i in range(20))


async def test_malformed_pod_cidr_is_reported_and_other_nodes_are_reconciled(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    bad = make_node("node-bad", "0b", ["10.120.9.5/24"], "10.0.9.1")
    garbage = make_node("node-garbage", "0c", ["not-a-cidr"], "10.0.9.2")
    await env.put(NODE1, bad, garbage)
    with caplog.at_level(logging.WARNING, logger="ccm.controllers.route"):
        await env.controller().reconcile_node_routes()

    assert as_set(env.routes()) == {expected("node-1", "10.120.0.0/24", "10.0.1.1")}
    assert env.cloud.call_count("create-route") == 1  # the malformed CIDRs never reach the cloud
    for name, cidr in [("node-bad", "10.120.9.5/24"), ("node-garbage", "not-a-cidr")]:
        assert env.condition(name) == (
            "True",
            wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
            wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
        )
        assert any(name in m and cidr in m and "invalid pod CIDR" in m for m in caplog.messages)
    reasons = {(e[0], e[2]) for e in env.recorder.events}
    assert reasons == {("node-bad", "FailedToCreateRoute"), ("node-garbage", "FailedToCreateRoute")}
    assert all("invalid pod CIDR" in e[3] for e in env.recorder.events)
    assert env.condition("node-1") is not None
    assert env.condition("node-1")[0] == "False"  # type: ignore[index]


@pytest.mark.parametrize(
    ("cidrs", "outside"),
    [
        pytest.param(["10.99.0.0/24"], "10.99.0.0/24", id="ipv4 outside the cluster cidr"),
        pytest.param(
            ["10.120.7.0/24", "fd00:1::/64"], "fd00:1::/64", id="ipv6 in an ipv4-only cluster"
        ),
    ],
)
async def test_pod_cidr_outside_the_cluster_cidrs_gets_no_route_and_others_converge(
    env: Env, caplog: pytest.LogCaptureFixture, cidrs: list[str], outside: str
) -> None:
    stray = make_node("node-stray", "0d", cidrs, "10.0.9.3")
    await env.put(NODE1, stray)
    rc = env.controller()
    with caplog.at_level(logging.WARNING, logger="ccm.controllers.route"):
        await rc.reconcile_node_routes()
        await env.settle()
        await rc.reconcile_node_routes()  # the next pass: still never created, never leaked

    inside = [c for c in cidrs if c != outside]
    assert as_set(env.routes()) == {
        expected("node-1", "10.120.0.0/24", "10.0.1.1"),
        *(expected("node-stray", c, "10.0.9.3") for c in inside),
    }
    assert env.cloud.call_count("create-route") == 1 + len(inside)
    assert env.condition("node-stray") == (
        "True",
        wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
        wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
    )
    assert env.condition("node-1")[0] == "False"  # type: ignore[index]
    stray_events = [e for e in env.recorder.events if e[0] == "node-stray"]
    assert stray_events
    assert {(e[1], e[2]) for e in stray_events} == {("Warning", "FailedToCreateRoute")}
    assert all(
        outside in e[3] and "outside the cluster CIDRs 10.120.0.0/16" in e[3] for e in stray_events
    )
    assert not [e for e in env.recorder.events if e[0] == "node-1"]
    assert any("node-stray" in m and outside in m for m in caplog.messages)


async def test_listing_routes_fails_the_pass_without_writes(env: Env) -> None:
    await env.put(NODE1)
    env.cloud.inject_error("list-routes", CloudProviderError("api down"))
    with pytest.raises(RuntimeError, match="error listing routes: api down"):
        await env.controller().reconcile_node_routes()
    assert env.client.writes() == []
    assert env.cloud.call_count("create-route") == 0


async def test_each_pass_counts_in_route_sync_total(env: Env) -> None:
    before = metrics.REGISTRY.get_sample_value("route_controller_route_sync_total") or 0.0
    rc = env.controller()
    await rc.reconcile_node_routes()
    await rc.reconcile_node_routes()
    assert metrics.REGISTRY.get_sample_value("route_controller_route_sync_total") == before + 2


@pytest.mark.looptime
async def test_run_reconciles_at_a_fixed_rate(env: Env) -> None:
    await env.put(NODE1)
    env.cloud.set_latency("list-routes", 4)  # a slow pass must not stretch the period
    env.cloud.clear_calls()
    task = asyncio.create_task(env.controller(period=10).run(), name="test/route")
    await asyncio.sleep(35)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.cloud.call_count("list-routes") == 4  # t = 0, 10, 20, 30
    assert as_set(env.routes()) == {expected("node-1", "10.120.0.0/24", "10.0.1.1")}


@pytest.mark.looptime
async def test_condition_patch_is_retried_on_conflict(env: Env) -> None:
    await env.put(NODE1)
    env.client.inject_error("patch", "nodes", 409, subresource="status", times=2)
    await env.controller().reconcile_node_routes()
    assert env.condition("node-1") == (
        "False",
        wellknown.ROUTE_CONDITION_REASON_CREATED,
        wellknown.ROUTE_CONDITION_MESSAGE_CREATED,
    )


def _cond(status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": NUA, "status": status, "reason": reason, "message": message}


CREATED = ("False", "RouteCreated", "RouteController created a route")
NOT_CREATED = ("True", "NoRouteCreated", "RouteController failed to create a route")


@pytest.mark.parametrize(
    ("existing", "routes_created", "want"),
    [
        pytest.param(
            None,
            True,
            CREATED,
            id="No existing condition, routes created - should update",
        ),
        pytest.param(
            None,
            False,
            NOT_CREATED,
            id="No existing condition, routes not created - should update",
        ),
        pytest.param(
            _cond(*CREATED),
            True,
            None,
            id="Existing condition with same status and reason (RouteCreated) - should not update",
        ),
        pytest.param(
            _cond("False", "CalicoIsUp", "Calico is running on this node"),
            True,
            CREATED,
            id="Existing condition with same status but different reason (CalicoIsUp) - "
            "should update",
        ),
        pytest.param(
            _cond("False", "ExternalCNI", "External CNI configured"),
            True,
            CREATED,
            id="Existing condition with Status=False but different reason - should update when "
            "routes created",
        ),
        pytest.param(
            _cond("True", "SomeOtherReason", "Some other message"),
            False,
            NOT_CREATED,
            id="Existing condition with Status=True and different reason - should update when "
            "routes not created",
        ),
        pytest.param(
            _cond(*CREATED),
            False,
            NOT_CREATED,
            id="Existing condition with Status=False, transitioning to routes not created - "
            "should update",
        ),
        pytest.param(
            _cond(*NOT_CREATED),
            False,
            None,
            id="Existing condition with Status=True and NoRouteCreated reason - should not update",
        ),
    ],
)
async def test_update_networking_condition(
    env: Env,
    existing: dict[str, Any] | None,
    routes_created: bool,
    want: tuple[str, str, str] | None,
) -> None:
    node = make_node(
        "test-node", "test-uid", ["10.244.0.0/24"], conditions=[existing] if existing else None
    )
    await env.put(node)
    env.client.clear_actions()
    rc = env.controller(ipaddress.ip_network("10.244.0.0/16"))
    await rc.update_networking_condition(env.node("test-node"), routes_created)
    patches = [a for a in env.client.actions if a.verb == "patch"]
    if want is None:
        assert patches == []
        assert existing is not None
        assert env.condition("test-node") == (
            existing["status"],
            existing["reason"],
            existing["message"],
        )
    else:
        assert len(patches) == 1
        assert patches[0].subresource == "status"
        assert env.condition("test-node") == want
        cond = next(c for c in env.node("test-node")["status"]["conditions"] if c["type"] == NUA)
        assert cond["lastTransitionTime"]
        assert cond["lastHeartbeatTime"]


async def test_update_networking_condition_with_calico_scenario(env: Env) -> None:
    """Upstream TestUpdateNetworkingConditionWithCalicoScenario: a CNI's False condition gets the
    route controller's own reason."""
    node = make_node(
        "test-node",
        "test-uid",
        ["10.244.0.0/24"],
        conditions=[_cond("False", "CalicoIsUp", "Calico is running on this node")],
    )
    await env.put(node)
    rc = env.controller(ipaddress.ip_network("10.244.0.0/16"))
    await rc.update_networking_condition(env.node("test-node"), True)
    assert env.condition("test-node") == CREATED


async def test_condition_update_for_a_deleted_node_is_quiet(env: Env) -> None:
    rc = env.controller()
    await rc.update_networking_condition(make_node("ghost", "g", ["10.120.0.0/24"]), True)
    assert env.client.get_object(kclient.NODES, "ghost") is None


# --- KEP-5237 watch-based mode -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gates", "enabled"),
    [
        pytest.param("", False, id="no gates"),
        pytest.param("CloudControllerManagerWatchBasedRoutesReconciliation=true", True, id="on"),
        pytest.param("A=true, CloudControllerManagerWatchBasedRoutesReconciliation=True", True),
        pytest.param("CloudControllerManagerWatchBasedRoutesReconciliation=false", False, id="off"),
        pytest.param("SomethingElse=true", False, id="other gate"),
    ],
)
def test_watch_based_feature_gate_parsing(gates: str, enabled: bool) -> None:
    assert route_controller.watch_based_enabled(gates) is enabled


def _updated(node: dict[str, Any], **changes: Any) -> dict[str, Any]:
    new = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {**node["metadata"], "resourceVersion": "2"},
        "spec": dict(node["spec"]),
        "status": dict(node["status"]),
    }
    for path, value in changes.items():
        section, key = path.split("__")
        new[section][key] = value
    return new


_BASE = {**NODE1, "metadata": {**NODE1["metadata"], "resourceVersion": "1"}}


@pytest.mark.parametrize(
    ("updated", "enqueued"),
    [
        pytest.param(
            _updated(_BASE, status__addresses=[{"type": "InternalIP", "address": "10.0.1.2"}]),
            True,
            id="internal IP updated",
        ),
        pytest.param(
            _updated(_BASE, spec__podCIDR="10.121.0.0/24", spec__podCIDRs=["10.121.0.0/24"]),
            True,
            id="pod CIDR updated",
        ),
        pytest.param(_BASE, True, id="node object not updated"),  # informer resync: same rv
        pytest.param(
            _updated(_BASE, status__images=[{"names": ["registry.k8s.io/pause:latest"]}]),
            False,
            id="unrelated node update",
        ),
    ],
)
@pytest.mark.looptime
async def test_handle_node_update(env: Env, updated: dict[str, Any], enqueued: bool) -> None:
    rc = env.controller(watch_based=True)
    assert rc.queue is not None
    rc.handle_node_update(_BASE, updated)
    if enqueued:
        assert await asyncio.wait_for(rc.queue.get(), 1) == route_controller.ROUTES_KEY
    else:
        assert len(rc.queue) == 0
        assert rc.queue.waiting == 0
    # Upstream notes the resync case separately: an unchanged object (same resourceVersion) is the
    # informer's periodic resync and triggers the regular clean-up pass.


@pytest.mark.looptime
async def test_watch_based_mode_reconciles_on_node_changes_at_most_every_10s(env: Env) -> None:
    rc = env.controller(watch_based=True, period=3600)
    task = asyncio.create_task(rc.run(), name="test/route")
    try:
        await asyncio.sleep(1)  # the start-up pass
        assert env.cloud.call_count("list-routes") == 1
        await env.put(NODE1)
        await asyncio.sleep(11)
        assert as_set(env.routes()) == {expected("node-1", "10.120.0.0/24", "10.0.1.1")}
        # A burst of Node events: passes stay 10 s apart, and the last event is not lost.
        env.cloud.clear_calls()
        for i in range(20):
            await env.put(make_node(f"burst-{i}", f"b{i}", [f"10.120.{10 + i}.0/24"], "10.0.9.9"))
            await asyncio.sleep(0.5)
        await asyncio.sleep(30)
        assert 1 <= env.cloud.call_count("list-routes") <= 3
        assert len(env.routes()) == 21
        # Nothing changes: no pass at all (the reconcile period is not used in this mode).
        env.cloud.clear_calls()
        await asyncio.sleep(120)
        assert env.cloud.call_count("list-routes") == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.looptime
async def test_watch_based_mode_requeues_a_failed_pass(env: Env) -> None:
    await env.put(NODE1)
    env.cloud.inject_error("list-routes", CloudProviderError("api down"), times=1)
    rc = env.controller(watch_based=True)
    task = asyncio.create_task(rc.run(), name="test/route")
    try:
        await asyncio.sleep(15)
        assert env.cloud.call_count("list-routes") == 2
        assert as_set(env.routes()) == {expected("node-1", "10.120.0.0/24", "10.0.1.1")}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.looptime
async def test_a_hung_create_is_named_in_the_event_and_retried_next_pass(env: Env) -> None:
    await env.put(NODE1)
    env.cloud.set_latency("create-route", 3600)
    controller = env.controller(cloud_timeout=5)
    await controller.reconcile_node_routes()
    [event] = env.recorder.events
    assert event[2] == wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE
    assert event[3].endswith("cloud provider call create_route did not return within 5s")
    assert env.routes() == []
    env.cloud.set_latency("create-route", 0)
    await controller.reconcile_node_routes()
    assert len(env.routes()) == 1


@pytest.mark.looptime
async def test_a_hung_list_routes_fails_the_pass_with_the_call_named(env: Env) -> None:
    await env.put(NODE1)
    env.cloud.set_latency("list-routes", 3600)
    controller = env.controller(cloud_timeout=5)
    with pytest.raises(RuntimeError, match="list_routes did not return within 5s"):
        await controller.reconcile_node_routes()
    assert env.routes() == []
    env.cloud.set_latency("list-routes", 0)
    await controller.reconcile_node_routes()
    assert len(env.routes()) == 1
