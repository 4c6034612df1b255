"""End to end: the cloud API budget in the real ``ccm`` daemon, on the real kube-apiserver,
against a fake cloud that answers calls beyond 10 per second (burst 5) with "429 Too Many
Requests" and a hint of when to come back (``RetryAfterError``).

Without ``--cloud-api-qps`` the daemon's first burst of Node initializations is throttled; the
throttled answers pause the instances capability (back-pressure) and every Node still initializes,
no Node is deleted, and ``/metrics`` shows the throttles and the waits. With a budget under the
cloud's limit nothing is throttled at all: the calls wait in ccm instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes, is_tainted
from .test_nodelifecycle_e2e import exists, set_ready

N = 20
NOT_READY = 3


def scrape(daemon: Daemon, token: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) → value."""
    code, body = daemon.get("/metrics", token=token)
    assert code == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str
) -> float:
    """The sum of ``name``'s samples whose labels include ``want``."""
    return sum(
        value for (n, labels), value in samples.items() if n == name and set(want.items()) <= labels
    )


def throttling_cloud(fake_cloud_files: Callable[..., FakeCloudFiles]) -> FakeCloudFiles:
    cloud = fake_cloud_files()
    cloud.state.set_default_instance()
    cloud.state.set_rate_limit(10, burst=5, reject=True)
    cloud.write_state()
    return cloud


def start_nodes(core: Any, nodes: Nodes, unique_name: Callable[..., str]) -> list[str]:
    names = [unique_name(f"budget{i}") for i in range(N)]
    for i, name in enumerate(names):
        nodes.create(name, ready=i >= NOT_READY)  # the lifecycle controller checks NotReady ones
    return names


def wait_initialized(core: Any, names: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if is_tainted(core.read_node(n))}
        time.sleep(0.2)
    assert not pending, f"not initialized: {sorted(pending)}"


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def test_a_throttling_cloud_slows_ccm_down_and_every_node_initializes(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
    metrics_token: str,
) -> None:
    core = _core(k8s_admin)
    cloud = throttling_cloud(fake_cloud_files)
    names = start_nodes(core, nodes, unique_name)
    daemon = daemon_factory(
        cloud,
        "--controllers=cloud-node-controller,cloud-node-lifecycle-controller",
        "--node-monitor-period=1s",
        "--concurrent-node-syncs=10",
    )
    wait_initialized(core, names)
    time.sleep(2)  # two more lifecycle sweeps of the NotReady Nodes against the throttling cloud
    assert all(exists(core, n) for n in names), "a Node was deleted"
    for name in names[:NOT_READY]:
        set_ready(core, name, "True")
    m = scrape(daemon, metrics_token)
    throttled = total(m, "ccm_cloud_api_throttled_requests_total", capability="instances")
    errors = total(
        m, "ccm_cloud_api_request_errors_total", capability="instances", reason="throttled"
    )
    assert throttled >= 1 and errors == throttled, (throttled, errors)
    # The throttled answers paused the instances capability: later calls waited in ccm.
    waited = total(m, "ccm_cloud_api_budget_wait_seconds_sum", capability="instances")
    assert waited > 0
    calls = total(
        m,
        "ccm_cloud_api_request_duration_seconds_count",
        capability="instances",
        method="instance_metadata",
    )
    assert calls >= N
    status = cloud.status()
    assert status is not None
    assert status.call_count("instance-metadata") == calls


def test_a_budget_under_the_clouds_limit_avoids_every_throttle(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
    metrics_token: str,
) -> None:
    core = _core(k8s_admin)
    cloud = throttling_cloud(fake_cloud_files)
    names = start_nodes(core, nodes, unique_name)
    daemon = daemon_factory(
        cloud,
        "--controllers=cloud-node-controller,cloud-node-lifecycle-controller",
        "--node-monitor-period=1s",
        "--concurrent-node-syncs=10",
        "--cloud-api-qps=8",
        "--cloud-api-burst=1",
    )
    daemon.wait_for_log("Cloud API budget: 8 calls/s, burst 1")
    wait_initialized(core, names)
    assert all(exists(core, n) for n in names), "a Node was deleted"
    for name in names[:NOT_READY]:
        set_ready(core, name, "True")
    m = scrape(daemon, metrics_token)
    assert total(m, "ccm_cloud_api_throttled_requests_total") == 0
    assert total(m, "ccm_cloud_api_budget_wait_seconds_sum", capability="instances") > 0
    assert total(m, "ccm_cloud_api_request_errors_total") == 0
    # The standard collectors and the build info are served by the daemon too.
    assert total(m, "process_resident_memory_bytes") > 0
    assert total(m, "process_cpu_seconds_total") > 0
    assert total(m, "python_gc_collections_total") > 0
    assert total(m, "kubernetes_build_info", compiler="cpython") == 1
