"""End to end: the shared load balancer under many writers, on the real kube-apiserver with the
``ccm`` daemon (``--concurrent-service-syncs=10``) and the fake ARM server over HTTPS.

1. 20 LoadBalancer Services created at once all end with their own frontend, rule, probe, public
   IP and security rule destination on the one shared load balancer (no lost update); a port
   change follows; an internal Service lands on ``<cluster>-internal``; a Service with a
   malformed annotation gets a Warning event naming it and nothing in ARM. Deleting them leaves
   no load balancer, public IP, rule, probe or security rule.
2. The same with faults injected by the fake: 429 with ``Retry-After``, 5xx on a share of the
   calls, 412 (lost etag races) on a share of the load balancer and security group writes, and
   throttled VM reads: no Node is deleted, every Service converges with nothing lost or leaked,
   and ``/metrics`` shows the throttles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ccm_azure.annotations import INTERNAL, TCP_IDLE_TIMEOUT
from ccm_azure.testing.arm import FakeArm, serve_in_thread
from ccm_azure.testing.world import AzureWorld, azure_json

from ccm.testing import kubelet
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from ccm.testing.kubelet import wait

pytestmark = pytest.mark.e2e

CLUSTER = "e2e"
N = 20


def lb_body(arm: FakeArm, world: AzureWorld, name: str = CLUSTER) -> dict[str, Any] | None:
    return arm.get_resource(world.resource_id("Microsoft.Network", "loadBalancers", name))


def parts(body: dict[str, Any] | None, kind: str) -> set[str]:
    return {x["name"] for x in (body or {}).get("properties", {}).get(kind, [])}


def public_ips(arm: FakeArm) -> list[str]:
    return [k for k in arm.resources if "/publicipaddresses/" in k]


def frontend(uid: str) -> str:
    return "a" + uid.replace("-", "")[:31]


class Services:
    """The test's LoadBalancer Services in one namespace."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self.uids: dict[str, str] = {}

    def create(self, name: str, port: int = 80, annotations: dict[str, str] | None = None) -> None:
        svc = self.core.create_namespaced_service(
            self.namespace,
            {
                "metadata": {"name": name, "annotations": annotations or {}},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": name},
                    "ports": [{"port": port, "targetPort": 8080, "protocol": "TCP"}],
                },
            },
        )
        self.uids[name] = svc.metadata.uid

    def ingress(self, name: str) -> str | None:
        svc = self.core.read_namespaced_service(name, self.namespace)
        ingress = (svc.status.load_balancer and svc.status.load_balancer.ingress) or []
        return ingress[0].ip if ingress else None

    def delete(self, name: str) -> None:
        self.core.delete_namespaced_service(name, self.namespace)
        del self.uids[name]


def converged(arm: FakeArm, world: AzureWorld, services: Services, names: list[str]) -> bool:
    """Every Service of ``names`` has its ingress, its frontend, rule and probe on the shared
    load balancer, and its address in the security rule; nothing else is there."""
    body = lb_body(arm, world)
    want = {frontend(services.uids[n]) for n in names}
    if parts(body, "frontendIPConfigurations") != want:
        return False
    if parts(body, "loadBalancingRules") != {f"{f}-TCP-80" for f in want}:
        return False
    if parts(body, "probes") != {f"{f}-TCP-80" for f in want}:
        return False
    ips = [services.ingress(n) for n in names]
    if None in ips or len(public_ips(arm)) != len(names):
        return False
    rules = world.security_rules()
    if len(rules) != 1:
        return False
    (rule,) = rules.values()
    props = rule["properties"]
    got = props.get("destinationAddressPrefixes") or [props.get("destinationAddressPrefix")]
    return sorted(got) == sorted(ips)


def all_gone(arm: FakeArm, world: AzureWorld) -> bool:
    return (
        lb_body(arm, world) is None
        and lb_body(arm, world, f"{CLUSTER}-internal") is None
        and not public_ips(arm)
        and not world.security_rules()
    )


