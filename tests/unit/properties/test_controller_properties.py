"""Bad input, generated, through the controllers' reconcile functions on the in-memory apiserver
and the fake cloud: providerIDs, the provided-node-ip annotation, Node addresses, pod CIDRs,
Service specs and annotations.

Each property puts a generated (often bad) object next to a well-formed one and checks: no
exception escapes a controller but ``ccm.errors`` or one it reported (see ``_cluster.reconcile``);
a bad object gets exactly one clear Warning event per failed reconcile and nothing of it is lost
(no Node deleted, no load balancer or route left for it); the well-formed object converges all
the same. The objects are those the real apiserver could hold: schema-valid, semantically bad.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from ccm import wellknown
from ccm.cloudprovider import NodeAddress
from ccm.controllers import node as node_controller
from ccm.controllers import nodelifecycle
from ccm.controllers import route as route_controller
from ccm.controllers import service as service_controller
from ccm.testing.fake_cloud import REJECT_ANNOTATION, FakeCloud
from tests.unit.properties._cluster import UNINIT, cluster, one_clear_warning, reconcile

CLUSTER = "kubernetes"

# ---------------------------------------------------------------- strategies

TEXT = st.text(max_size=24)
WELL_FORMED_PROVIDER_IDS = st.builds(
    lambda scheme, ident: f"{scheme}://{ident}",
    st.sampled_from(["fake", "aws", "x"]),
    st.text(min_size=1, max_size=12),
)
PROVIDER_IDS = st.one_of(
    TEXT.filter(bool),
    st.sampled_from(["fake://", "://i-1", "fake:/i-1", "fake//i-1", " fake://i-1", "fake://\n"]),
    WELL_FORMED_PROVIDER_IDS,
)
IPS = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
ADDRESS_TYPES = st.sampled_from(
    ["InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS", "", "Bogus"]
)
ADDRESSES = st.lists(
    st.fixed_dictionaries({"type": ADDRESS_TYPES, "address": IPS | TEXT}), max_size=4
)
NETWORKS = st.one_of(
    st.ip_addresses(v=4).flatmap(
        lambda ip: st.integers(0, 32).map(
            lambda p: str(ipaddress.ip_network(f"{ip}/{p}", strict=False))
        )
    ),
    st.ip_addresses(v=6).flatmap(
        lambda ip: st.integers(0, 128).map(
            lambda p: str(ipaddress.ip_network(f"{ip}/{p}", strict=False))
        )
    ),
)
POD_CIDRS = st.one_of(
    NETWORKS,
    st.sampled_from(["10.244.1.1/24", "10.244.1.0/33", "10.244.1.0", "fd00::1/64", "/24", " "]),
    TEXT,
)


def _malformed_provider_id(pid: str) -> bool:
    """The contract's ``<provider>://<id>`` (both parts non-empty), checked independently."""
    scheme, sep, rest = pid.partition("://")
    return not (sep and scheme and rest)


