"""The service load-balancer controller over the in-memory apiserver, real informers and the fake
cloud.

Upstream cases of controllers/service/controller_test.go are ported as pytest.param ids where the
behaviour is the same; ccm-specific behaviour has its own tests. Like the real apiserver's Service
status strategy, the in-memory apiserver keeps metadata changes made through ``services/status``
(that is how upstream, and ccm, write the finalizer); the e2e tests check the real one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from ccm import errors, metrics, wellknown
from ccm.cloudprovider import LoadBalancerStatus
from ccm.cloudprovider import Node as NodeView
from ccm.cloudprovider import Service as ServiceView
from ccm.controllers import service as service_controller
from ccm.controllers import servicehelpers as helpers
from ccm.errors import CloudProviderError, ImplementedElsewhereError, RetryAfterError
from ccm.kube import client as kclient
from ccm.kube import fake as kfake
from ccm.kube import informer as kinformer
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud
from tests.unit.recorder import Recorder

FIN = wellknown.FINALIZER_LOAD_BALANCER_CLEANUP
NS = "default"
CLUSTER = "kubernetes"


@dataclass
class Env:
    client: FakeKubeClient
    cloud: FakeCloud
    services: kinformer.Informer
    nodes: kinformer.Informer
    recorder: Recorder
    controller: service_controller.ServiceController

    def service(self, name: str) -> dict[str, Any] | None:
        return self.client.get_object(kclient.SERVICES, name, NS)

    def patches(self) -> list[kfake.Action]:
        return [a for a in self.client.writes() if a.verb == "patch" and a.resource == "services"]

    def cloud_calls(self, method: str) -> list[str]:
        return [c.key for c in self.cloud.calls if c.method == method]

    async def settle(self) -> None:
        """Wait until both informers hold what the apiserver holds."""
        for _ in range(500):
            if _caught_up(self.client, kclient.SERVICES, self.services) and _caught_up(
                self.client, kclient.NODES, self.nodes
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("informers did not catch up")


def _caught_up(client: FakeKubeClient, res: kclient.Resource, inf: kinformer.Informer) -> bool:
    want = {
        kinformer.object_key(o): o["metadata"]["resourceVersion"] for o in client.list_objects(res)
    }
    have = {kinformer.object_key(o): o["metadata"]["resourceVersion"] for o in inf.list()}
    return want == have


def make_service(
    name: str,
    type_: str = "LoadBalancer",
    *,
    protocol: str = "TCP",
    finalizers: Sequence[str] = (),
    ingress: str | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "metadata": {"name": name, "namespace": NS, "finalizers": list(finalizers)},
        "spec": {"type": type_, "ports": [{"port": 80, "protocol": protocol}], **spec},
    }
    if annotations:
        svc["metadata"]["annotations"] = dict(annotations)
    if ingress:
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": ingress}]}}
    return svc


def make_node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[str] = (),
    provider_id: str | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "providerID": provider_id if provider_id is not None else f"fake://{name}",
            "taints": [{"key": t, "effect": "NoSchedule"} for t in taints],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def start_env(cloud: FakeCloud | None = None, workers: int = 1) -> Env:
    client = FakeKubeClient()
    cloud = cloud or FakeCloud()
    services = kinformer.Informer(client, kclient.SERVICES)
    nodes = kinformer.Informer(client, kclient.NODES)
    recorder = Recorder()
    controller = service_controller.ServiceController(
        client=client,
        services=services,
        nodes=nodes,
        cloud=cloud,
        recorder=recorder,
        workers=workers,
        cloud_timeout=30.0,
    )
    return Env(client, cloud, services, nodes, recorder, controller)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await start_env()
    async with _informers(e):
        yield e


class _informers:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Env:
        for inf in (self.env.services, self.env.nodes):
            self.tasks.append(asyncio.create_task(inf.run(), name=f"test/{inf.name}"))
            await inf.wait_for_sync(timeout=5)
        return self.env

    async def __aexit__(self, *exc: object) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.env.client.aclose()


class _running:
    """Run the controller's workers for the duration of the block."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Env:
        self.task = asyncio.create_task(self.env.controller.run(), name="test/service-controller")
        return self.env

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def put(env: Env, res: kclient.Resource, *objs: dict[str, Any]) -> None:
    for obj in objs:
        env.client.put_object(res, obj)
    await env.settle()


async def wait_for(predicate: Any, *, step: float = 0.01, tries: int = 2000) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not met")


async def existing_lb(env: Env, svc: Mapping[str, Any], nodes: Sequence[str] = ()) -> None:
    """Create the Service's load balancer in the fake cloud, as an earlier sync would have."""
    await env.cloud.ensure_load_balancer(
        CLUSTER, ServiceView(svc), [NodeView(make_node(n)) for n in nodes]
    )
    env.cloud.clear_calls()


