"""End to end: the service load-balancer controller of the real ``ccm`` daemon with the fake
provider, on the real kube-apiserver, observed through the official ``kubernetes`` client and the
fake's status file.

Every daemon of the e2e suite sees every Service and Node of the shared cluster: the Services here
live in the test's own namespace, the Nodes are uniquely named and deleted at the end, and every
assertion about load-balancer backends is scoped to this test's Nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from ccm import names, wellknown
from ccm.testing.daemon import Daemon
from ccm.testing.fake_cloud import REJECT_ANNOTATION, StatusLoadBalancer

from .conftest import FakeCloudFiles, Nodes

pytestmark = pytest.mark.e2e

SERVICE_EVENT_SOURCE = names.BY_NAME["service-lb-controller"].event_source

FIN = wellknown.FINALIZER_LOAD_BALANCER_CLEANUP
OTHER_FINALIZER = "example.com/keep"  # the namespace purge of the fixture strips it
CONTROLLERS = "--controllers=service,cloud-node"
CLOUD_CONFIG: dict[str, Any] = {
    "restoreFromStatus": True,
    "defaultInstance": {"instanceType": "fake.medium", "region": "region-1"},
}


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout}s")


class Services:
    """Creates and reads Services of one namespace with the official client."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(
        self,
        name: str,
        *,
        type_: str = "LoadBalancer",
        protocol: str = "TCP",
        annotations: Mapping[str, str] | None = None,
        finalizers: list[str] | None = None,
        **spec: Any,
    ) -> Any:
        body = {
            "metadata": {
                "name": name,
                "annotations": dict(annotations or {}),
                "finalizers": list(finalizers or []),
            },
            "spec": {
                "type": type_,
                "selector": {"app": name},
                "ports": [{"name": "p", "port": 80, "targetPort": 8080, "protocol": protocol}],
                **spec,
            },
        }
        return self.core.create_namespaced_service(self.ns, body)

    def get(self, name: str) -> Any | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.core.read_namespaced_service(name, self.ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        self.core.delete_namespaced_service(name, self.ns)

    def patch(self, name: str, body: Mapping[str, Any]) -> Any:
        return self.core.patch_namespaced_service(name, self.ns, body)

    def key(self, name: str) -> str:
        return f"{self.ns}/{name}"

    def ingress_ips(self, name: str) -> list[str]:
        svc = self.get(name)
        if svc is None or svc.status.load_balancer is None:
            return []
        return [i.ip for i in svc.status.load_balancer.ingress or []]

    def finalizers(self, name: str) -> list[str]:
        svc = self.get(name)
        return list((svc.metadata.finalizers if svc is not None else None) or [])

    def events(self, name: str) -> list[Any]:
        """The service controller's events on this Service, in the order they were created (names
        end in a hex time). Events of other components are left out: the apiserver's own
        ClusterIP repair controller may warn about a Service it raced with."""
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}"
        ).items
        ours = [e for e in items if e.source and e.source.component == SERVICE_EVENT_SOURCE]
        return sorted(ours, key=lambda e: int(e.metadata.name.rsplit(".", 1)[1], 16))

    def reasons(self, name: str) -> list[str]:
        return [e.reason for e in self.events(name)]


def _lbs(cloud: FakeCloudFiles, namespace: str) -> dict[str, list[StatusLoadBalancer]]:
    """service key → the fake cloud's load balancers for it, for Services of ``namespace``."""
    status = cloud.status()
    out: dict[str, list[StatusLoadBalancer]] = {}
    for lb in (status.load_balancers if status is not None else {}).values():
        if lb.service.startswith(f"{namespace}/"):
            out.setdefault(lb.service, []).append(lb)
    return out


def _lb(cloud: FakeCloudFiles, key: str) -> StatusLoadBalancer | None:
    status = cloud.status()
    return status.load_balancer_for(key) if status is not None else None


def _backends(cloud: FakeCloudFiles, key: str, mine: Iterable[str]) -> set[str] | None:
    lb = _lb(cloud, key)
    return None if lb is None else set(lb.nodes) & set(mine)


@pytest.fixture
def services(k8s_admin: Any, kube_namespace: str) -> Services:
    return Services(k8s_admin, kube_namespace)