def _node(
    name: str,
    *,
    provider_id: str = "",
    tainted: bool = False,
    ready: bool = True,
    annotations: dict[str, str] | None = None,
    addresses: list[dict[str, str]] | None = None,
    pod_cidrs: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": [dict(UNINIT)] if tainted else []}
    if provider_id:
        spec["providerID"] = provider_id
    if pod_cidrs:
        spec["podCIDR"] = pod_cidrs[0]
        spec["podCIDRs"] = pod_cidrs
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "annotations": annotations or {}},
        "spec": spec,
        "status": {
            "addresses": addresses if addresses is not None else [],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


# ---------------------------------------------------------------- node controller


@given(
    provider_id=st.none() | PROVIDER_IDS,
    provided_ip=st.none() | IPS | TEXT,
    addresses=ADDRESSES,
)
@example(provider_id=None, provided_ip="10.0.0.99", addresses=[])
@example(provider_id="fake://", provided_ip=None, addresses=[])
async def test_node_controller_initializes_or_warns_once_and_never_crashes(
    provider_id: str | None, provided_ip: str | None, addresses: list[dict[str, str]]
) -> None:
    cloud = FakeCloud()
    for name in ("bad", "good"):
        cloud.add_instance(
            name,
            provider_id=f"fake://i-{name}",
            addresses=[NodeAddress(type="InternalIP", address="10.0.0.1")],
            zone="z1",
            region="r1",
        )
    annotations = (
        {} if provided_ip is None else {wellknown.ANNOTATION_PROVIDED_NODE_IP: provided_ip}
    )
    bad = _node(
        "bad",
        provider_id=provider_id or "",
        tainted=True,
        annotations=annotations,
        addresses=addresses,
    )
    good = _node("good", tainted=True, addresses=[{"type": "Hostname", "address": "good"}])
    async with cluster(nodes=[bad, good]) as env:
        ctl = node_controller.CloudNodeController(
            client=env.client, nodes=env.nodes, cloud=cloud, recorder=env.recorder
        )
        since = len(env.recorder.events)
        failed = await reconcile(env, "bad", ctl.sync_node("bad"))
        assert await reconcile(env, "good", ctl.sync_node("good")) is None
        await ctl.update_node_status()  # the periodic refresh copes with every Node too
        stored = env.node("bad")
        assert stored is not None
        still_tainted = any(
            t.get("key") == UNINIT["key"] for t in stored["spec"].get("taints") or ()
        )
        if failed is not None:
            assert still_tainted
            one_clear_warning(env, "bad", since, wellknown.EVENT_REASON_FAILED_TO_INITIALIZE)
        else:
            assert env.recorder.warnings("bad", since) == []
        good_now = env.node("good")
        assert good_now is not None
        assert good_now["spec"]["providerID"] == "fake://i-good"
        assert not good_now["spec"].get("taints")


# ---------------------------------------------------------------- node lifecycle controller


@given(provider_ids=st.lists(PROVIDER_IDS, min_size=1, max_size=3))
@example(provider_ids=["fake://", "i-123", "fake:/x"])
async def test_lifecycle_keeps_nodes_with_malformed_provider_ids_warning_once(
    provider_ids: list[str],
) -> None:
    """NotReady Nodes whose instance the cloud does not know: a malformed providerID is reported
    once (over two sweeps) and its Node kept; a well-formed one's Node is deleted; a Node whose
    machine runs is kept, silently."""
    cloud = FakeCloud()
    cloud.add_instance("alive", provider_id="fake://i-alive")
    nodes = [_node(f"n-{i}", provider_id=pid, ready=False) for i, pid in enumerate(provider_ids)]
    nodes.append(_node("alive", provider_id="fake://i-alive", ready=False))
    async with cluster(nodes=nodes) as env:
        ctl = nodelifecycle.CloudNodeLifecycleController(
            client=env.client, nodes=env.nodes, cloud=cloud, recorder=env.recorder
        )
        for _sweep in range(2):
            for node in env.nodes.list():
                name = node["metadata"]["name"]
                assert await reconcile(env, name, ctl.monitor_node(node)) is None
        for i, pid in enumerate(provider_ids):
            name = f"n-{i}"
            if _malformed_provider_id(pid):
                assert env.node(name) is not None, f"Node with providerID {pid!r} was deleted"
                one_clear_warning(env, name, 0, wellknown.EVENT_REASON_INVALID_PROVIDER_ID)
            else:
                assert env.node(name) is None, f"Node with providerID {pid!r} was kept"
                assert env.recorder.warnings(name) == []
        assert env.node("alive") is not None
        assert env.recorder.warnings("alive") == []


# ---------------------------------------------------------------- route controller


CLUSTER_CIDR = ipaddress.ip_network("10.244.0.0/16")


def _valid_cidr(cidr: str) -> bool:
    """A pod CIDR the route controller may route: a canonical network whose first or last address
    lies inside the cluster CIDR (a route outside it could never be deleted again)."""
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        return False
    return net.version == 4 and (
        net.network_address in CLUSTER_CIDR or net.broadcast_address in CLUSTER_CIDR
    )


@given(pod_cidrs=st.lists(POD_CIDRS, min_size=1, max_size=3, unique=True), addresses=ADDRESSES)
@example(pod_cidrs=["10.244.1.1/24"], addresses=[])
@example(pod_cidrs=["10.244.9.0/24", "not a cidr"], addresses=[{"type": "", "address": ""}])
async def test_route_controller_warns_once_per_bad_pod_cidr_and_routes_the_rest(
    pod_cidrs: list[str], addresses: list[dict[str, str]]
) -> None:
    cloud = FakeCloud()
    bad = _node("bad", pod_cidrs=pod_cidrs, addresses=addresses)
    good = _node(
        "good",
        pod_cidrs=["10.244.0.0/24"],
        addresses=[{"type": "InternalIP", "address": "10.0.0.2"}],
    )
    async with cluster(nodes=[bad, good]) as env:
        routes = cloud.routes()
        assert routes is not None
        ctl = route_controller.RouteController(
            client=env.client,
            nodes=env.nodes,
            routes=routes,
            recorder=env.recorder,
            cluster_name=CLUSTER,
            cluster_cidrs=(CLUSTER_CIDR,),
        )
        listed = await routes.list_routes(CLUSTER)
        assert await reconcile(env, "bad", ctl.reconcile(env.nodes.list(), listed)) is None
        held = {(r.target_node, r.destination_cidr) for r in await routes.list_routes(CLUSTER)}
        assert ("good", "10.244.0.0/24") in held
        invalid = [c for c in pod_cidrs if not _valid_cidr(c)]
        warned = env.recorder.warnings("bad")
        assert len(warned) == len(invalid), (invalid, warned)
        for (reason, message), cidr in zip(warned, invalid, strict=True):
            assert reason == wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE
            assert cidr in message
        for target, cidr in held:
            assert _valid_cidr(cidr), f"a route for {target} to invalid {cidr!r} reached the cloud"
        routed = {(t, ipaddress.ip_network(c)) for t, c in held}
        for cidr in pod_cidrs:
            if _valid_cidr(cidr):
                assert ("bad", ipaddress.ip_network(cidr)) in routed
        assert env.recorder.warnings("good") == []


# ---------------------------------------------------------------- service controller

PORTS = st.lists(
    st.fixed_dictionaries(
        {
            "port": st.integers(min_value=-1, max_value=70000),
            "protocol": st.sampled_from(["TCP", "UDP", "SCTP", "tcp", ""]) | TEXT,
        },
        optional={
            "name": TEXT,
            "nodePort": st.integers(min_value=-1, max_value=70000),
            "targetPort": st.integers(min_value=0, max_value=70000) | TEXT,
        },
    ),
    max_size=4,
)
SERVICE_SPECS = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["LoadBalancer", "ClusterIP", "NodePort", "ExternalName"]) | TEXT,
        "ports": PORTS,
    },
    optional={
        "externalTrafficPolicy": st.sampled_from(["Local", "Cluster", ""]) | TEXT,
        "healthCheckNodePort": st.integers(min_value=-1, max_value=70000),
        "loadBalancerSourceRanges": st.lists(NETWORKS | TEXT, max_size=3),
        "loadBalancerIP": IPS | TEXT,
        "loadBalancerClass": TEXT,
        "allocateLoadBalancerNodePorts": st.booleans(),
        "ipFamilies": st.lists(st.sampled_from(["IPv4", "IPv6"]) | TEXT, max_size=2),
        "sessionAffinity": st.sampled_from(["None", "ClientIP"]) | TEXT,
    },
)
ANNOTATIONS = st.dictionaries(
    st.sampled_from([REJECT_ANNOTATION, "service.beta.kubernetes.io/anything"]) | TEXT,
    TEXT,
    max_size=3,
)