# --- TestSyncLoadBalancerIfNeeded -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("svc", "lb_exists", "expect_op", "create", "delete", "patch_status", "patch_finalizer"),
    [
        pytest.param(
            make_service("no-external-balancer", "ClusterIP"),
            False,
            "delete",
            False,
            False,
            False,
            False,
            id="service doesn't want LB",
        ),
        pytest.param(
            make_service("udp-service", protocol="UDP"),
            False,
            "ensure",
            True,
            False,
            True,
            True,
            id="udp service that wants LB",
        ),
        pytest.param(
            make_service("basic-service1"),
            False,
            "ensure",
            True,
            False,
            True,
            True,
            id="tcp service that wants LB",
        ),
        pytest.param(
            make_service("sctp-service", protocol="SCTP"),
            False,
            "ensure",
            True,
            False,
            True,
            True,
            id="sctp service that wants LB",
        ),
        pytest.param(
            make_service("with-external-balancer", loadBalancerClass="custom-loadbalancer"),
            False,
            "delete",
            False,
            False,
            False,
            False,
            id="service specifies loadBalancerClass",
        ),
        pytest.param(
            make_service("no-external-balancer", "ClusterIP", ingress="8.8.8.8", finalizers=[FIN]),
            True,
            "delete",
            False,
            True,
            True,
            True,
            id="service with finalizer that no longer wants LB",
        ),
        pytest.param(
            make_service("basic-service1", ingress="8.8.8.8", finalizers=[FIN]),
            True,
            "delete",
            False,
            True,
            True,
            True,
            id="service that needs cleanup",
        ),
        pytest.param(
            make_service("basic-service1", finalizers=[FIN]),
            False,
            "ensure",
            True,
            False,
            True,
            False,
            id="service with finalizer that wants LB",
        ),
    ],
)
async def test_sync_load_balancer_if_needed(
    svc: dict[str, Any],
    lb_exists: bool,
    expect_op: str,
    create: bool,
    delete: bool,
    patch_status: bool,
    patch_finalizer: bool,
    request: pytest.FixtureRequest,
) -> None:
    # The upstream fake accepts SCTP; ours rejects it by default (it is a provider's choice).
    e = await start_env(FakeCloud(reject_protocols=()))
    async with _informers(e):
        name = svc["metadata"]["name"]
        await put(e, kclient.SERVICES, svc)
        stored = e.service(name)
        assert stored is not None
        if lb_exists:
            await existing_lb(e, stored)
        if request.node.callspec.id == "service that needs cleanup":
            await e.client.delete(kclient.SERVICES, name, namespace=NS)  # sets deletionTimestamp
            await e.settle()
        e.client.clear_actions()
        key = f"{NS}/{name}"

        await e.controller.sync_service(key)

        assert (key not in e.controller.cache) is (expect_op == "delete")
        assert bool(e.cloud_calls("create")) is create
        assert bool(e.cloud_calls("delete")) is delete
        if create:
            lb = e.cloud.load_balancer_for(key)
            assert lb is not None
            assert lb.name == e.cloud.get_load_balancer_name(CLUSTER, ServiceView(stored))
            assert lb.ports[0].port == 80
        if not create and not delete:
            assert e.cloud_calls("create") == e.cloud_calls("update") == []
        expected = int(patch_status) + int(patch_finalizer)
        assert len(e.patches()) == expected, e.client.actions
        assert all(p.subresource == "status" for p in e.patches())


# --- ensure path ---------------------------------------------------------------------------------


