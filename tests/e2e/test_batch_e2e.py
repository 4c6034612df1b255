"""End to end: the optional InstancesBatch capability of the fake provider in the real ``ccm``
daemon, on the real kube-apiserver. Many tainted Nodes are initialized with far fewer metadata
cloud calls than Nodes, and a lifecycle sweep asks existence in batches; both asserted via the
fake's status file. Every daemon sees every Node of the shared cluster, so the fake answers
unknown names with ``defaultInstance`` (an existing, running instance)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes, is_tainted
from .test_nodelifecycle_e2e import exists, set_ready, wait_until

N = 24


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def batch_cloud(fake_cloud_files: Callable[..., FakeCloudFiles]) -> FakeCloudFiles:
    cloud = fake_cloud_files(capabilities={"instancesBatch": True}, maxBatchSize=50)
    cloud.state.set_default_instance()
    cloud.write_state()
    return cloud


def test_many_nodes_are_initialized_with_few_batched_metadata_calls(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    cloud = batch_cloud(fake_cloud_files)
    names = [unique_name(f"batch{i}") for i in range(N)]
    for name in names:
        nodes.create(name)
    daemon_factory(cloud, "--controllers=cloud-node-controller", "--concurrent-node-syncs=10")
    core = _core(k8s_admin)
    deadline = time.monotonic() + 60
    pending = set(names)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if is_tainted(core.read_node(n))}
        time.sleep(0.2)
    assert not pending, f"not initialized: {sorted(pending)}"
    node = core.read_node(names[0])
    assert node.spec.provider_id == f"fake://{names[0]}"
    status = cloud.status()
    assert status is not None
    batches = status.call_count("instance-metadata-batch")
    answered = status.batch_items.get("instance-metadata-batch", 0)
    assert status.call_count("instance-metadata") == 0
    assert answered >= N
    # 10 workers share batches: far fewer cloud calls than Nodes
    assert 1 <= batches <= N // 3, (batches, answered)


def test_a_lifecycle_sweep_asks_existence_in_batches(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    core = _core(k8s_admin)
    cloud = batch_cloud(fake_cloud_files)
    gone = unique_name("bgone")
    alive = [unique_name(f"balive{i}") for i in range(5)]
    cloud.state.add_instance(gone, exists=False)
    cloud.write_state()
    for name in [gone, *alive]:
        nodes.create(name, ready=False)
    daemon_factory(
        cloud, "--controllers=cloud-node-lifecycle-controller", "--node-monitor-period=1s"
    )
    wait_until(lambda: not exists(core, gone), what="node of the gone instance deleted")
    for name in alive:
        assert exists(core, name)
        set_ready(core, name, "True")  # never leave NotReady Nodes behind
    status = cloud.status()
    assert status is not None
    assert status.call_count("instance-exists-batch") >= 1
    assert status.call_count("instance-exists") == 0
    assert status.batch_items["instance-exists-batch"] >= 6
