"""Pure predicates of the service controller, with the upstream table cases of
controllers/service/controller_test.go and service/helpers/helper_test.go as pytest.param ids."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from ccm import wellknown
from ccm.controllers import servicehelpers as h

FIN = wellknown.FINALIZER_LOAD_BALANCER_CLEANUP
EXCLUDE = wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB
CA_TAINT = wellknown.TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER

Tweak = Callable[[dict[str, Any]], None]


def svc(name: str = "external-balancer", type_: str = "LoadBalancer", *tweaks: Tweak) -> Any:
    s: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": type_, "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    for t in tweaks:
        t(s)
    return s


def copy_svc(s: dict[str, Any], *tweaks: Tweak) -> Any:
    out = copy.deepcopy(s)
    for t in tweaks:
        t(out)
    return out


def target_port(port: int | str) -> Tweak:
    def tw(s: dict[str, Any]) -> None:
        s["spec"]["ports"] = [{"port": 80, "protocol": "TCP", "targetPort": port}]

    return tw


def app_protocol(value: str) -> Tweak:
    def tw(s: dict[str, Any]) -> None:
        s["spec"]["ports"][0]["appProtocol"] = value

    return tw


def ip_families(*families: str) -> Tweak:
    def tw(s: dict[str, Any]) -> None:
        s["spec"]["ipFamilies"] = list(families)

    return tw


def spec(**fields: Any) -> Tweak:
    def tw(s: dict[str, Any]) -> None:
        s["spec"].update(fields)

    return tw


def meta(**fields: Any) -> Tweak:
    def tw(s: dict[str, Any]) -> None:
        s["metadata"].update(fields)

    return tw


def pair(old: Any, new: Any) -> tuple[Any, Any]:
    return old, new


_tcp = svc("tcp-service", "LoadBalancer")
_tg20 = svc("tcp-service", "LoadBalancer", target_port(20))
_tg22 = svc("tcp-service", "LoadBalancer", target_port(22))
_v4 = svc("tcp-service", "LoadBalancer", ip_families("IPv4"))
_dual = svc("tcp-service", "LoadBalancer", ip_families("IPv4", "IPv6"))
_http = svc("tcp-service", "LoadBalancer", app_protocol("http"))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            svc(),
            svc("external-balancer", "ClusterIP"),
            True,
            id="If the service type is changed from LoadBalancer to ClusterIP",
        ),
        pytest.param(
            svc("x", "LoadBalancer", spec(ports=[{"port": 8000}, {"port": 9000}, {"port": 10000}])),
            svc("x", "LoadBalancer", spec(ports=[{"port": 8001}, {"port": 9001}, {"port": 10001}])),
            True,
            id="If the Ports are different",
        ),
        pytest.param(
            svc("x", "LoadBalancer", spec(externalIPs=["old.IP.1"])),
            svc("x", "LoadBalancer", spec(externalIPs=["new.IP.1", "new.IP.2"])),
            True,
            id="If external ip counts are different",
        ),
        pytest.param(
            svc("x", "LoadBalancer", spec(externalIPs=["old.IP.1", "old.IP.2"])),
            svc("x", "LoadBalancer", spec(externalIPs=["new.IP.1", "new.IP.2"])),
            True,
            id="If external ips are different",
        ),
        pytest.param(
            svc("x", "LoadBalancer", meta(uid="UID old")),
            svc("x", "LoadBalancer", meta(uid="UID new")),
            True,
            id="If UID is different",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(externalTrafficPolicy="Local")),
            True,
            id="If ExternalTrafficPolicy is different",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(healthCheckNodePort=30123)),
            True,
            id="If HealthCheckNodePort is different",
        ),
        pytest.param(
            _tg20, copy_svc(_tg20, target_port(21)), True, id="If TargetGroup is different 1"
        ),
        pytest.param(
            _tg22, copy_svc(_tg22, target_port("dns")), True, id="If TargetGroup is different 2"
        ),
        pytest.param(_tcp, copy_svc(_tcp), False, id="If appProtocol is the same"),
        pytest.param(
            _v4,
            copy_svc(_v4, ip_families("IPv4", "IPv6")),
            True,
            id="If service IPFamilies from single stack to dual stack",
        ),
        pytest.param(
            _dual,
            copy_svc(_dual, ip_families("IPv4")),
            True,
            id="If service IPFamilies from dual stack to single stack",
        ),
        pytest.param(_v4, copy_svc(_v4), False, id="If service IPFamilies not change"),
        pytest.param(
            _tcp,
            copy_svc(_tcp, app_protocol("http")),
            True,
            id="If appProtocol is set when previously unset",
        ),
        pytest.param(
            _http,
            copy_svc(_http, app_protocol("tcp")),
            True,
            id="If appProtocol is set to a different value",
        ),
        # ccm additions: the other triggers of UPSTREAM_SPEC §2.4, and the non-triggers.
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", meta(annotations={"a": "b"})),
            True,
            id="any annotation change",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(loadBalancerSourceRanges=["1.2.3.0/24"])),
            True,
            id="loadBalancerSourceRanges change",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(sessionAffinity="ClientIP")),
            True,
            id="sessionAffinity change",
        ),
        pytest.param(
            svc(),
            svc(
                "external-balancer",
                "LoadBalancer",
                spec(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10}}),
            ),
            True,
            id="sessionAffinityConfig change",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(loadBalancerIP="1.2.3.4")),
            True,
            id="loadBalancerIP change",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", meta(labels={"a": "b"})),
            False,
            id="label change does not trigger",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(allocateLoadBalancerNodePorts=False)),
            False,
            id="allocateLoadBalancerNodePorts change does not trigger",
        ),
        pytest.param(
            svc("x", "ClusterIP"),
            svc("x", "NodePort"),
            False,
            id="neither wants a load balancer",
        ),
        pytest.param(
            svc(),
            svc("external-balancer", "LoadBalancer", spec(loadBalancerClass="other")),
            True,
            id="a loadBalancerClass appears",
        ),
    ],
)
def test_needs_update(old: Any, new: Any, expected: bool) -> None:
    assert h.needs_update(old, new) is expected


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        pytest.param({}, False, id="service without finalizer"),
        pytest.param(
            {"metadata": {"finalizers": [FIN]}, "spec": {"type": "NodePort"}},
            True,
            id="service with finalizer without timestamp without LB",
        ),
        pytest.param(
            {"metadata": {"finalizers": [FIN]}, "spec": {"type": "LoadBalancer"}},
            False,
            id="service with finalizer without timestamp with LB",
        ),
        pytest.param(
            {"metadata": {"finalizers": [FIN], "deletionTimestamp": "2024-01-01T00:00:00Z"}},
            True,
            id="service with finalizer with timestamp",
        ),
    ],
)
def test_needs_cleanup(service: Any, expected: bool) -> None:
    assert h.needs_cleanup(service) is expected


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        pytest.param({}, False, id="service without finalizer"),
        pytest.param(
            {"metadata": {"finalizers": ["unrelated"]}},
            False,
            id="service with unrelated finalizer",
        ),
        pytest.param({"metadata": {"finalizers": [FIN]}}, True, id="service with one finalizer"),
        pytest.param(
            {"metadata": {"finalizers": [FIN, "unrelated"]}},
            True,
            id="service with multiple finalizers",
        ),
    ],
)
def test_has_lb_finalizer(service: Any, expected: bool) -> None:
    assert h.has_lb_finalizer(service) is expected


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        pytest.param({"spec": {"type": "LoadBalancer"}}, True, id="LoadBalancer without class"),
        pytest.param({"spec": {"type": "ClusterIP"}}, False, id="ClusterIP"),
        pytest.param(
            {"spec": {"type": "LoadBalancer", "loadBalancerClass": "other"}},
            False,
            id="service specifies loadBalancerClass",
        ),
        pytest.param(
            {"spec": {"type": "LoadBalancer", "loadBalancerClass": ""}},
            False,
            id="an empty loadBalancerClass is still a class",
        ),
    ],
)
def test_wants_load_balancer(service: Any, expected: bool) -> None:
    assert h.wants_load_balancer(service) is expected


def _ing(ip: str, **extra: Any) -> dict[str, Any]:
    return {"ingress": [{"ip": ip, **extra}]}


_TCP80 = [{"port": 80, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        pytest.param({}, {}, True, id="empty"),
        pytest.param(_ing("192.168.0.1"), _ing("192.168.0.1"), True, id="same ip"),
        pytest.param(_ing("192.168.0.2"), _ing("192.168.0.1"), False, id="different ip"),
        pytest.param(
            _ing("192.168.0.1", ipMode="VIP"),
            _ing("192.168.0.1", ipMode="VIP"),
            True,
            id="same ipmode",
        ),
        pytest.param(
            _ing("192.168.0.1"), _ing("192.168.0.1", ipMode="VIP"), False, id="only one ipmode set"
        ),
        pytest.param(
            _ing("192.168.0.1", ipMode="Proxy"),
            _ing("192.168.0.1", ipMode="VIP"),
            False,
            id="different ipmode",
        ),
        pytest.param(
            _ing("192.168.0.1", ports=_TCP80),
            _ing("192.168.0.1", ports=_TCP80),
            True,
            id="same ports",
        ),
        pytest.param(
            _ing("192.168.0.1", ports=_TCP80),
            _ing("192.168.0.1", ports=[{"port": 80, "protocol": "UDP"}]),
            False,
            id="same ports different protocol",
        ),
        pytest.param(
            _ing("192.168.0.1", ports=_TCP80),
            _ing("192.168.0.1", ports=[]),
            False,
            id="only one port",
        ),
        pytest.param(
            _ing("192.168.0.1", ports=[]),
            _ing("192.168.0.1"),
            True,
            id="empty and missing ports are semantically equal",
        ),
    ],
)
def test_load_balancer_status_equal(left: Any, right: Any, expected: bool) -> None:
    assert h.load_balancer_status_equal(left, right) is expected


# -- nodes ---------------------------------------------------------------------------------------

PROVIDER_ID = "providerID"


def node(*tweaks: Tweak, name: str = "node") -> dict[str, Any]:
    n: dict[str, Any] = {
        "metadata": {"name": name, "labels": {}},
        "spec": {"taints": [], "providerID": PROVIDER_ID},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    for t in tweaks:
        t(n)
    return n


def label(key: str, value: str) -> Tweak:
    return lambda n: n["metadata"]["labels"].__setitem__(key, value)


def taint(key: str) -> Tweak:
    return lambda n: n["spec"]["taints"].append({"key": key})


def provider_id(value: str) -> Tweak:
    return lambda n: n["spec"].__setitem__("providerID", value)


def deleted() -> Tweak:
    return lambda n: n["metadata"].__setitem__("deletionTimestamp", "2024-01-01T00:00:00Z")


def condition(ctype: str, status: str) -> Tweak:
    def tw(n: dict[str, Any]) -> None:
        for c in n["status"]["conditions"]:
            if c["type"] == ctype:
                c["status"] = status
                return
        n["status"]["conditions"].append({"type": ctype, "status": status})

    return tw


def ready(value: bool) -> Tweak:
    return condition("Ready", "True" if value else "False")


def unset_ready() -> Tweak:
    def tw(n: dict[str, Any]) -> None:
        for c in n["status"]["conditions"]:
            if c["type"] == "Ready":
                c["type"] = "SomethingElse"

    return tw


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(node(), node(), False, id="nothing changed"),
        pytest.param(node(), node(label(EXCLUDE, "")), True, id="excluded F->T"),
        pytest.param(node(label(EXCLUDE, "")), node(), True, id="excluded changed T->F"),
        pytest.param(
            node(label(EXCLUDE, "")), node(label(EXCLUDE, "")), False, id="excluded changed T->T"
        ),
        pytest.param(node(), node(taint("other")), False, id="other taint F->T"),
        pytest.param(node(taint("other")), node(), False, id="other taint T->F"),
        pytest.param(node(), node(label("other", "")), False, id="other label changed F->T"),
        pytest.param(node(label("other", "")), node(), False, id="other label changed T->F"),
        pytest.param(node(ready(False)), node(ready(False)), False, id="readiness changed F->F"),
        pytest.param(
            node(ready(False)), node(unset_ready()), False, id="readiness changed F->unset"
        ),
        pytest.param(
            node(unset_ready()), node(ready(False)), False, id="readiness changed unset->F"
        ),
        pytest.param(
            node(unset_ready()), node(unset_ready()), False, id="readiness changed unset->unset"
        ),
        pytest.param(
            node(ready(False), condition("DiskPressure", "False")),
            node(ready(False), condition("DiskPressure", "True")),
            False,
            id="ready F, other condition changed F->T",
        ),
        pytest.param(
            node(ready(False), condition("DiskPressure", "True")),
            node(ready(False), condition("DiskPressure", "False")),
            False,
            id="ready F, other condition changed T->F",
        ),
        pytest.param(
            node(condition("Other", "False")),
            node(condition("Other", "True")),
            False,
            id="ready T, other condition changed F->T",
        ),
        pytest.param(
            node(condition("Other", "True")),
            node(condition("Other", "False")),
            False,
            id="ready T, other condition changed T->F",
        ),
        pytest.param(node(), node(deleted()), False, id="deletionTimestamp F -> T"),
        pytest.param(node(provider_id("")), node(), True, id="providerID set F -> T"),
        pytest.param(node(), node(provider_id("")), True, id="providerID set T-> F"),
        pytest.param(node(), node(provider_id(PROVIDER_ID + "-2")), True, id="providerID change"),
    ],
)
def test_should_sync_updated_node_individual_predicates(old: Any, new: Any, expected: bool) -> None:
    assert h.should_sync_updated_node(old, new) is expected


_T = taint(CA_TAINT)
_X = label(EXCLUDE, "")
_P0 = provider_id("")
_P2 = provider_id(PROVIDER_ID + "-2")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(node(_T), node(_T, _X), True, id="tainted T, excluded F->T"),
        pytest.param(node(_T, _X), node(_T), True, id="tainted T, excluded T->F"),
        pytest.param(node(_T, _P0), node(_T), True, id="tainted T, providerID set F->T"),
        pytest.param(node(_T), node(_T, _P0), True, id="tainted T, providerID set T->F"),
        pytest.param(node(_T), node(_T, _P2), True, id="tainted T, providerID change"),
        pytest.param(node(_T, ready(False)), node(_T), False, id="tainted T, ready F->T"),
        pytest.param(node(_T), node(_T, ready(False)), False, id="tainted T, ready T->F"),
        pytest.param(node(_X), node(_X, _T), False, id="excluded T, tainted F->T"),
        pytest.param(node(_X, _T), node(_X), False, id="excluded T, tainted T->F"),
        pytest.param(node(_X, ready(False)), node(_X), False, id="excluded T, ready F->T"),
        pytest.param(node(_X), node(_X, ready(False)), False, id="excluded T, ready T->F"),
        pytest.param(node(_X, _P0), node(_X), True, id="excluded T, providerID set F->T"),
        pytest.param(node(_X), node(_X, _P0), True, id="excluded T, providerID set T->F"),
        pytest.param(node(_X), node(_X, _P2), True, id="excluded T, providerID change"),
        pytest.param(node(ready(False)), node(ready(False), _T), False, id="ready F, tainted F->T"),
        pytest.param(node(ready(False), _T), node(ready(False)), False, id="ready F, tainted T->F"),
        pytest.param(node(ready(False)), node(ready(False), _X), True, id="ready F, excluded F->T"),
        pytest.param(node(ready(False), _X), node(ready(False)), True, id="ready F, excluded T->F"),
        pytest.param(
            node(ready(False), _P0), node(ready(False)), True, id="ready F, providerID set F->T"
        ),
        pytest.param(
            node(ready(False)), node(ready(False), _P0), True, id="ready F, providerID set T->F"
        ),
        pytest.param(
            node(ready(False)), node(ready(False), _P2), True, id="ready F, providerID change"
        ),
        pytest.param(node(_P0), node(_P0, _X), True, id="providerID unset, excluded F->T"),
        pytest.param(node(_P0, _X), node(_P0), True, id="providerID unset, excluded T->F"),
        pytest.param(node(_P0), node(_P0, ready(True)), False, id="providerID unset, ready T->F"),
        pytest.param(node(_P0), node(_P0, ready(False)), False, id="providerID unset, ready F->T"),
        pytest.param(node(_P0, _T), node(_P0), False, id="providerID unset, tainted T->F"),
        pytest.param(node(_P0), node(_P0, _T), False, id="providerID unset, tainted F->T"),
    ],
)
def test_should_sync_updated_node_compounded_predicates(old: Any, new: Any, expected: bool) -> None:
    assert h.should_sync_updated_node(old, new) is expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        pytest.param(node(), True, id="plain node"),
        pytest.param(node(ready(False)), True, id="readiness is not considered"),
        pytest.param(node(label(EXCLUDE, "")), False, id="exclusion label with empty value"),
        pytest.param(node(label(EXCLUDE, "true")), False, id="exclusion label true"),
        pytest.param(node(label(EXCLUDE, "false")), True, id="exclusion label false"),
        pytest.param(node(label(EXCLUDE, "0")), True, id="exclusion label 0"),
        pytest.param(node(label(EXCLUDE, "F")), True, id="exclusion label F"),
        pytest.param(node(label(EXCLUDE, "foo")), False, id="exclusion label unparsable"),
        pytest.param(node(_T), False, id="cluster autoscaler deletion taint"),
        pytest.param(node(taint("other")), True, id="other taint"),
        pytest.param(node(deleted()), False, id="node being deleted"),
    ],
)
def test_stable_node_set_predicates(n: Any, expected: bool) -> None:
    assert (h.stable_node_set([n]) == [n]) is expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            [node(name="node1"), node(name="node2")],
            [node(_P2, name="node1"), node(_P2, name="node2")],
            False,
            id="Nodes with updated providerID",
        ),
        pytest.param(
            [node(name="node1"), node(_P0, name="node2")],
            [node(name="node1"), node(_P0, name="node2")],
            True,
            id="Nodes unchanged",
        ),
        pytest.param(
            [node(name="node1"), node(_P0, name="node2")],
            [node(name="node1"), node(_P0, name="node3")],
            False,
            id="Change node with empty providerID",
        ),
        pytest.param(
            [node(name="node1")],
            [node(name="node1"), node(name="node2")],
            False,
            id="a node added",
        ),
        pytest.param(
            [node(name="node1"), node(taint("other"), name="node2")],
            [node(name="node1"), node(name="node2")],
            True,
            id="taints and readiness do not count",
        ),
    ],
)
def test_nodes_sufficiently_equal(old: Any, new: Any, expected: bool) -> None:
    assert h.nodes_sufficiently_equal(old, new) is expected


def test_loggable_node_names_are_limited_to_twenty() -> None:
    nodes = [node(name=f"n{i:02d}") for i in range(25)]
    names = h.loggable_node_names(nodes)
    assert names[:20] == [f"n{i:02d}" for i in range(20)]
    assert names[20:] == ["<5 more>"]


def test_split_key_rejects_malformed_keys() -> None:
    assert h.split_key("ns/name") == ("ns", "name")
    with pytest.raises(ValueError, match='unexpected key format: "invalid/key/string"'):
        h.split_key("invalid/key/string")


def test_patches_touch_only_our_finalizer_and_the_ingress() -> None:
    assert h.add_finalizer_patch() == {"metadata": {"finalizers": [FIN]}}
    assert h.remove_finalizer_patch() == {
        "metadata": {"$deleteFromPrimitiveList/finalizers": [FIN]}
    }
    assert h.status_patch({"ingress": [{"ip": "1.2.3.4"}]}) == {
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    }
    assert h.status_patch({}) == {"status": {"loadBalancer": {"ingress": None}}}


def _ingress(s: dict[str, Any]) -> None:
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}


@pytest.mark.parametrize(
    ("service", "delete", "served"),
    [
        pytest.param(svc(), False, False, id="wants-a-load-balancer"),
        pytest.param(svc("s", "LoadBalancer", _ingress), False, True, id="already-served"),
        pytest.param(svc("s", "ClusterIP", _ingress), True, False, id="not-a-load-balancer"),
        pytest.param(
            svc("s", "LoadBalancer", spec(loadBalancerClass="other")),
            True,
            False,
            id="another-class",
        ),
        pytest.param(
            svc("s", "ClusterIP", meta(finalizers=[FIN])), True, False, id="needs-cleanup"
        ),
        pytest.param(
            svc("s", "LoadBalancer", _ingress, meta(deletionTimestamp="2026-01-01T00:00:00Z")),
            True,
            False,
            id="being-deleted-without-finalizer",
        ),
    ],
)
def test_the_delete_branch_the_node_sync_and_served(
    service: Any, delete: bool, served: bool
) -> None:
    assert h.should_delete_load_balancer(service) is delete
    assert h.wants_node_sync(service) is not delete
    assert h.is_served(service) is served