async def test_ensure_adds_finalizer_before_any_cloud_call_then_status_and_events(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"), make_node("n2"))
    await put(env, kclient.SERVICES, make_service("web"))
    seen: list[list[str]] = []

    def hook(call: Any) -> None:
        stored = env.service("web")
        assert stored is not None
        seen.append(list(stored["metadata"].get("finalizers") or []))

    env.cloud.call_hook = hook
    await env.controller.sync_service(f"{NS}/web")

    assert seen and all(FIN in f for f in seen)  # every cloud call saw the finalizer stored
    lb = env.cloud.load_balancer_for(f"{NS}/web")
    assert lb is not None and lb.nodes == ("n1", "n2")
    stored = env.service("web")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": lb.ip}]
    assert stored["metadata"]["finalizers"] == [FIN]
    assert env.recorder.reasons("web") == [
        wellknown.EVENT_REASON_ENSURING_LB,
        wellknown.EVENT_REASON_ENSURED_LB,
    ]
    patches = [r for r in env.client.requests if r.verb == "patch"]
    assert [r.patch_type for r in patches] == ["strategic", "strategic"]
    assert patches[0].body == {"metadata": {"finalizers": [FIN]}}


async def test_finalizer_patch_keeps_other_finalizers(env: Env) -> None:
    await put(env, kclient.SERVICES, make_service("web", finalizers=["example.com/other"]))
    await env.controller.sync_service(f"{NS}/web")
    stored = env.service("web")
    assert stored is not None
    assert sorted(stored["metadata"]["finalizers"]) == sorted(["example.com/other", FIN])


async def test_status_is_patched_only_when_ingress_differs(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.sync_service(f"{NS}/web")
    await env.settle()
    env.client.clear_actions()
    await env.controller.sync_service(f"{NS}/web")
    assert env.patches() == []
    assert env.cloud.call_count("create") == 2


async def test_no_nodes_warns_unavailable_but_still_ensures(env: Env) -> None:
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.sync_service(f"{NS}/web")
    assert env.recorder.reasons("web") == [
        wellknown.EVENT_REASON_ENSURING_LB,
        wellknown.EVENT_REASON_UNAVAILABLE_LB,
        wellknown.EVENT_REASON_ENSURED_LB,
    ]
    assert env.recorder.messages(wellknown.EVENT_REASON_UNAVAILABLE_LB) == [
        "There are no available nodes for LoadBalancer"
    ]


async def test_backends_follow_the_stable_node_predicates(env: Env) -> None:
    ex = wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB
    await put(
        env,
        kclient.NODES,
        make_node("plain"),
        make_node("not-ready", ready=False),
        make_node("excluded", labels={ex: "true"}),
        make_node("included", labels={ex: "false"}),
        make_node("garbage", labels={ex: "maybe"}),
        make_node("scaled-down", taints=[wellknown.TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER]),
    )
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.sync_service(f"{NS}/web")
    lb = env.cloud.load_balancer_for(f"{NS}/web")
    assert lb is not None
    assert lb.nodes == ("included", "not-ready", "plain")


async def test_implemented_elsewhere_is_success_without_status(env: Env) -> None:
    env.cloud.inject_error("create", ImplementedElsewhereError())
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.process_service_key(f"{NS}/web")
    stored = env.service("web")
    assert stored is not None
    assert stored["metadata"]["finalizers"] == [FIN]  # the finalizer is still managed
    assert "loadBalancer" not in (stored.get("status") or {}) or not stored["status"][
        "loadBalancer"
    ].get("ingress")
    assert env.recorder.reasons("web") == [wellknown.EVENT_REASON_ENSURING_LB]
    assert env.controller.service_queue.num_requeues(f"{NS}/web") == 0
    assert env.controller.service_queue.waiting == 0


async def test_nil_status_from_the_provider_is_an_error(env: Env) -> None:
    class NilCloud(FakeCloud):
        async def ensure_load_balancer(self, *args: Any) -> LoadBalancerStatus:
            return None  # type: ignore[return-value]

    e = await start_env(NilCloud())
    async with _informers(e):
        await put(e, kclient.SERVICES, make_service("web"))
        with pytest.raises(service_controller.ServiceSyncError, match="is nil"):
            await e.controller.sync_service(f"{NS}/web")
        assert e.recorder.messages(wellknown.EVENT_REASON_SYNC_LB_FAILED) == [
            "Error syncing load balancer: service status returned by EnsureLoadBalancer is nil"
        ]


async def test_provider_rejection_warns_with_its_message_and_others_converge(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(
        env,
        kclient.SERVICES,
        make_service("bad", annotations={"fake.ccm.io/reject": "no such SKU: mega"}),
        make_service("sctp", protocol="SCTP"),
        make_service("good"),
    )
    async with _running(env):
        await wait_for(lambda: env.cloud.load_balancer_for(f"{NS}/good") is not None)
        await wait_for(lambda: len(env.recorder.reasons("sctp")) >= 2)
    warnings = {
        e[0]: e[3]
        for e in env.recorder.events
        if e[2] == wellknown.EVENT_REASON_SYNC_LB_FAILED and e[1] == "Warning"
    }
    assert warnings["bad"] == (
        "Error syncing load balancer: failed to ensure load balancer: no such SKU: mega"
    )
    assert "do not support protocol SCTP" in warnings["sctp"]
    assert env.cloud.load_balancer_for(f"{NS}/bad") is None
    assert env.cloud.load_balancer_for(f"{NS}/sctp") is None


# --- delete path ---------------------------------------------------------------------------------


async def test_type_change_away_from_load_balancer_deletes_lb_then_finalizer(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("web"))
    async with _running(env):
        await wait_for(lambda: (env.service("web") or {}).get("status", {}).get("loadBalancer"))
        svc = env.service("web")
        assert svc is not None
        svc["spec"]["type"] = "ClusterIP"
        await env.client.replace(kclient.SERVICES, "web", svc, namespace=NS)
        await wait_for(lambda: not (env.service("web") or {})["metadata"].get("finalizers"))
    assert env.cloud.load_balancer_for(f"{NS}/web") is None
    stored = env.service("web")
    assert stored is not None
    assert not stored.get("status", {}).get("loadBalancer", {}).get("ingress")
    assert env.recorder.reasons("web")[-2:] == [
        wellknown.EVENT_REASON_DELETING_LB,
        wellknown.EVENT_REASON_DELETED_LB,
    ]
    assert f"{NS}/web" not in env.controller.cache


async def test_new_load_balancer_class_deletes_the_lb(env: Env) -> None:
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.sync_service(f"{NS}/web")
    await env.settle()
    svc = env.service("web")
    assert svc is not None
    svc["spec"]["loadBalancerClass"] = "other"
    env.client.put_object(kclient.SERVICES, svc)
    await env.settle()
    await env.controller.sync_service(f"{NS}/web")
    assert env.cloud.load_balancer_for(f"{NS}/web") is None
    stored = env.service("web")
    assert stored is not None and not stored["metadata"].get("finalizers")


async def test_deleted_service_is_cleaned_up_through_the_finalizer(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("web"))
    async with _running(env):
        await wait_for(lambda: env.cloud.load_balancer_for(f"{NS}/web") is not None)
        await env.client.delete(kclient.SERVICES, "web", namespace=NS)
        await wait_for(lambda: env.service("web") is None)
    assert env.cloud.load_balancer_for(f"{NS}/web") is None
    assert env.recorder.reasons("web")[-2:] == [
        wellknown.EVENT_REASON_DELETING_LB,
        wellknown.EVENT_REASON_DELETED_LB,
    ]


async def test_service_deleted_while_down_is_cleaned_up_at_start() -> None:
    e = await start_env()
    svc = make_service("web", finalizers=[FIN])
    e.client.put_object(kclient.SERVICES, svc)
    stored = e.service("web")
    assert stored is not None
    await existing_lb(e, stored)
    await e.client.delete(kclient.SERVICES, "web", namespace=NS)  # while "ccm was down"
    async with _informers(e), _running(e):
        await wait_for(lambda: e.service("web") is None)
    assert e.cloud.load_balancer_for(f"{NS}/web") is None
    assert e.cloud_calls("delete") == [f"{NS}/web"]


async def test_delete_failure_keeps_the_finalizer_and_retries(env: Env) -> None:
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.sync_service(f"{NS}/web")
    env.cloud.inject_error("delete", CloudProviderError("api down"), times=1)
    await env.client.delete(kclient.SERVICES, "web", namespace=NS)
    await env.settle()
    with pytest.raises(service_controller.ServiceSyncError, match="failed to delete"):
        await env.controller.sync_service(f"{NS}/web")
    stored = env.service("web")
    assert stored is not None and stored["metadata"]["finalizers"] == [FIN]
    assert env.recorder.messages(wellknown.EVENT_REASON_SYNC_LB_FAILED) == [
        "Error syncing load balancer: failed to delete load balancer: api down"
    ]
    await env.controller.sync_service(f"{NS}/web")
    await env.settle()
    assert env.service("web") is None
    assert env.cloud.load_balancer_for(f"{NS}/web") is None


async def test_recreated_service_gets_its_old_load_balancer_deleted_first(env: Env) -> None:
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.sync_service(f"{NS}/web")
    old = env.service("web")
    assert old is not None
    old_lb = env.cloud.get_load_balancer_name(CLUSTER, ServiceView(old))
    env.client.remove_object(kclient.SERVICES, "web", NS)  # finalizer bypassed
    env.client.put_object(kclient.SERVICES, make_service("web"))  # same name, new UID
    await env.settle()
    env.cloud.clear_calls()
    await env.controller.sync_service(f"{NS}/web")
    new = env.service("web")
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]
    assert [c.method for c in env.cloud.calls] == ["delete", "create"]
    assert old_lb not in env.cloud.load_balancers
    assert list(env.cloud.load_balancers) == [
        env.cloud.get_load_balancer_name(CLUSTER, ServiceView(new))
    ]


async def test_finalizer_stripped_by_someone_else_still_deletes_the_lb(env: Env) -> None:
    await put(env, kclient.SERVICES, make_service("web"))
    async with _running(env):
        await wait_for(lambda: env.cloud.load_balancer_for(f"{NS}/web") is not None)
        env.client.remove_object(kclient.SERVICES, "web", NS)
        await wait_for(lambda: env.cloud.load_balancer_for(f"{NS}/web") is None)
    assert env.recorder.reasons("web")[-2:] == [
        wellknown.EVENT_REASON_DELETING_LB,
        wellknown.EVENT_REASON_DELETED_LB,
    ]


async def test_other_load_balancer_class_and_cluster_ip_are_never_touched(env: Env) -> None:
    await put(
        env,
        kclient.SERVICES,
        make_service("other", loadBalancerClass="other"),
        make_service("cip", "ClusterIP"),
    )
    async with _running(env):
        await asyncio.sleep(0.2)
    assert env.cloud.total_calls == 0
    assert env.client.writes() == []
    assert env.recorder.events == []


# --- TestProcessServiceDeletion ------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("none", id="If a non-existent service is deleted"),
        pytest.param("fail", id="If cloudprovided failed to delete the service"),
        pytest.param("ok", id="If delete was successful"),
    ],
)
async def test_process_service_deletion(env: Env, case: str) -> None:
    key = f"{NS}/external-balancer"
    if case != "none":
        svc = make_service("external-balancer")
        svc["metadata"]["uid"] = "u1"
        env.controller.cache[key] = svc
    if case == "fail":
        env.cloud.inject_error("delete", CloudProviderError("error Deleting the Loadbalancer"))
        with pytest.raises(CloudProviderError, match="error Deleting the Loadbalancer"):
            await env.controller.sync_service(key)
        assert key in env.controller.cache
        assert env.recorder.reasons() == [
            wellknown.EVENT_REASON_DELETING_LB,
            wellknown.EVENT_REASON_DELETE_LB_FAILED,
        ]
        return
    await env.controller.sync_service(key)
    assert key not in env.controller.cache
    assert env.cloud_calls("delete") == ([key] if case == "ok" else [])