def _service(name: str, spec: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "annotations": annotations,
        },
        "spec": spec,
    }


def _ingress(svc: dict[str, Any] | None) -> list[Any]:
    assert svc is not None
    return list(((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


@given(spec=SERVICE_SPECS, annotations=ANNOTATIONS)
@example(spec={"type": "LoadBalancer", "ports": []}, annotations={REJECT_ANNOTATION: ""})
@example(spec={"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "SCTP"}]}, annotations={})
@example(spec={"type": "LoadBalancer", "ports": [], "loadBalancerClass": ""}, annotations={})
async def test_service_controller_ensures_or_warns_once_and_others_converge(
    spec: dict[str, Any], annotations: dict[str, str]
) -> None:
    cloud = FakeCloud()
    bad = _service("bad", spec, annotations)
    good = _service(
        "good", {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}, {}
    )
    ready = _node("worker", provider_id="fake://i-worker")
    async with cluster(nodes=[ready], services=[bad, good]) as env:
        ctl = service_controller.ServiceController(
            client=env.client,
            services=env.services,
            nodes=env.nodes,
            cloud=cloud,
            recorder=env.recorder,
        )
        failed = await reconcile(env, "bad", ctl.sync_service("default/bad"))
        assert await reconcile(env, "good", ctl.sync_service("default/good")) is None
        assert _ingress(env.service("good")), "the well-formed Service did not converge"
        assert env.recorder.warnings("good") == []
        bad_lbs = [lb for lb in cloud.load_balancers.values() if lb.service == "default/bad"]
        if failed is not None:
            one_clear_warning(env, "bad", 0, wellknown.EVENT_REASON_SYNC_LB_FAILED)
            assert not _ingress(env.service("bad"))
        elif spec["type"] == "LoadBalancer" and "loadBalancerClass" not in spec:
            assert _ingress(env.service("bad")), "no error, yet no load balancer status"
            assert len(bad_lbs) == 1
        else:
            assert bad_lbs == [], "a load balancer for a Service that is not ours"
            assert not _ingress(env.service("bad"))