def test_lb_service_lifecycle_with_backends_following_nodes(
    k8s_admin: Any,
    nodes: Nodes,
    services: Services,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """(1) create → finalizer, LB with the eligible Nodes, ingress, events in order; (2) Nodes
    added, excluded, tainted for autoscaler deletion → backends follow; (3) delete → LB gone,
    finalizer removed, Service gone."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    mine = [unique_name("lbnode") for _ in range(4)]
    for name in mine[:2]:
        nodes.create(name)
    cloud = fake_cloud_files(**CLOUD_CONFIG)
    daemon = daemon_factory(cloud, CONTROLLERS)
    key = services.key("web")
    services.create("web")

    # (1)
    _wait(lambda: services.ingress_ips("web"), "ingress in status")
    assert services.finalizers("web") == [FIN]
    lb = _lb(cloud, key)
    assert lb is not None
    assert services.ingress_ips("web") == [lb.ip]
    assert set(lb.nodes) >= set(mine[:2])
    assert [(p.protocol, p.port) for p in lb.ports] == [("TCP", 80)]
    svc = services.get("web")
    assert lb.ports[0].node_port == svc.spec.ports[0].node_port
    assert lb.service_uid == svc.metadata.uid
    events = _wait(
        lambda: (
            (e := services.events("web"))
            and wellknown.EVENT_REASON_ENSURED_LB in [x.reason for x in e]
            and e
        ),
        "events",
    )
    assert [e.reason for e in events][:2] == [
        wellknown.EVENT_REASON_ENSURING_LB,
        wellknown.EVENT_REASON_ENSURED_LB,
    ]
    assert all(e.type == "Normal" and e.source.component == "service-controller" for e in events)

    # (2) a new Node joins; one is excluded by label; one is tainted for autoscaler deletion
    nodes.create(mine[2])
    _wait(lambda: _backends(cloud, key, mine) == set(mine[:3]), "new node added to backends")
    core.patch_node(
        mine[0], {"metadata": {"labels": {wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB: ""}}}
    )
    _wait(lambda: _backends(cloud, key, mine) == {mine[1], mine[2]}, "excluded node removed")
    # A taint alone does not trigger a backend sync (upstream); the next node event applies it.
    core.patch_node(
        mine[1],
        {
            "spec": {
                "taints": [
                    {
                        "key": wellknown.TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER,
                        "value": "1700000000",
                        "effect": "NoSchedule",
                    }
                ]
            }
        },
    )
    nodes.create(mine[3])
    _wait(lambda: _backends(cloud, key, mine) == {mine[2], mine[3]}, "tainted node removed")
    core.delete_node(mine[2])
    _wait(lambda: _backends(cloud, key, mine) == {mine[3]}, "deleted node removed")
    assert wellknown.EVENT_REASON_UPDATED_LB in services.reasons("web")

    # (3)
    services.delete("web")
    _wait(lambda: services.get("web") is None, "service gone")
    assert _lb(cloud, key) is None
    assert services.reasons("web")[-2:] == [
        wellknown.EVENT_REASON_DELETING_LB,
        wellknown.EVENT_REASON_DELETED_LB,
    ]
    assert daemon.running


def test_service_deleted_while_ccm_is_down_is_cleaned_up_after_restart(
    nodes: Nodes,
    services: Services,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """(4) stop the daemon, delete a Service, start the daemon → the load balancer is cleaned up."""
    nodes.create(unique_name("lbnode"))
    cloud = fake_cloud_files(**CLOUD_CONFIG)
    first = daemon_factory(cloud, CONTROLLERS, name="ccm-1")
    services.create("web")
    services.create("stays")
    _wait(lambda: services.ingress_ips("web") and services.ingress_ips("stays"), "ingress")
    first.stop()
    services.delete("web")
    time.sleep(0.5)
    held = services.get("web")
    assert held is not None and held.metadata.deletion_timestamp is not None  # our finalizer
    assert _lb(cloud, services.key("web")) is not None

    daemon_factory(cloud, CONTROLLERS, name="ccm-2")
    _wait(lambda: services.get("web") is None, "service gone after restart")
    assert _lb(cloud, services.key("web")) is None
    assert set(_lbs(cloud, services.ns)) == {services.key("stays")}


def test_other_classes_and_cluster_ip_are_untouched_and_type_change_deletes_the_lb(
    nodes: Nodes,
    services: Services,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """(5) ``loadBalancerClass: other`` and ClusterIP Services are never touched; LoadBalancer →
    ClusterIP deletes the load balancer."""
    nodes.create(unique_name("lbnode"))
    cloud = fake_cloud_files(**CLOUD_CONFIG)
    daemon_factory(cloud, CONTROLLERS)
    services.create("other", loadBalancerClass="example.com/other")
    services.create("cip", type_="ClusterIP")
    # Another controller's finalizer: our strategic merge patches of services/status must keep it.
    services.create("web", finalizers=[OTHER_FINALIZER])
    _wait(lambda: services.ingress_ips("web"), "ingress of web")
    assert sorted(services.finalizers("web")) == sorted([OTHER_FINALIZER, FIN])  # order is free
    time.sleep(1.0)  # the untouched ones had every chance to be touched
    for name in ("other", "cip"):
        assert services.finalizers(name) == []
        assert services.ingress_ips(name) == []
        assert services.events(name) == []
        assert _lb(cloud, services.key(name)) is None
    status = cloud.status()
    assert status is not None
    for method in ("get", "create", "update", "delete"):
        for name in ("other", "cip"):
            assert status.call_count(method, services.key(name)) == 0

    services.patch("web", {"spec": {"type": "ClusterIP"}})
    _wait(lambda: _lb(cloud, services.key("web")) is None, "load balancer deleted")
    _wait(lambda: services.finalizers("web") == [OTHER_FINALIZER], "our finalizer removed")
    _wait(lambda: services.ingress_ips("web") == [], "ingress cleared")
    assert services.get("web").spec.type == "ClusterIP"
    assert services.reasons("web")[-2:] == [
        wellknown.EVENT_REASON_DELETING_LB,
        wellknown.EVENT_REASON_DELETED_LB,
    ]


def test_injected_faults_are_retried_and_leave_one_lb_per_service(
    k8s_admin: Any,
    nodes: Nodes,
    services: Services,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """(6) errors, RetryAfter and latency on ensure/update/delete: retries with the right delays,
    and after recovery exactly one load balancer per LoadBalancer Service."""
    mine = [unique_name("lbnode") for _ in range(2)]
    nodes.create(mine[0])
    cloud = fake_cloud_files(**CLOUD_CONFIG)
    ns = services.ns
    cloud.state.set_latency("*", 0.05)
    cloud.state.inject_error("create", "cloud", key=f"{ns}/err", message="quota exceeded", times=1)
    cloud.state.inject_error("create", "retryAfter", key=f"{ns}/later", retry_after=2, times=2)
    cloud.state.set_latency("create", 0.3)
    cloud.write_state()
    daemon_factory(cloud, CONTROLLERS, "--concurrent-service-syncs=2")
    names = ["err", "later", "slow", "plain"]
    started = time.monotonic()
    for name in names:
        services.create(name)
    _wait(lambda: all(services.ingress_ips(n) for n in names), "every Service has ingress", 60)

    status = cloud.status()
    assert status is not None
    assert status.call_count("create", f"{ns}/err") >= 2
    assert status.call_count("create", f"{ns}/later") >= 3
    assert time.monotonic() - started >= 4.0  # two RetryAfter(2s) waits, a 5 s backoff
    err_events = [e for e in services.events("err") if e.type == "Warning"]
    assert err_events[0].reason == wellknown.EVENT_REASON_SYNC_LB_FAILED
    assert "quota exceeded" in err_events[0].message
    later = [e for e in services.events("later") if e.type == "Warning"]
    assert later and later[0].reason == wellknown.EVENT_REASON_SYNC_LB_FAILED

    # update fails once: the node sync falls back to a full ensure of that Service
    cloud.state.inject_error("update", "cloud", key=f"{ns}/plain", message="pool busy", times=1)
    cloud.write_state()
    nodes.create(mine[1])
    for name in names:
        key = services.key(name)
        _wait(lambda key=key: _backends(cloud, key, mine) == set(mine), f"{key} backends")
    assert wellknown.EVENT_REASON_UPDATE_LB_FAILED in services.reasons("plain")

    # delete fails once, then succeeds after the backoff
    cloud.state.inject_error("delete", "cloud", key=f"{ns}/slow", message="locked", times=1)
    cloud.write_state()
    services.delete("slow")
    _wait(lambda: services.get("slow") is None, "slow deleted", 60)

    expected = {services.key(n) for n in names if n != "slow"}
    lbs = _wait(lambda: (lbs := _lbs(cloud, ns)) and set(lbs) == expected and lbs, "LBs")
    assert {k: len(v) for k, v in lbs.items()} == dict.fromkeys(expected, 1)  # none leaked


def test_rejected_service_gets_a_warning_and_others_keep_converging(
    nodes: Nodes,
    services: Services,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """(7) a Service the provider rejects (annotation, SCTP port) gets a Warning event with the
    provider's message; the other Services converge."""
    nodes.create(unique_name("lbnode"))
    cloud = fake_cloud_files(**CLOUD_CONFIG)
    daemon_factory(cloud, CONTROLLERS)
    services.create("bad", annotations={REJECT_ANNOTATION: "unsupported SKU: mega"})
    services.create("sctp", protocol="SCTP")
    services.create("good")
    _wait(lambda: services.ingress_ips("good"), "good converged")

    def warning(name: str) -> Any:
        for e in services.events(name):
            if e.type == "Warning" and e.reason == wellknown.EVENT_REASON_SYNC_LB_FAILED:
                return e
        return None

    bad = _wait(lambda: warning("bad"), "warning on bad")
    assert bad.message == (
        "Error syncing load balancer: failed to ensure load balancer: unsupported SKU: mega"
    )
    sctp = _wait(lambda: warning("sctp"), "warning on sctp")
    assert "do not support protocol SCTP" in sctp.message
    for name in ("bad", "sctp"):
        assert services.ingress_ips(name) == []
        assert services.finalizers(name) == [FIN]  # added before the cloud call, as upstream
        assert _lb(cloud, services.key(name)) is None

    # fixing the annotation lets it converge; deleting the SCTP one removes it cleanly
    services.patch("bad", {"metadata": {"annotations": {REJECT_ANNOTATION: None}}})
    _wait(lambda: services.ingress_ips("bad"), "bad converged after the fix", 60)
    services.delete("sctp")
    _wait(lambda: services.get("sctp") is None, "sctp deleted")
    assert set(_lbs(cloud, services.ns)) == {services.key("good"), services.key("bad")}