# --- TestProcessServiceCreateOrUpdateK8sError / TestSyncService -----------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        pytest.param(409, "failed to update load balancer status: ", id="conflict error"),
        pytest.param(404, None, id="not found error"),
    ],
)
async def test_process_service_create_or_update_k8s_error(
    env: Env, code: int, message: str | None
) -> None:
    await put(env, kclient.SERVICES, make_service("svc-k8s-err", finalizers=[FIN]))
    env.client.inject_error("patch", "services", code, subresource="status")
    if message is None:
        await env.controller.sync_service(f"{NS}/svc-k8s-err")
        return
    with pytest.raises(service_controller.ServiceSyncError, match=message):
        await env.controller.sync_service(f"{NS}/svc-k8s-err")
    [event] = env.recorder.messages(wellknown.EVENT_REASON_SYNC_LB_FAILED)
    assert event.startswith("Error syncing load balancer: failed to update load balancer status")


@pytest.mark.parametrize(
    ("key", "error"),
    [
        pytest.param(
            "invalid/key/string",
            'unexpected key format: "invalid/key/string"',
            id="if an invalid service name is synced",
        ),
        pytest.param(f"{NS}/external-balancer", None, id="if valid service"),
    ],
)
async def test_sync_service(env: Env, key: str, error: str | None) -> None:
    if error is not None:
        with pytest.raises(ValueError, match=error):
            await env.controller.sync_service(key)
    else:
        await put(env, kclient.SERVICES, make_service("external-balancer"))
        await env.controller.sync_service(key)
    assert "invalid/key/string" not in env.controller.cache


# --- TestAddFinalizer / TestRemoveFinalizer / TestPatchStatus ------------------------------------


@pytest.mark.parametrize(
    ("finalizers", "add", "expect_patch"),
    [
        pytest.param([FIN], True, False, id="no-op add finalizer"),
        pytest.param([], True, True, id="add finalizer"),
        pytest.param([], False, False, id="no-op remove finalizer"),
        pytest.param([FIN], False, True, id="remove finalizer"),
    ],
)
async def test_finalizer_patches(
    env: Env, finalizers: list[str], add: bool, expect_patch: bool
) -> None:
    await put(env, kclient.SERVICES, make_service("test-patch-finalizer", finalizers=finalizers))
    svc = env.service("test-patch-finalizer")
    assert svc is not None
    env.client.clear_actions()
    if add:
        await env.controller._add_finalizer(svc)
    else:
        await env.controller._remove_finalizer(svc)
    assert bool(env.patches()) is expect_patch
    stored = env.service("test-patch-finalizer")
    assert stored is not None
    assert (FIN in (stored["metadata"].get("finalizers") or [])) is add


@pytest.mark.parametrize(
    ("current", "new", "expect_patch"),
    [
        pytest.param("8.8.8.8", {"ingress": [{"ip": "8.8.8.8"}]}, False, id="no-op add status"),
        pytest.param(None, {"ingress": [{"ip": "8.8.8.8"}]}, True, id="add status"),
        pytest.param(None, {}, False, id="no-op clear status"),
        pytest.param("8.8.8.8", {}, True, id="clear status"),
    ],
)
async def test_patch_status(
    env: Env, current: str | None, new: dict[str, Any], expect_patch: bool
) -> None:
    await put(env, kclient.SERVICES, make_service("test-patch-status", ingress=current))
    svc = env.service("test-patch-status")
    assert svc is not None
    env.client.clear_actions()
    previous = (svc.get("status") or {}).get("loadBalancer") or {}
    await env.controller._patch_status(svc, previous, new)
    assert bool(env.patches()) is expect_patch
    stored = env.service("test-patch-status")
    assert stored is not None
    assert ((stored.get("status") or {}).get("loadBalancer") or {}).get("ingress", []) == new.get(
        "ingress", []
    )


# --- node sync: TestUpdateNodesInExternalLoadBalancer & co ---------------------------------------


async def set_nodes(env: Env, nodes: Sequence[dict[str, Any]]) -> None:
    wanted = {n["metadata"]["name"] for n in nodes}
    for obj in env.client.list_objects(kclient.NODES):
        if obj["metadata"]["name"] not in wanted:
            env.client.remove_object(kclient.NODES, obj["metadata"]["name"])
    for n in nodes:
        stored = env.client.put_object(kclient.NODES, n)
        if n["metadata"].get("deletionTimestamp") and not stored["metadata"].get(
            "deletionTimestamp"
        ):
            env.client.put_object(kclient.NODES, n)  # a create never carries a deletionTimestamp
    await env.settle()


def update_calls(env: Env) -> dict[str, tuple[str, ...]]:
    """service key → the hosts of its load balancer, for every update call made."""
    out: dict[str, tuple[str, ...]] = {}
    for key in env.cloud_calls("update"):
        lb = env.cloud.load_balancer_for(key)
        out[key] = lb.nodes if lb is not None else ()
    return out


async def with_lbs(env: Env, services: Sequence[dict[str, Any] | None]) -> None:
    for svc in services:
        if svc is not None and helpers.wants_load_balancer(svc):
            await existing_lb(env, svc)


N123 = ("node1", "node2", "node3")