def scrape(daemon: Daemon, token: str, name: str, **labels: str) -> float:
    """The sum of the ``/metrics`` samples ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    code, body = daemon.get("/metrics", token=token)
    assert code == 200, body
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name and set(labels.items()) <= set(s.labels.items())
    )


def test_twenty_services_share_the_load_balancer_with_and_without_faults(
    control_plane: ControlPlane,
    kube_core: Any,
    tmp_path: Path,
    unique_name: Callable[..., str],
    kube_namespace: str,
) -> None:
    core = kube_core
    token = control_plane.metrics_reader_token("ccm-azure-e2e-metrics-reader")
    with serve_in_thread() as arm:
        world = AzureWorld(arm, resource_group="rg-lb")
        world.create_security_group()
        nodes = [unique_name("vm") for _ in range(3)]
        for i, name in enumerate(nodes):
            world.create_vm(name, zone=str(i % 2 + 1), private_ip=f"10.1.0.{i + 4}", public_ip=None)
            kubelet.register_node(core, name)
        config = tmp_path / "azure.json"
        config.write_text(azure_json(arm, resourceGroup="rg-lb", routeTableName=None))
        daemon = Daemon(
            [
                "--cloud-provider=azure",
                f"--cloud-config={config}",
                f"--kubeconfig={control_plane.kubeconfig_path}",
                f"--leader-elect-resource-name={unique_name('lease')}",
                "--node-monitor-period=1s",
                "--configure-cloud-routes=false",
                f"--cluster-name={CLUSTER}",
                "--concurrent-service-syncs=10",
                "-v",
                "2",
            ],
            log_dir=tmp_path,
            env={"SSL_CERT_FILE": str(arm.ca_path)},
        )
        services = Services(core, kube_namespace)

        began = time.monotonic()

        def settle(predicate: Callable[[], Any], what: str, timeout: float = 60) -> None:
            """``wait``, with the daemon's log and ARM's state when it fails."""
            try:
                wait(predicate, what, timeout)
                print(f"{time.monotonic() - began:6.1f}s {what}")
            except AssertionError as exc:
                body = lb_body(arm, world)
                state = {k: len(parts(body, k)) for k in ("frontendIPConfigurations",
                         "loadBalancingRules", "probes")}  # fmt: skip
                raise AssertionError(
                    f"{exc}; load balancer {state}, {len(public_ips(arm))} public IPs, "
                    f"rules {list(world.security_rules())}\n{daemon.tail(40)}"
                ) from None

        with daemon:
            for name in nodes:
                settle(lambda n=name: not kubelet.is_uninitialized(core.read_node(n)), "init")

            # 1. Twenty Services at once: each its own frontend, rule, probe and public IP.
            names = [unique_name(f"web{i}") for i in range(N)]
            start = time.monotonic()
            for name in names:
                services.create(name)
            settle(lambda: converged(arm, world, services, names), "20 Services converged")
            print(f"\n{N} Services converged in {time.monotonic() - start:.1f}s")
            (pool,) = lb_body(arm, world)["properties"]["backendAddressPools"]  # type: ignore[index]
            backends = pool["properties"]["loadBalancerBackendAddresses"]
            assert sorted(b["name"] for b in backends) == sorted(nodes)

            # A port change follows: its rule, probe and security rule move.
            moved = names[0]
            core.patch_namespaced_service(
                moved,
                kube_namespace,
                [{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}],
            )
            rule = f"{frontend(services.uids[moved])}-TCP-8080"
            settle(lambda: rule in parts(lb_body(arm, world), "loadBalancingRules"), "port moved")
            assert f"{frontend(services.uids[moved])}-TCP-80" not in parts(
                lb_body(arm, world), "loadBalancingRules"
            )
            settle(lambda: len(world.security_rules()) == 2, "a security rule for port 8080")

            # An internal Service lands on the internal load balancer, without a public IP.
            inner = unique_name("inner")
            services.create(inner, annotations={INTERNAL: "true"})
            settle(lambda: services.ingress(inner), "the internal Service's ingress")
            internal = lb_body(arm, world, f"{CLUSTER}-internal")
            assert parts(internal, "frontendIPConfigurations") == {frontend(services.uids[inner])}
            assert len(public_ips(arm)) == N

            # A malformed annotation: a Warning event naming it, nothing in ARM.
            bad = unique_name("bad")
            services.create(bad, annotations={TCP_IDLE_TIMEOUT: "1000"})

            def warned() -> bool:
                events = core.list_namespaced_event(
                    kube_namespace, field_selector=f"involvedObject.name={bad}"
                ).items
                return any(e.type == "Warning" and TCP_IDLE_TIMEOUT in e.message for e in events)

            settle(warned, "a Warning event naming the annotation")
            assert frontend(services.uids[bad]) not in parts(
                lb_body(arm, world), "frontendIPConfigurations"
            )

            # Deleting them all leaves nothing.
            for name in list(services.uids):
                services.delete(name)
            settle(lambda: all_gone(arm, world), "no load balancer, public IP or rule left")

            # 2. Faults: throttling, server errors and lost races on a share of the calls.
            arm.inject("GET", "/loadbalancers/", 429, retry_after="1", times=4, every=5)
            arm.inject("PUT", "/publicipaddresses/", 429, retry_after="1", times=3, every=4)
            arm.inject("PUT", "/loadbalancers/", 500, times=8, every=3)
            arm.inject("GET", "/publicipaddresses/", 503, times=8, every=4)
            arm.inject("PUT", "/loadbalancers/", 412, times=6, every=2, code="PreconditionFailed")
            arm.inject("PUT", "/networksecuritygroups/", 412, times=6, every=2)
            arm.inject("GET", "/virtualmachines", 429, retry_after="1", times=4, every=2)
            arm.inject("GET", "/virtualmachines", 500, times=6, every=3)
            for name in nodes:  # the lifecycle controller asks ARM about NotReady Nodes
                kubelet.set_ready(core, name, False)
            names = [unique_name(f"chaos{i}") for i in range(N)]
            start = time.monotonic()
            for name in names:
                services.create(name)
            settle(lambda: converged(arm, world, services, names), "converged under faults", 90)
            print(f"{N} Services converged under faults in {time.monotonic() - start:.1f}s")
            assert all(f.seen for f in arm.faults), [f for f in arm.faults if not f.seen]
            throttled = scrape(daemon, token, "ccm_cloud_api_throttled_requests_total")
            assert throttled >= 1, "the throttles are counted"
            lb_throttled = scrape(
                daemon, token, "ccm_cloud_api_throttled_requests_total",
                capability="load_balancer",
            )  # fmt: skip
            assert lb_throttled >= 1
            assert {n.metadata.name for n in core.list_node().items} >= set(nodes)
            for name in list(services.uids):
                services.delete(name)
            settle(lambda: all_gone(arm, world), "nothing leaked under faults")
            assert {n.metadata.name for n in core.list_node().items} >= set(nodes), "no Node lost"
