"""End to end: the cloud node lifecycle controller in the real ``ccm`` daemon, with the fake
provider, on the real kube-apiserver, observed through the official ``kubernetes`` client.

Every daemon sees every Node of the shared cluster, so each fake cloud here answers unknown node
names with ``defaultInstance`` (an existing, running instance): only the Nodes a test marks gone
can be deleted. Nodes are made NotReady by patching ``status.conditions``; the ``nodes`` fixture
deletes them afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ccm import wellknown
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes

LIFECYCLE = "--controllers=cloud-node-lifecycle-controller"
FAST = "--node-monitor-period=1s"


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def set_ready(core: Any, name: str, status: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_node_status(
        name,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "reason": "KubeletReady" if status == "True" else "NodeStatusUnknown",
                        "message": "set by the test",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ]
            }
        },
    )


def exists(core: Any, name: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        core.read_node(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def events(core: Any, name: str, reason: str) -> list[Any]:
    items = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
    return [e for e in items.items if e.reason == reason]


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not met after {timeout}s")


def calls(cloud: FakeCloudFiles, method: str, key: str) -> int:
    status = cloud.status()
    return 0 if status is None else status.call_count(method, key)


def wait_calls(cloud: FakeCloudFiles, method: str, key: str, more: int, *, what: str) -> None:
    """Wait until ``more`` further calls of ``method`` for ``key`` reached the fake (sweeps ran)."""
    start = calls(cloud, method, key)
    wait_until(lambda: calls(cloud, method, key) >= start + more, what=what)


def has_shutdown_taint(node: Any) -> bool:
    return any(
        t.key == wellknown.TAINT_SHUTDOWN and t.effect == "NoSchedule"
        for t in node.spec.taints or []
    )


def lifecycle_cloud(fake_cloud_files: Callable[..., FakeCloudFiles]) -> FakeCloudFiles:
    cloud = fake_cloud_files()
    cloud.state.set_default_instance()  # every Node of other tests exists and runs
    cloud.write_state()
    return cloud


def test_not_ready_node_whose_instance_is_gone_is_deleted_with_an_event(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
    metrics_token: str,
) -> None:
    core = _core(k8s_admin)
    gone, alive, ready = unique_name("gone"), unique_name("alive"), unique_name("ready")
    cloud = lifecycle_cloud(fake_cloud_files)
    for name in (gone, alive, ready):
        cloud.state.add_instance(name)
    cloud.write_state()
    nodes.create(gone, ready=False)
    nodes.create(alive, ready=False)
    nodes.create(ready)
    daemon = daemon_factory(cloud, LIFECYCLE, FAST)
    wait_calls(cloud, "instance-exists", gone, 2, what="sweeps asked about the NotReady node")
    assert exists(core, gone)

    cloud.state.update_instance(gone, exists=False)
    cloud.state.update_instance(ready, exists=False)  # Ready: never asked, never deleted
    cloud.write_state()
    wait_until(lambda: not exists(core, gone), what="node of the deleted instance deleted")

    deleting = events(core, gone, wellknown.EVENT_REASON_DELETING_NODE)
    assert deleting, "no DeletingNode event"
    assert deleting[0].type == "Normal"
    assert deleting[0].message == (
        f"Deleting node {gone} because it does not exist in the cloud provider"
    )
    assert deleting[0].source.component == "cloud-node-lifecycle-controller"
    daemon.wait_for_log(f"deleting node since it is no longer present in cloud provider: {gone}")

    wait_calls(cloud, "instance-exists", alive, 2, what="more sweeps")
    assert exists(core, alive)
    assert exists(core, ready)
    assert calls(cloud, "instance-exists", ready) == 0
    assert not events(core, alive, wellknown.EVENT_REASON_DELETING_NODE)

    code, body = daemon.get("/metrics", token=metrics_token)
    assert code == 200
    assert (
        'running_managed_controllers{manager="cloud-controller-manager",'
        'name="cloud-node-lifecycle"} 1.0'
    ) in body


def test_stopped_instance_taints_the_node_until_it_is_ready_again(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    core = _core(k8s_admin)
    name = unique_name("stopped")
    cloud = lifecycle_cloud(fake_cloud_files)
    cloud.state.add_instance(name)
    cloud.write_state()
    nodes.create(name, ready=False)
    daemon_factory(cloud, LIFECYCLE, FAST)
    wait_calls(cloud, "instance-shutdown", name, 1, what="shutdown asked")
    before = nodes.get(name)
    assert not has_shutdown_taint(before)
    others = sorted(t.key for t in before.spec.taints or [])  # uninitialized, not-ready (admission)

    cloud.state.update_instance(name, shutdown=True)
    cloud.write_state()
    node = nodes.wait(name, has_shutdown_taint, timeout=30, what="shutdown taint")
    assert sorted(t.key for t in node.spec.taints) == sorted([*others, wellknown.TAINT_SHUTDOWN])

    set_ready(core, name, "True")
    node = nodes.wait(name, lambda n: not has_shutdown_taint(n), timeout=30, what="taint removed")
    assert sorted(t.key for t in node.spec.taints or []) == others  # only the shutdown one went
    assert exists(core, name)


def test_failing_or_slow_cloud_deletes_nothing_until_it_recovers(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    core = _core(k8s_admin)
    gone, alive = unique_name("gone"), unique_name("alive")
    cloud = lifecycle_cloud(fake_cloud_files)
    cloud.state.add_instance(gone, exists=False)  # really gone, but the cloud cannot say so yet
    cloud.state.add_instance(alive)
    cloud.state.inject_error("instance-exists", "cloud", message="cloud API is down")
    cloud.write_state()
    nodes.create(gone, ready=False)
    nodes.create(alive, ready=False)
    daemon = daemon_factory(cloud, LIFECYCLE, FAST, "--cloud-call-timeout=500ms")

    # 1. every existence call fails with an error
    wait_calls(cloud, "instance-exists", gone, 3, what="sweeps during the outage")
    assert exists(core, gone) and exists(core, alive)
    daemon.wait_for_log(f"error checking if node {gone} exists: cloud API is down")

    # 2. InstanceNotFound raised as an error (not a False answer) is doubt too
    cloud.state.clear_errors()
    cloud.state.inject_error("instance-exists", "instanceNotFound", message="lookup failed")
    cloud.write_state()
    wait_calls(cloud, "instance-exists", gone, 3, what="sweeps with InstanceNotFound errors")
    assert exists(core, gone) and exists(core, alive)
    daemon.wait_for_log(f"error checking if node {gone} exists: lookup failed")

    # 3. every existence call outlives --cloud-call-timeout
    cloud.state.clear_errors()
    cloud.state.set_latency("instance-exists", 5.0)
    cloud.write_state()
    wait_calls(cloud, "instance-exists", gone, 3, what="sweeps with a slow cloud")
    assert exists(core, gone) and exists(core, alive)
    daemon.wait_for_log(f"error checking if node {gone} exists: timed out")
    assert not events(core, gone, wellknown.EVENT_REASON_DELETING_NODE)

    # 4. recovery: the gone one is deleted, and only it
    cloud.state.clear_latency()
    cloud.write_state()
    wait_until(lambda: not exists(core, gone), what="gone node deleted after recovery")
    wait_calls(cloud, "instance-exists", alive, 2, what="more sweeps after recovery")
    assert exists(core, alive)


def test_malformed_provider_id_is_reported_and_the_rest_converges(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    core = _core(k8s_admin)
    bad, gone, stopped = unique_name("bad"), unique_name("gone"), unique_name("stopped")
    cloud = lifecycle_cloud(fake_cloud_files)
    cloud.state.add_instance(bad)
    cloud.state.add_instance(gone, exists=False)
    cloud.state.add_instance(stopped, shutdown=True)
    cloud.write_state()
    nodes.create(bad, ready=False)
    core.patch_node(bad, {"spec": {"providerID": "not-a-provider-id"}})
    nodes.create(gone, ready=False)
    nodes.create(stopped, ready=False)
    daemon = daemon_factory(cloud, LIFECYCLE, FAST)

    wait_until(lambda: not exists(core, gone), what="gone node deleted")
    nodes.wait(stopped, has_shutdown_taint, timeout=30, what="stopped node tainted")
    line = daemon.wait_for_log(f"Not deleting node {bad}")
    assert "malformed provider ID 'not-a-provider-id'" in line
    wait_until(
        lambda: bool(events(core, bad, wellknown.EVENT_REASON_INVALID_PROVIDER_ID)),
        what="InvalidProviderID event",
    )
    wait_calls(cloud, "instance-exists", stopped, 3, what="more sweeps")
    assert exists(core, bad)
    warning = events(core, bad, wellknown.EVENT_REASON_INVALID_PROVIDER_ID)
    assert len(warning) == 1 and warning[0].type == "Warning" and warning[0].count == 1
    assert not events(core, bad, wellknown.EVENT_REASON_DELETING_NODE)


def test_nodes_that_turn_ready_during_a_slow_cloud_answer_are_not_deleted(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """The cloud takes 3 s to answer "does not exist" (an instance still registering, a lagging
    inventory) while the kubelets report Ready: the answer is about Nodes that are NotReady no
    more, so none of them is deleted; a Node that stays NotReady is."""
    core = _core(k8s_admin)
    joining = [unique_name("joining") for _ in range(6)]
    gone = unique_name("gone")
    cloud = lifecycle_cloud(fake_cloud_files)
    for name in (*joining, gone):
        cloud.state.add_instance(name, exists=False)
    cloud.state.set_latency("instance-exists", 3.0)
    cloud.write_state()
    for name in (*joining, gone):
        nodes.create(name, ready=False)
    daemon = daemon_factory(cloud, LIFECYCLE, FAST)

    # The first sweep asks about all of them at once; while the answers are on their way, the
    # kubelets report Ready one after the other.
    wait_until(
        lambda: all(calls(cloud, "instance-exists", n) >= 1 for n in joining),
        what="the sweep asked about the joining nodes",
    )
    for name in joining:
        set_ready(core, name, "True")
        time.sleep(0.2)
    wait_until(lambda: not exists(core, gone), what="the NotReady node of the gone instance")
    deleted = [name for name in joining if not exists(core, name)]
    assert deleted == [], "Nodes that turned Ready during the cloud call were deleted"
    for name in joining:
        line = daemon.wait_for_log(f"not deleting node '{name}'")
        assert "it turned Ready meanwhile" in line
        assert not events(core, name, wellknown.EVENT_REASON_DELETING_NODE)


def test_restarted_instance_untaints_the_node_before_it_is_ready(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """The instance is started again but its kubelet is not back (yet): the Node, still NotReady,
    no longer claims a shut-down instance."""
    name = unique_name("restarted")
    cloud = lifecycle_cloud(fake_cloud_files)
    cloud.state.add_instance(name, shutdown=True)
    cloud.write_state()
    nodes.create(name, ready=False)
    daemon_factory(cloud, LIFECYCLE, FAST)
    nodes.wait(name, has_shutdown_taint, timeout=30, what="shutdown taint")

    cloud.state.update_instance(name, shutdown=False)
    cloud.write_state()
    node = nodes.wait(name, lambda n: not has_shutdown_taint(n), timeout=30, what="untainted")
    assert node.status.conditions[0].status == "False"
    assert exists(_core(k8s_admin), name)