@pytest.mark.parametrize(
    ("services", "workers", "expected"),
    [
        pytest.param([], 1, set(), id="No services present: no calls should be made."),
        pytest.param(
            [make_service("s0", "ClusterIP"), make_service("s1", "NodePort")],
            2,
            set(),
            id="Services do not have external load balancers: no calls should be made.",
        ),
        pytest.param(
            [make_service("s0")],
            3,
            {"s0"},
            id="Services does have an external load balancer: one call should be made.",
        ),
        pytest.param(
            [make_service("s0"), make_service("s1"), make_service("s2")],
            4,
            {"s0", "s1", "s2"},
            id="Three services have an external load balancer: three calls.",
        ),
        pytest.param(
            [
                make_service("s0", "NodePort"),
                make_service("s1"),
                make_service("s3"),
                make_service("s4", "ClusterIP"),
            ],
            5,
            {"s1", "s3"},
            id="Two services have an external load balancer and two don't: two calls.",
        ),
        pytest.param(
            [make_service("s0"), None],
            6,
            {"s0"},
            id="One service has an external load balancer and one is nil: one call.",
        ),
        pytest.param(
            [make_service(s) for s in ("s0", "s1", "s3", "s4")],
            2,
            {"s0", "s1", "s3", "s4"},
            id="Four services have external load balancer with only 2 workers",
        ),
    ],
)
async def test_update_nodes_in_external_load_balancer(
    env: Env, services: list[dict[str, Any] | None], workers: int, expected: set[str]
) -> None:
    await set_nodes(env, [make_node(n) for n in N123])
    await with_lbs(env, services)
    retry = await env.controller.update_load_balancer_hosts(services, workers)
    assert retry == set()
    assert update_calls(env) == {f"{NS}/{s}": N123 for s in expected}


_n1, _n2, _n3 = (make_node(n) for n in N123)
_n2_not_ready = make_node("node2", ready=False)
_n2_tainted = make_node("node2", taints=[wellknown.TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER])
_n2_spurious = make_node("node2", taints=["Other"])
_n2_exclude = make_node("node2", labels={wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB: ""})
_n2_deleted = make_node("node2")
_n2_deleted["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
_n2_deleted["metadata"]["finalizers"] = ["example.com/hold"]


@pytest.mark.parametrize(
    ("initial", "changes", "expected_hosts"),
    [
        pytest.param([_n1, _n2, _n3], [([_n1, _n2, _n3], False)], None, id="No node changes"),
        pytest.param([_n1, _n2], [([_n1, _n2, _n3], False)], N123, id="1 new node gets added"),
        pytest.param(
            [_n1, _n2],
            [([_n1, _n2, _n3], True), ([_n1, _n2, _n3], False)],
            N123,
            id="1 new node gets added - with retries",
        ),
        pytest.param(
            [_n1, _n2, _n3], [([_n1, _n2_not_ready, _n3], False)], None, id="1 node goes NotReady"
        ),
        pytest.param(
            [_n1, _n2, _n3],
            [([_n1, _n2_tainted, _n3], False)],
            ("node1", "node3"),
            id="1 node gets Tainted",
        ),
        pytest.param(
            [_n1, _n2_not_ready, _n3], [([_n1, _n2, _n3], False)], None, id="1 node goes Ready"
        ),
        pytest.param(
            [_n1, _n2, _n3],
            [([_n1, _n2_exclude, _n3], False)],
            ("node1", "node3"),
            id="1 node get excluded",
        ),
        pytest.param(
            [_n1, _n2, _n3],
            [([_n1, _n2], False)],
            ("node1", "node2"),
            id="1 old node gets deleted",
        ),
        pytest.param(
            [_n1, _n2, _n3],
            [([_n1, _n2_deleted, _n3], False)],
            ("node1", "node3"),
            id="1 node marked for deletion",
        ),
        pytest.param(
            [_n1, _n2, _n3], [([_n1, _n2_spurious, _n3], False)], None, id="1 spurious node update"
        ),
    ],
)
async def test_node_changes_for_stable_node_set(
    env: Env,
    initial: list[dict[str, Any]],
    changes: list[tuple[list[dict[str, Any]], bool]],
    expected_hosts: tuple[str, ...] | None,
) -> None:
    services = [
        make_service("s0", externalTrafficPolicy="Local"),
        make_service("s1", externalTrafficPolicy="Local"),
        make_service("external-balancer"),
    ]
    await with_lbs(env, services)
    for svc in services:
        env.controller.last_synced_nodes[helpers.service_key(svc)] = list(initial)
    for nodes, fail in changes:
        await set_nodes(env, nodes)
        rule = (
            env.cloud.inject_error("update", CloudProviderError("error please")) if fail else None
        )
        retry = await env.controller.update_load_balancer_hosts(services, 3)
        if rule is not None:
            env.cloud.errors.remove(rule)
            assert retry == {helpers.service_key(s) for s in services}
    calls = env.cloud_calls("update")
    if expected_hosts is None:
        assert calls == []
        return
    assert sorted(calls) == sorted(helpers.service_key(s) for s in services)  # one call each
    if not any(fail for _, fail in changes):
        assert update_calls(env) == {helpers.service_key(s): expected_hosts for s in services}


_p1 = make_node("node1", provider_id="cumulus/1")
_p2 = make_node("node2", provider_id="cumulus/2")
_e1, _e2, _e3 = (make_node(n, provider_id="") for n in N123)


@pytest.mark.parametrize(
    ("last", "new", "expect_update"),
    [
        pytest.param([_e1, _e2], [_p1, _p2], True, id="Nodes with updated providerID"),
        pytest.param([_p1, _e2], [_p1, _e2], False, id="Nodes unchanged"),
        pytest.param([_p1, _e2], [_p1, _e3], True, id="Change node with empty providerID"),
    ],
)
async def test_nodes_not_equal(
    env: Env, last: list[dict[str, Any]], new: list[dict[str, Any]], expect_update: bool
) -> None:
    services = [make_service("s0"), make_service("s1")]
    await with_lbs(env, services)
    await set_nodes(env, new)
    for svc in services:
        env.controller.last_synced_nodes[helpers.service_key(svc)] = list(last)
    await env.controller.update_load_balancer_hosts(services, 5)
    expected = {f"{NS}/s0", f"{NS}/s1"} if expect_update else set()
    assert set(env.cloud_calls("update")) == expected


async def test_node_events_update_every_lb_and_only_on_relevant_changes(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("a"), make_service("b"))
    async with _running(env):
        await wait_for(lambda: env.cloud.call_count("create") == 2)
        await asyncio.sleep(0.1)
        env.cloud.clear_calls()
        await put(env, kclient.NODES, make_node("n2"))  # add
        await wait_for(lambda: env.cloud.call_count("update") == 2)
        lb = env.cloud.load_balancer_for(f"{NS}/a")
        assert lb is not None and lb.nodes == ("n1", "n2")
        env.cloud.clear_calls()
        await put(env, kclient.NODES, make_node("n2", taints=["other"]))  # not relevant
        await put(env, kclient.NODES, make_node("n2", ready=False))  # not relevant
        await asyncio.sleep(0.2)
        assert env.cloud.call_count("update") == 0
        await put(
            env,
            kclient.NODES,
            make_node("n2", labels={wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB: "true"}),
        )
        await wait_for(lambda: env.cloud.call_count("update") == 2)
        env.cloud.clear_calls()
        await put(env, kclient.NODES, make_node("n1", provider_id="fake://moved"))
        await wait_for(lambda: env.cloud.call_count("update") == 2)
        env.cloud.clear_calls()
        env.client.remove_object(kclient.NODES, "n1")  # delete
        await wait_for(lambda: env.cloud.call_count("update") == 2)
    lb = env.cloud.load_balancer_for(f"{NS}/b")
    assert lb is not None and lb.nodes == ()
    assert wellknown.EVENT_REASON_UPDATED_LB in env.recorder.reasons("b")
    assert env.recorder.reasons("b")[-1] == wellknown.EVENT_REASON_UNAVAILABLE_LB


async def test_node_changes_coalesce_into_one_node_sync_pass(env: Env) -> None:
    # Upstream's node queue holds one key: a burst of Node adds, relevant updates and deletes
    # queues one pass over the load balancers, not one pass per Node.
    await put(env, kclient.NODES, *(make_node(f"n{i}") for i in range(5)))
    await put(env, kclient.NODES, make_node("n1", provider_id="fake://moved"))
    env.client.remove_object(kclient.NODES, "n2")
    await env.settle()
    assert len(env.controller.node_queue) == 1
    assert await env.controller.node_queue.get() == service_controller.NODE_SYNC_KEY


@pytest.mark.parametrize(
    "change",
    ["being-deleted", "being-deleted-and-delete-failing", "no-longer-load-balancer", "gone"],
)
async def test_node_sync_leaves_services_being_deleted_or_not_wanting_an_lb_alone(
    env: Env, change: str
) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("keep"), make_service("leaving"))
    for name in ("keep", "leaving"):
        await env.controller.sync_service(f"{NS}/{name}")
    assert env.cloud.call_count("create") == 2
    leaving = env.service("leaving")
    assert leaving is not None and leaving["metadata"]["finalizers"] == [FIN]

    if change.startswith("being-deleted"):
        await env.client.delete(kclient.SERVICES, "leaving", namespace=NS)  # finalizer holds it
        await env.settle()
        if change == "being-deleted-and-delete-failing":
            # the delete path ran and failed: the controller's own copy is the deleting one now
            env.cloud.inject_error("delete", CloudProviderError("lb busy"))
            with pytest.raises(service_controller.ServiceSyncError, match="lb busy"):
                await env.controller.sync_service(f"{NS}/leaving")
            assert env.controller.cache[f"{NS}/leaving"]["metadata"]["deletionTimestamp"]
    elif change == "no-longer-load-balancer":
        leaving["spec"]["type"] = "ClusterIP"  # not yet seen by the service worker
        await put(env, kclient.SERVICES, leaving)
    else:
        env.client.remove_object(kclient.SERVICES, "leaving", NS)  # not yet seen either
        await env.settle()
    assert f"{NS}/leaving" in env.controller.cache

    env.cloud.clear_calls()
    await put(env, kclient.NODES, make_node("n2"))
    retry = await env.controller.sync_nodes()
    assert retry == set()
    assert env.cloud_calls("update") == [f"{NS}/keep"]
    assert f"{NS}/leaving" not in [c.key for c in env.cloud.calls]


