"""End to end: work never seen before is served ahead of resync work, on the real kube-apiserver
with the real ``ccm`` daemon and a slow fake cloud.

* 500 LoadBalancer Services that already show a load balancer are all re-ensured when the daemon
  starts (a resync backlog of minutes against a slow cloud); a Service created meanwhile gets its
  load balancer while most of them are still waiting.
* Nodes being address-refreshed, with InstancesBatch and a refresh as wide as the cluster (every
  request waits in the batch coalescer at once); a new Node is initialized while most of the
  refresh pass is still waiting.

The assertions count progress from the fake cloud's status file (load balancers ensured, Nodes
answered), never elapsed time; each test prints the measured figures. The Node count is
``CCM_E2E_FAIRNESS_NODES`` (default 1,000), e.g.
``CCM_E2E_FAIRNESS_NODES=5000 .venv/bin/pytest -m e2e tests/e2e/test_fairness_e2e.py -k node -s
--timeout=1800``.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from ccm import wellknown
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes, is_tainted

pytestmark = pytest.mark.e2e

OLD_SERVICES = 500
NODES = int(os.environ.get("CCM_E2E_FAIRNESS_NODES", "1000"))


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def _in_threads(fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in pool.map(fn, items):
            pass


def _wait(predicate: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout}s")


def test_a_new_service_gets_its_load_balancer_ahead_of_a_resync_backlog(
    k8s_admin: Any,
    kube_namespace: str,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
) -> None:
    core = _core(k8s_admin)
    ns = kube_namespace
    cloud = fake_cloud_files(statusInterval=0.2, latency={"create": 0.5})

    def service(name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "type": "LoadBalancer",
                "allocateLoadBalancerNodePorts": False,
                "selector": {"app": name},
                "ports": [{"name": "p", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        }

    def create_served(i: int) -> None:
        name = f"old{i}"
        core.create_namespaced_service(ns, service(name))
        ip = f"198.51.{100 + i // 250}.{i % 250 + 1}"
        core.patch_namespaced_service_status(
            name, ns, {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
        )

    _in_threads(create_served, range(OLD_SERVICES))

    def ensured() -> set[str]:
        status = cloud.status()
        calls = status.calls_by_key.get("create", {}) if status is not None else {}
        return {key for key in calls if key.startswith(f"{ns}/")}

    daemon_factory(cloud, "--controllers=service", "--concurrent-service-syncs=2")
    _wait(lambda: len(ensured()) >= 4, "the resync backlog is being worked on", 120)
    before = len(ensured())
    start = time.monotonic()
    core.create_namespaced_service(ns, service("fresh"))

    def fresh_ingress() -> bool:
        svc = core.read_namespaced_service("fresh", ns)
        return bool(svc.status.load_balancer and svc.status.load_balancer.ingress)

    _wait(fresh_ingress, "the new Service's load balancer", 300)
    took = time.monotonic() - start
    done = ensured() - {f"{ns}/fresh"}
    waiting = OLD_SERVICES - len(done)
    print(
        f"\nnew Service: load balancer {took:.1f}s after creation; resync backlog "
        f"{OLD_SERVICES - before} waiting when it was created, {waiting} of {OLD_SERVICES} "
        "still waiting when it got its load balancer"
    )
    assert f"{ns}/fresh" in ensured()
    assert waiting >= OLD_SERVICES // 2, (before, len(done))


def test_a_new_node_is_initialized_ahead_of_an_address_refresh_backlog(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    core = _core(k8s_admin)
    cloud = fake_cloud_files(
        statusInterval=0.2,
        capabilities={"instancesBatch": True},
        maxBatchSize=25,
        latency={"instance-metadata-batch": 2.0},
    )
    group = unique_name("refresh")
    names = [f"{group[:50].rstrip('-')}-{i}" for i in range(NODES)]

    def ip(i: int) -> str:
        return f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"

    for i, name in enumerate(names):
        cloud.state.add_instance(
            name,
            provider_id=f"fake://{name}",
            addresses=[{"type": "InternalIP", "address": ip(i)}],
        )
    fresh = unique_name("fresh")
    cloud.state.add_instance(fresh, provider_id=f"fake://{fresh}")
    cloud.write_state()

    def create_initialized(i: int) -> None:
        # Initialized already: providerID set, no taint, the cloud's addresses (so the refresh
        # finds nothing to write and only the cloud is slow).
        core.create_node(
            {
                "metadata": {
                    "name": names[i],
                    "labels": {wellknown.LABEL_HOSTNAME: names[i], "ccm.testing/group": group},
                },
                "spec": {"providerID": f"fake://{names[i]}"},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": ip(i)},
                        {"type": "Hostname", "address": names[i]},
                    ]
                },
            }
        )

    try:
        created = time.monotonic()
        _in_threads(create_initialized, range(NODES))
        print(f"\ncreated {NODES} initialized Nodes in {time.monotonic() - created:.0f}s")

        def answered() -> int:
            status = cloud.status()
            return status.batch_items.get("instance-metadata-batch", 0) if status else 0

        daemon_factory(
            cloud,
            "--controllers=cloud-node-controller",
            f"--concurrent-node-status-updates={NODES}",
            "--node-status-update-frequency=10m",  # one pass: the one at start-up
        )
        _wait(lambda: answered() > 0, "the address refresh is under way", 300)
        before = answered()
        start = time.monotonic()
        nodes.create(fresh)
        nodes.wait(fresh, lambda n: not is_tainted(n), timeout=300, what="initialized")
        took = time.monotonic() - start
        after = answered()
        print(
            f"\nnew Node: initialized {took:.1f}s after creation; address refresh of {NODES} "
            f"Nodes: {NODES - before} waiting when it was created, {NODES - after} still "
            "waiting when it was initialized"
        )
        assert after <= NODES // 2, (before, after)
    finally:
        core.delete_collection_node(label_selector=f"ccm.testing/group={group}")
