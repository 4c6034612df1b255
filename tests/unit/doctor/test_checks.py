"""The verdict logic of every ``ccm doctor`` check, against the in-memory fake apiserver."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import pytest

from ccm import clock, errors, wellknown
from ccm.doctor import model, report
from ccm.doctor.model import Verdict
from ccm.kube import client as kclient
from ccm.kube.fake import FakeApiServer, FakeKubeClient, FakeRequest

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


TAINT = {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}


def node(
    name: str,
    *,
    age: float = 3600,
    tainted: bool = False,
    provider_id: str = "",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": [TAINT] if tainted else []}
    if provider_id:
        spec["providerID"] = provider_id
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": ts(age),
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": spec,
        "status": {"conditions": conditions or []},
    }


ZONED = {wellknown.LABEL_ZONE: "z1", wellknown.LABEL_REGION: "r1"}


def lease(holder: str, renewed_ago: float, duration: int = 15) -> dict[str, Any]:
    return {
        "metadata": {"name": "cloud-controller-manager", "namespace": "kube-system"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": micro(renewed_ago),
        },
    }


def service(
    name: str,
    *,
    age: float = 3600,
    ingress: bool = False,
    deleting_for: float | None = None,
    lb_class: str = "",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "creationTimestamp": ts(age)}
    if deleting_for is not None:
        meta["deletionTimestamp"] = ts(deleting_for)
        meta["finalizers"] = [wellknown.FINALIZER_LOAD_BALANCER_CLEANUP]
    spec: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}]}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    status = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]} if ingress else {}}
    return {"metadata": meta, "spec": spec, "status": status}


def warning(svc: str, reason: str, message: str, ago: float) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{svc}.{reason}.{int(ago)}", "namespace": "ns"},
        "involvedObject": {"kind": "Service", "name": svc, "namespace": "ns"},
        "type": wellknown.EVENT_WARNING,
        "reason": reason,
        "message": message,
        "lastTimestamp": ts(ago),
    }


@pytest.fixture
def client() -> FakeKubeClient:
    return FakeKubeClient(server=FakeApiServer(resources=[*_resources(), model.PODS]))


def _resources() -> list[kclient.Resource]:
    from ccm.kube.fake import DEFAULT_RESOURCES

    return list(DEFAULT_RESOURCES)


def put(client: FakeKubeClient, res: kclient.Resource, obj: dict[str, Any]) -> None:
    """Store ``obj`` as is: the fake stamps creationTimestamp from the clock and drops a
    deletionTimestamp on create, so create at the wanted time, then overwrite (which keeps
    deletion state)."""
    created = obj["metadata"].get("creationTimestamp") or ts(0)
    with mock.patch.object(clock, "now_rfc3339", return_value=created):
        client.put_object(res, obj)
    if obj["metadata"].get("deletionTimestamp"):
        client.put_object(res, obj)


async def run(client: FakeKubeClient, check: str, **scope: Any) -> model.Finding:
    (finding,) = await report.run_checks(client, model.Scope(**scope), only=[check], now=NOW)
    return finding


# -- Nodes -------------------------------------------------------------------------------------


async def test_taint_check_is_ok_without_tainted_nodes(client: FakeKubeClient) -> None:
    put(client, kclient.NODES, node("a", provider_id="fake://a"))
    f = await run(client, "uninitialized-taint")
    assert f.verdict is Verdict.OK


async def test_taint_check_warns_within_grace_and_fails_after(client: FakeKubeClient) -> None:
    put(client, kclient.NODES, node("young", tainted=True, age=30))
    f = await run(client, "uninitialized-taint")
    assert f.verdict is Verdict.WARN
    assert f.objects == ("young (tainted since 30s)",)
    put(client, kclient.NODES, node("old", tainted=True, age=600))
    f = await run(client, "uninitialized-taint")
    assert f.verdict is Verdict.FAIL
    assert f.objects == ("old (tainted since 10m)", "young (tainted since 30s)")
    assert f.fix


async def test_node_selector_scopes_the_node_checks(client: FakeKubeClient) -> None:
    put(client, kclient.NODES, node("other", tainted=True, age=600))
    put(client, kclient.NODES, node("mine", provider_id="x://1", labels={"team": "a"}))
    f = await run(client, "uninitialized-taint", node_selector="team=a")
    assert f.verdict is Verdict.OK


async def test_kubelet_check_fails_on_initialized_node_without_provider_id(
    client: FakeKubeClient,
) -> None:
    put(client, kclient.NODES, node("ok", provider_id="fake://ok"))
    put(client, kclient.NODES, node("waiting", tainted=True))
    assert (await run(client, "kubelet-external")).verdict is Verdict.OK
    put(client, kclient.NODES, node("plain"))
    put(
        client,
        kclient.NODES,
        node("hand", annotations={wellknown.ANNOTATION_PROVIDED_NODE_IP: "10.0.0.1"}),
    )
    f = await run(client, "kubelet-external")
    assert f.verdict is Verdict.FAIL
    assert f.objects == (
        "hand (alpha.kubernetes.io/provided-node-ip set, taint removed by hand?)",
        "plain (no taint, no providerID)",
    )


async def test_cloud_data_warns_on_initialized_nodes_without_topology(
    client: FakeKubeClient,
) -> None:
    put(client, kclient.NODES, node("zoned", provider_id="x://1", labels=ZONED))
    put(client, kclient.NODES, node("uninit", tainted=True))
    assert (await run(client, "node-cloud-data")).verdict is Verdict.OK
    labels = {wellknown.LABEL_REGION: "r1"}
    put(client, kclient.NODES, node("bare", provider_id="x://2", labels=labels))
    f = await run(client, "node-cloud-data")
    assert f.verdict is Verdict.WARN
    assert f.objects == ("bare (no zone)",)


def network(status: str, ago: float, reason: str) -> dict[str, Any]:
    return {
        "type": wellknown.CONDITION_NETWORK_UNAVAILABLE,
        "status": status,
        "reason": reason,
        "lastTransitionTime": ts(ago),
    }


async def test_routes_check_fails_on_network_unavailable_nodes(client: FakeKubeClient) -> None:
    put(client, kclient.NODES, node("none"))
    f = await run(client, "routes")
    assert f.verdict is Verdict.OK
    assert "not managed" in f.summary
    up = [network("False", 600, wellknown.ROUTE_CONDITION_REASON_CREATED)]
    put(client, kclient.NODES, node("up", conditions=up))
    assert (await run(client, "routes")).verdict is Verdict.OK
    new = [network("True", 10, wellknown.ROUTE_CONDITION_REASON_NOT_CREATED)]
    put(client, kclient.NODES, node("new", conditions=new))
    assert (await run(client, "routes")).verdict is Verdict.WARN
    down = [network("True", 900, wellknown.ROUTE_CONDITION_REASON_NOT_CREATED)]
    put(client, kclient.NODES, node("down", conditions=down))
    f = await run(client, "routes")
    assert f.verdict is Verdict.FAIL
    assert "down (NoRouteCreated, since 15m)" in f.objects


# -- the ccm -----------------------------------------------------------------------------------


async def test_leader_check_fails_without_lease(client: FakeKubeClient) -> None:
    f = await run(client, "leader")
    assert f.verdict is Verdict.FAIL
    assert "does not exist" in f.summary


@pytest.mark.parametrize(
    ("holder", "renewed_ago", "verdict", "words"),
    [
        pytest.param("ccm-1_abc", 3, Verdict.OK, "held by ccm-1_abc", id="fresh"),
        pytest.param("ccm-1_abc", 200, Verdict.FAIL, "stale", id="stale"),
        pytest.param("", 3, Verdict.FAIL, "no holder", id="released"),
    ],
)
async def test_leader_check_reads_holder_and_renew_time(
    client: FakeKubeClient, holder: str, renewed_ago: float, verdict: Verdict, words: str
) -> None:
    put(client, kclient.LEASES, lease(holder, renewed_ago))
    f = await run(client, "leader")
    assert f.verdict is verdict
    assert words in f.summary


async def test_leader_check_reads_the_named_lease(client: FakeKubeClient) -> None:
    other = lease("ccm-2", 1)
    other["metadata"] = {"name": "mine", "namespace": "elsewhere"}
    put(client, kclient.LEASES, other)
    f = await run(client, "leader", lease_name="mine", lease_namespace="elsewhere")
    assert f.verdict is Verdict.OK


async def test_taint_without_ccm_fails_only_when_nobody_leads(client: FakeKubeClient) -> None:
    put(client, kclient.NODES, node("t", tainted=True))
    f = await run(client, "taint-without-ccm")
    assert f.verdict is Verdict.FAIL
    assert f.objects == ("t",)
    put(client, kclient.LEASES, lease("ccm-1", 2))
    assert (await run(client, "taint-without-ccm")).verdict is Verdict.OK


def pod(name: str, *, restarts: int = 0, waiting: str = "", phase: str = "Running") -> Any:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    last = {"terminated": {"reason": "Error"}} if restarts else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"k8s-app": "cloud-controller-manager"},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"restartCount": restarts, "state": state, "lastState": last}],
        },
    }


async def test_pods_check_grades_restarts_and_crash_loops(client: FakeKubeClient) -> None:
    f = await run(client, "ccm-pods")
    assert f.verdict is Verdict.WARN
    assert "no Pod matches" in f.summary
    put(client, model.PODS, pod("ccm-a"))
    assert (await run(client, "ccm-pods")).verdict is Verdict.OK
    put(client, model.PODS, pod("ccm-b", restarts=2))
    f = await run(client, "ccm-pods")
    assert f.verdict is Verdict.WARN
    assert f.objects == ("ccm-b (2 restart(s), last Error)",)
    put(client, model.PODS, pod("ccm-c", restarts=5, waiting="CrashLoopBackOff"))
    f = await run(client, "ccm-pods")
    assert f.verdict is Verdict.FAIL
    assert "ccm-c (CrashLoopBackOff, 5 restart(s), last Error)" in f.objects


# -- Services ----------------------------------------------------------------------------------


async def test_pending_services_show_their_newest_warning(client: FakeKubeClient) -> None:
    put(client, kclient.SERVICES, service("served", ingress=True))
    put(client, kclient.SERVICES, service("theirs", lb_class="example.com/lb"))
    assert (await run(client, "lb-pending")).verdict is Verdict.OK
    put(client, kclient.SERVICES, service("stuck", age=900))
    put(client, kclient.EVENTS, warning("stuck", "SyncLoadBalancerFailed", "old", 800))
    put(client, kclient.EVENTS, warning("stuck", "SyncLoadBalancerFailed", "quota", 60))
    put(client, kclient.EVENTS, warning("served", "SyncLoadBalancerFailed", "no", 5))
    f = await run(client, "lb-pending")
    assert f.verdict is Verdict.FAIL
    assert f.objects == ("ns/stuck (pending 15m) SyncLoadBalancerFailed: quota (60s ago)",)


async def test_young_pending_service_warns(client: FakeKubeClient) -> None:
    put(client, kclient.SERVICES, service("new", age=5))
    f = await run(client, "lb-pending")
    assert f.verdict is Verdict.WARN
    assert f.objects == ("ns/new (pending 5s)",)


async def test_service_deleting_on_the_finalizer_fails(client: FakeKubeClient) -> None:
    assert (await run(client, "lb-finalizer")).verdict is Verdict.OK
    put(client, kclient.SERVICES, service("gone", ingress=True, deleting_for=1800))
    put(client, kclient.EVENTS, warning("gone", "DeleteLoadBalancerFailed", "busy", 30))
    f = await run(client, "lb-finalizer")
    assert f.verdict is Verdict.FAIL
    assert f.objects == ("ns/gone (deleting for 30m) DeleteLoadBalancerFailed: busy (30s ago)",)
    # A deleting Service is not also reported as pending.
    assert (await run(client, "lb-pending")).verdict is Verdict.OK


# -- errors and the report ---------------------------------------------------------------------


async def test_a_forbidden_read_is_a_warning_naming_the_refusal(client: FakeKubeClient) -> None:
    def deny(req: FakeRequest) -> None:
        raise errors.ForbiddenError('nodes is forbidden: User "x" cannot list resource "nodes"')

    client.add_reactor("list", "nodes", deny)
    f = await run(client, "uninitialized-taint")
    assert f.verdict is Verdict.WARN
    assert "forbidden" in f.summary
    assert f.question == model.QUESTIONS["uninitialized-taint"]


async def test_exit_code_is_the_worst_verdict(client: FakeKubeClient) -> None:
    put(client, kclient.LEASES, lease("ccm-1", 1))
    put(client, kclient.NODES, node("a", provider_id="x://a", labels=ZONED))
    ok = await report.run_checks(
        client, model.Scope(), only=["leader", "kubelet-external"], now=NOW
    )
    assert report.exit_code(ok) == 0
    warn = await report.run_checks(client, model.Scope(), only=["leader", "ccm-pods"], now=NOW)
    assert report.exit_code(warn) == 1
    put(client, kclient.NODES, node("b"))
    fail = await report.run_checks(
        client, model.Scope(), only=["ccm-pods", "kubelet-external"], now=NOW
    )
    assert report.exit_code(fail) == 2