async def test_failed_node_sync_falls_back_to_a_full_ensure(env: Env) -> None:
    await put(env, kclient.NODES, make_node("n1"))
    await put(env, kclient.SERVICES, make_service("a"))
    async with _running(env):
        await wait_for(lambda: env.cloud.call_count("create") == 1)
        env.cloud.inject_error("update", CloudProviderError("backend pool locked"), times=1)
        before = metrics.SERVICE_NODESYNC_ERROR._value.get()
        await put(env, kclient.NODES, make_node("n2"))
        await wait_for(lambda: env.cloud.call_count("create") == 2)
    lb = env.cloud.load_balancer_for(f"{NS}/a")
    assert lb is not None and lb.nodes == ("n1", "n2")
    [msg] = env.recorder.messages(wellknown.EVENT_REASON_UPDATE_LB_FAILED)
    assert msg == (
        "Error updating load balancer with new hosts [n1 n2] [node names limited, total number "
        "of nodes: 2], error: backend pool locked"
    )
    assert metrics.SERVICE_NODESYNC_ERROR._value.get() == before + 1


async def test_update_failure_of_a_vanished_lb_is_not_an_error(env: Env) -> None:
    svc = make_service("s0")
    await set_nodes(env, [_n1])
    retry = await env.controller.update_load_balancer_hosts([svc], 1)  # no LB in the cloud
    assert retry == set()
    assert env.cloud_calls("update") == [f"{NS}/s0"]
    assert env.recorder.events == []


# --- retries (TestServiceQueueDelay) -------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("error", "requeues", "delay"),
    [
        pytest.param(None, 0, None, id="processing successful"),
        pytest.param(CloudProviderError("something went wrong"), 1, 5.0, id="regular error"),
        pytest.param(RetryAfterError("LB create in progress", 42.0), 0, 42.0, id="retry error"),
    ],
)
async def test_service_queue_delay(
    env: Env, error: Exception | None, requeues: int, delay: float | None
) -> None:
    if error is not None:
        env.cloud.inject_error("create", error, times=1)
    await put(env, kclient.SERVICES, make_service("external-balancer"))
    key = f"{NS}/external-balancer"
    queue = env.controller.service_queue
    loop = asyncio.get_running_loop()
    assert await queue.get() == key  # queued by the informer's add event
    start = loop.time()
    try:
        await env.controller.process_service_key(key)
    finally:
        queue.done(key)
    assert queue.num_requeues(key) == requeues
    if delay is None:
        assert queue.waiting == 0
        return
    assert queue.waiting == 1
    while key not in queue:
        await asyncio.sleep(0.5)
    assert loop.time() - start == pytest.approx(delay, abs=0.6)


@pytest.mark.looptime
async def test_errors_back_off_five_ten_twenty_seconds_per_key(env: Env) -> None:
    env.cloud.inject_error("create", CloudProviderError("quota exceeded"), key=f"{NS}/bad")
    await put(env, kclient.SERVICES, make_service("bad"), make_service("good"))
    loop = asyncio.get_running_loop()
    times: list[float] = []
    env.cloud.call_hook = lambda call: (
        times.append(loop.time()) if call == ("create", f"{NS}/bad") else None
    )
    async with _running(env):
        await wait_for(lambda: len(times) >= 4, step=0.25, tries=1000)
    gaps = [round(b - a) for a, b in itertools.pairwise(times)]
    assert gaps[:3] == [5, 10, 20]
    assert env.cloud.load_balancer_for(f"{NS}/good") is not None  # others keep converging


@pytest.mark.looptime
async def test_retry_after_requeues_after_exactly_its_delay(env: Env) -> None:
    env.cloud.inject_error("create", RetryAfterError("provisioning", 30.0), times=2)
    await put(env, kclient.SERVICES, make_service("web"))
    loop = asyncio.get_running_loop()
    times: list[float] = []
    env.cloud.call_hook = lambda call: (
        times.append(loop.time()) if call.method == "create" else None
    )
    async with _running(env):
        await wait_for(lambda: env.cloud.load_balancer_for(f"{NS}/web") is not None, step=0.25)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    assert gaps == [30.0, 30.0]
    assert env.controller.service_queue.num_requeues(f"{NS}/web") == 0


@pytest.mark.looptime
async def test_cloud_calls_are_bounded_by_the_timeout(env: Env) -> None:
    env.cloud.set_latency("create", 1000.0)
    await put(env, kclient.SERVICES, make_service("web"))
    with pytest.raises(service_controller.ServiceSyncError, match="did not return within 30s"):
        await env.controller.sync_service(f"{NS}/web")
    [msg] = env.recorder.messages(wellknown.EVENT_REASON_SYNC_LB_FAILED)
    assert msg == (
        "Error syncing load balancer: failed to ensure load balancer: cloud provider call "
        "ensure_load_balancer did not return within 30s"
    )


async def test_concurrent_service_syncs_run_in_parallel() -> None:
    e = await start_env(workers=3)
    active = 0
    peak = 0
    gate = asyncio.Event()

    async def hook(call: Any) -> None:
        nonlocal active, peak
        if call.method != "create":
            return
        active += 1
        peak = max(peak, active)
        if peak >= 3:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        active -= 1

    e.cloud.call_hook = hook
    async with _informers(e):
        await put(e, kclient.SERVICES, *(make_service(f"s{i}") for i in range(3)))
        async with _running(e):
            await wait_for(lambda: len(e.cloud.load_balancers) == 3)
    assert peak == 3


# --- safety ---------------------------------------------------------------------------------------


async def test_provider_cannot_mutate_the_informer_cache() -> None:
    attempts: list[str] = []

    class Meddler(FakeCloud):
        async def ensure_load_balancer(
            self, cluster_name: str, service: ServiceView, nodes: Sequence[NodeView]
        ) -> LoadBalancerStatus:
            for target, mapping, key in (
                ("service spec", service.raw["spec"], "type"),
                ("service ports", service.spec["ports"][0], "port"),
                ("node labels", nodes[0].labels, "x"),
            ):
                try:
                    mapping[key] = "changed"  # type: ignore[index]
                except TypeError:
                    attempts.append(target)
            copy = service.to_dict()
            copy["spec"]["type"] = "ClusterIP"  # a private copy may be changed freely
            return await super().ensure_load_balancer(cluster_name, service, nodes)

    e = await start_env(Meddler())
    async with _informers(e):
        await put(e, kclient.NODES, make_node("n1"))
        await put(e, kclient.SERVICES, make_service("web"))
        before_svc = e.services.get(f"{NS}/web")
        before_node = e.nodes.get("n1")
        assert before_svc is not None and before_node is not None
        snapshot = (repr(before_svc), repr(before_node))
        await e.controller.sync_service(f"{NS}/web")
        assert attempts == ["service spec", "service ports", "node labels"]
        assert (repr(before_svc), repr(before_node)) == snapshot
        assert e.cloud.load_balancer_for(f"{NS}/web") is not None


def test_refuses_a_provider_without_load_balancers() -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(load_balancer=False))
    client = FakeKubeClient()
    with pytest.raises(errors.CCMError, match="does not support external load balancers"):
        service_controller.ServiceController(
            client=client,
            services=kinformer.Informer(client, kclient.SERVICES),
            nodes=kinformer.Informer(client, kclient.NODES),
            cloud=cloud,
            recorder=Recorder(),
        )


async def test_metrics_count_node_sync_updates(env: Env) -> None:
    before = metrics.SERVICE_LOADBALANCER_SYNC._value.get()
    svc = make_service("s0")
    await with_lbs(env, [svc])
    await set_nodes(env, [_n1])
    await env.controller.update_load_balancer_hosts([svc], 1)
    assert metrics.SERVICE_LOADBALANCER_SYNC._value.get() == before + 1
    text = metrics_text()
    for name in (
        "service_controller_loadbalancer_sync_total",
        "service_controller_nodesync_error_total",
        "service_controller_nodesync_latency_seconds_bucket",
        "service_controller_update_loadbalancer_host_latency_seconds_bucket",
    ):
        assert name in text


def metrics_text() -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.REGISTRY).decode()


# --- TestSlowNodeSync and the per-Service lock ---------------------------------------------------


async def _blocked_update_env(
    env: Env,
) -> tuple[list[dict[str, Any]], asyncio.Event, asyncio.Event]:
    services = [make_service("service1"), make_service("service2")]
    await set_nodes(env, [make_node("node1"), make_node("node2")])
    await put(env, kclient.SERVICES, *services)
    for svc in services:
        stored = env.service(svc["metadata"]["name"])
        assert stored is not None
        env.controller.cache[helpers.service_key(stored)] = stored
        await existing_lb(env, stored)
        env.controller.last_synced_nodes[helpers.service_key(stored)] = [make_node("node1")]
    entered, release = asyncio.Event(), asyncio.Event()

    async def hook(call: Any) -> None:
        if call.method == "update" and not entered.is_set():
            entered.set()
            await release.wait()

    env.cloud.call_hook = hook
    return [env.service("service1"), env.service("service2")], entered, release  # type: ignore[list-item]


async def test_slow_node_sync(env: Env) -> None:
    """A Service synced while a slow node sync is in flight is not updated again with stale
    hosts (upstream TestSlowNodeSync)."""
    _, entered, release = await _blocked_update_env(env)
    sync = asyncio.create_task(env.controller.sync_nodes(), name="test/sync-nodes")
    await entered.wait()
    [(_, blocked)] = [c for c in env.cloud.calls if c.method == "update"]
    other = f"{NS}/service2" if blocked == f"{NS}/service1" else f"{NS}/service1"
    await set_nodes(env, [make_node("node1"), make_node("node2"), make_node("node3")])
    await env.controller.sync_service(other)
    release.set()
    assert await sync == set()
    assert env.cloud_calls("update") == [blocked]
    assert env.cloud_calls("create") == [other]
    blocked_lb, other_lb = env.cloud.load_balancer_for(blocked), env.cloud.load_balancer_for(other)
    assert blocked_lb is not None and blocked_lb.nodes == ("node1", "node2")
    assert other_lb is not None and other_lb.nodes == ("node1", "node2", "node3")


async def test_ensure_waits_for_an_in_flight_update_of_the_same_service(env: Env) -> None:
    _, entered, release = await _blocked_update_env(env)
    sync = asyncio.create_task(env.controller.sync_nodes(), name="test/sync-nodes")
    await entered.wait()
    [(_, blocked)] = [c for c in env.cloud.calls if c.method == "update"]
    await set_nodes(env, [make_node("node1"), make_node("node2"), make_node("node3")])
    ensure = asyncio.create_task(env.controller.sync_service(blocked), name="test/ensure")
    await asyncio.sleep(0.1)
    assert env.cloud_calls("create") == []  # serialized behind the update
    release.set()
    await ensure
    await sync
    lb = env.cloud.load_balancer_for(blocked)
    assert lb is not None and lb.nodes == ("node1", "node2", "node3")  # the newest set wins


# --- TestNodeChangesInExternalLoadBalancer / TestProcessServiceCreateOrUpdate ---------------------


async def test_the_backend_set_is_computed_again_only_after_the_node_cache_changed(
    env: Env,
) -> None:
    """A node sync over every Service asks for the backends once per Service: one shared list
    while the Node cache stays the same, a fresh one after any Node change."""
    await set_nodes(env, [make_node("node1"), make_node("node2")])
    first = env.controller.backend_nodes()
    assert [n["metadata"]["name"] for n in first] == ["node1", "node2"]
    assert env.controller.backend_nodes() is first
    await set_nodes(env, [make_node("node1"), make_node("node2"), make_node("node3")])
    second = env.controller.backend_nodes()
    assert [n["metadata"]["name"] for n in second] == ["node1", "node2", "node3"]
    assert env.controller.backend_nodes() is second
    await set_nodes(env, [make_node("node2"), make_node("node3")])
    assert [n["metadata"]["name"] for n in env.controller.backend_nodes()] == ["node2", "node3"]


async def test_node_changes_in_external_load_balancer(env: Env) -> None:
    """One controller, successive node sets, different worker counts: every LB follows."""
    services = [make_service(s) for s in ("s0", "s1", "s3", "s4")]
    await with_lbs(env, services)
    keys = {helpers.service_key(s) for s in services}
    for case, names, workers in (
        ("only 1 node", ("node1",), 3),
        ("2 nodes", ("node1", "node2"), 1),
        ("4 nodes", ("node1", "node2", "node3", "node4"), 3),
    ):
        env.cloud.clear_calls()
        await set_nodes(env, [make_node(n) for n in names])
        retry = await env.controller.update_load_balancer_hosts(services, workers)
        assert retry == set(), case
        assert update_calls(env) == dict.fromkeys(keys, names), case


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("valid", id="If updating a valid service"),
        pytest.param("ip", id="If Updating Loadbalancer IP"),
    ],
)
async def test_process_service_create_or_update(env: Env, case: str) -> None:
    key = f"{NS}/sync-test-name"
    if case == "valid":
        await put(env, kclient.SERVICES, make_service("sync-test-name"))
        await env.controller.sync_service(key)
        assert key in env.controller.cache
        return
    await put(env, kclient.SERVICES, make_service("sync-test-name", loadBalancerIP="192.168.1.1"))
    await env.controller.sync_service(key)
    svc = env.service("sync-test-name")
    assert svc is not None
    svc["spec"]["loadBalancerIP"] = "192.168.1.11"
    env.client.put_object(kclient.SERVICES, svc)
    await env.settle()
    await env.controller.sync_service(key)
    assert env.controller.cache[key]["spec"]["loadBalancerIP"] == "192.168.1.11"
    lb = env.cloud.load_balancer_for(key)
    assert lb is not None and lb.ip == "192.168.1.11"
    stored = env.service("sync-test-name")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "192.168.1.11"}]


async def test_only_relevant_service_changes_are_queued(env: Env) -> None:
    queue = env.controller.service_queue
    await put(env, kclient.SERVICES, make_service("web"), make_service("cip", "ClusterIP"))
    assert f"{NS}/web" in queue and f"{NS}/cip" not in queue
    assert await queue.get() == f"{NS}/web"
    queue.done(f"{NS}/web")
    svc = env.service("web")
    assert svc is not None
    svc["metadata"]["labels"] = {"team": "a"}
    env.client.put_object(kclient.SERVICES, svc)
    await env.settle()
    assert f"{NS}/web" not in queue  # labels do not matter to a load balancer
    svc = env.service("web")
    assert svc is not None
    svc["metadata"]["annotations"] = {"example.com/idle-timeout": "60"}
    env.client.put_object(kclient.SERVICES, svc)
    await env.settle()
    assert f"{NS}/web" in queue  # any annotation may matter to a provider


@pytest.mark.looptime
async def test_a_hung_cloud_call_is_retried_until_the_cloud_answers(env: Env) -> None:
    env.cloud.set_latency("create", 1000.0)
    await put(env, kclient.SERVICES, make_service("web"))
    await env.controller.process_service_key(f"{NS}/web")
    assert env.controller.service_queue.num_requeues(f"{NS}/web") == 1
    assert env.cloud.load_balancer_for(f"{NS}/web") is None
    [msg] = env.recorder.messages(wellknown.EVENT_REASON_SYNC_LB_FAILED)
    assert "ensure_load_balancer did not return within 30s" in msg
    env.cloud.set_latency("create", 0.0)
    async with _running(env):
        await wait_for(lambda: env.cloud.load_balancer_for(f"{NS}/web") is not None, step=0.5)
