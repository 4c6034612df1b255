"""The cloud node lifecycle controller over the in-memory apiserver and the fake cloud.

The table cases of upstream ``controllers/nodelifecycle/node_lifecycle_controller_test.go``
(``Test_NodesDeleted``, ``Test_NodesShutdown``, ``Test_GetProviderID``) are ported as pytest.param
ids. Upstream's fake cloud answers from knobs (``ExistsByProviderID``, ``NodeShutdown``, ``ExtID``,
``ErrByProviderID`` …) whatever the providerID; ours resolves instances, so each knob becomes an
instance (present or absent, shut down or not) or an injected error, and the ported Nodes carry the
well-formed providerID ``fake://node0`` where upstream writes ``node0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ccm import metrics, wellknown
from ccm.cloudprovider import InstanceMetadata, Node
from ccm.controllers import nodelifecycle
from ccm.errors import CloudProviderError, InstanceNotFoundError, NotImplementedByProviderError
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCall, FakeCapabilities, FakeCloud, FakeInstance
from tests.unit.recorder import Recorder

PID = "fake://node0"
SHUTDOWN = {"key": wellknown.TAINT_SHUTDOWN, "effect": "NoSchedule"}
OTHER_TAINT = {"key": "example.com/dedicated", "value": "db", "effect": "NoExecute"}


@dataclass
class Env:
    client: FakeKubeClient
    cloud: FakeCloud
    informer: kinformer.Informer
    recorder: Recorder
    controller: nodelifecycle.CloudNodeLifecycleController

    def node(self, name: str) -> dict[str, Any] | None:
        return self.client.get_object(kclient.NODES, name)

    async def settle(self, name: str) -> None:
        """Wait until the informer has the stored version of node ``name`` (or its absence)."""
        for _ in range(500):
            stored = self.node(name)
            cached = self.informer.get(name)
            if stored is None and cached is None:
                return
            if (
                stored is not None
                and cached is not None
                and cached["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("informer did not catch up")

    async def add(self, node: dict[str, Any]) -> dict[str, Any]:
        self.client.put_object(kclient.NODES, node)
        await self.settle(node["metadata"]["name"])
        stored = self.node(node["metadata"]["name"])
        assert stored is not None
        return stored


def make_node(
    name: str = "node0",
    *,
    ready: str | None = "False",
    provider_id: str = "",
    taints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": "2012-01-01T00:00:00Z"},
        "spec": {},
        "status": {},
    }
    if provider_id:
        node["spec"]["providerID"] = provider_id
    if taints:
        node["spec"]["taints"] = taints
    if ready is not None:
        node["status"]["conditions"] = [
            {
                "type": "Ready",
                "status": ready,
                "lastHeartbeatTime": "2015-01-01T12:00:00Z",
                "lastTransitionTime": "2015-01-01T12:00:00Z",
            }
        ]
    return node


async def make_env(cloud: FakeCloud, **kwargs: Any) -> tuple[Env, asyncio.Task[None]]:
    client = FakeKubeClient()
    informer = kinformer.Informer(client, kclient.NODES)
    recorder = Recorder()
    controller = nodelifecycle.CloudNodeLifecycleController(
        client=client, nodes=informer, cloud=cloud, recorder=recorder, **kwargs
    )
    task = asyncio.create_task(informer.run(), name="test/informer")
    await informer.wait_for_sync(timeout=5)
    return Env(client, cloud, informer, recorder, controller), task


async def close_env(env: Env, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await env.client.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e, task = await make_env(FakeCloud())
    try:
        yield e
    finally:
        await close_env(e, task)


@pytest.fixture
async def env_v1() -> AsyncIterator[Env]:
    e, task = await make_env(FakeCloud(capabilities=FakeCapabilities(instances_v2=False)))
    try:
        yield e
    finally:
        await close_env(e, task)


# --- ported upstream tables --------------------------------------------------------------------

CloudSetup = Callable[[FakeCloud], None]


def exists(*, shutdown: bool = False) -> CloudSetup:
    def setup(cloud: FakeCloud) -> None:
        cloud.add_instance("node0", provider_id=PID, shutdown=shutdown)

    return setup


def gone() -> CloudSetup:
    return lambda cloud: None


def error(
    method: str, exc: BaseException | None = None, then: CloudSetup | None = None
) -> CloudSetup:
    def setup(cloud: FakeCloud) -> None:
        if then is not None:
            then(cloud)
        cloud.inject_error(method, exc or CloudProviderError("err!"))

    return setup


@dataclass(frozen=True)
class Case:
    v2: bool
    ready: str
    provider_id: str
    cloud: CloudSetup
    expect: str  # "deleted", "unchanged" or "tainted"


DELETED_CASES = [
    pytest.param(
        Case(False, "False", "", gone(), "deleted"), id="node is not ready and does not exist"
    ),
    pytest.param(
        Case(False, "False", PID, error("instance-exists-by-provider-id"), "unchanged"),
        id="node is not ready and provider returns err",
    ),
    pytest.param(
        Case(False, "False", PID, exists(), "unchanged"),
        id="node is not ready but still exists",
    ),
    pytest.param(
        Case(False, "Unknown", "", gone(), "deleted"),
        id="node ready condition is unknown, node doesn't exist",
    ),
    pytest.param(
        Case(False, "Unknown", "", exists(), "unchanged"),
        id="node ready condition is unknown, node exists",
    ),
    pytest.param(
        Case(False, "True", PID, gone(), "unchanged"),
        id="node is ready, but provider said it is deleted (maybe a bug in provider)",
    ),
    pytest.param(
        Case(True, "False", "", gone(), "deleted"),
        id="[instance2] node is not ready and does not exist",
    ),
    pytest.param(
        Case(True, "False", PID, error("instance-exists"), "unchanged"),
        id="[instancev2] node is not ready and provider returns err",
    ),
    pytest.param(
        Case(True, "False", PID, exists(), "unchanged"),
        id="[instancev2] node is not ready but still exists",
    ),
    pytest.param(
        Case(True, "Unknown", "", gone(), "deleted"),
        id="[instancev2] node ready condition is unknown, node doesn't exist",
    ),
    pytest.param(
        Case(True, "Unknown", "", exists(), "unchanged"),
        id="[instancev2] node ready condition is unknown, node exists",
    ),
    pytest.param(
        Case(True, "True", PID, gone(), "unchanged"),
        id="[instancev2] node is ready, but provider said it is deleted (maybe a bug in provider)",
    ),
]

SHUTDOWN_CASES = [
    pytest.param(
        Case(False, "False", PID, exists(shutdown=True), "tainted"),
        id="node is not ready and was shutdown, but exists",
    ),
    pytest.param(
        Case(False, "False", "", exists(shutdown=True), "tainted"),
        id="node with empty spec providerID is not ready and was shutdown, but exists",
    ),
    pytest.param(
        Case(False, "False", "", gone(), "deleted"),
        id="node with non-existing providerID (missing in cloud provider) gets deleted",
    ),
    pytest.param(
        Case(False, "False", "", error("instance-id", then=exists(shutdown=True)), "unchanged"),
        id="node with error when getting providerID does not have shutdown taint",
    ),
    pytest.param(
        Case(
            False,
            "False",
            "",
            error("instance-id", InstanceNotFoundError(), then=exists(shutdown=True)),
            "deleted",
        ),
        id="node with InstanceID returning InstanceNotFound gets deleted",
    ),
    pytest.param(
        Case(False, "False", "", error("instance-shutdown-by-provider-id"), "deleted"),
        id="node is not ready, but there is error checking if node is shutdown",
    ),
    pytest.param(
        Case(False, "False", "", gone(), "deleted"), id="node is not ready and is not shutdown"
    ),
    pytest.param(
        Case(False, "True", "", exists(shutdown=True), "unchanged"),
        id="node is ready but provider says it's shutdown (maybe a bug by provider)",
    ),
    pytest.param(
        Case(False, "Unknown", "", gone(), "deleted"),
        id="node is shutdown but provider says it does not exist",
    ),
]


@pytest.mark.parametrize("case", DELETED_CASES + SHUTDOWN_CASES)
async def test_monitor_nodes(case: Case) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=case.v2))
    case.cloud(cloud)
    env, task = await make_env(cloud)
    try:
        before = await env.add(make_node(ready=case.ready, provider_id=case.provider_id))
        env.client.clear_actions()

        await env.controller.monitor_nodes()

        after = env.node("node0")
        if case.expect == "deleted":
            assert after is None
            assert env.recorder.events == [
                (
                    "node0",
                    "Normal",
                    "DeletingNode",
                    "Deleting node node0 because it does not exist in the cloud provider",
                )
            ]
        elif case.expect == "unchanged":
            assert after == before
            assert env.client.writes() == []
            assert env.recorder.events == []
        else:
            assert after is not None
            assert after["spec"]["taints"] == [SHUTDOWN]
            assert after["status"] == before["status"]
            assert after["metadata"]["uid"] == before["metadata"]["uid"]
            assert [a.verb for a in env.client.writes()] == ["patch"]
            assert env.recorder.events == []
    finally:
        await close_env(env, task)


class _NoProviderIDCloud(FakeCloud):
    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        await super().instance_metadata(node)
        return InstanceMetadata(provider_id="")


def _v1(**instances: str) -> FakeCloud:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=False))
    for name, pid in instances.items():
        cloud.add_instance(name, provider_id=pid)
    return cloud


def _v2(**instances: str) -> FakeCloud:
    cloud = FakeCloud()
    for name, pid in instances.items():
        cloud.add_instance(name, provider_id=pid)
    return cloud


def _v1_error(exc: BaseException) -> FakeCloud:
    cloud = _v1(node0="fake://12345")
    cloud.inject_error("instance-id", exc)
    return cloud


@pytest.mark.parametrize(
    ("cloud", "provider_id", "expected", "error"),
    [
        pytest.param(
            _v1(), "fake://12345", "fake://12345", None, id="node initialized with provider ID"
        ),
        pytest.param(
            FakeCloud(),
            "fake://12345",
            "fake://12345",
            None,
            id="node initialized with provider ID with InstancesV2",
        ),
        pytest.param(
            _v1(node0="fake://12345"),
            "",
            "fake://12345",
            None,
            id="cloud implemented with Instances",
        ),
        pytest.param(
            _v2(node0="fake://12345"),
            "",
            "fake://12345",
            None,
            id="cloud implemented with InstancesV2",
        ),
        pytest.param(
            _NoProviderIDCloud(instances=[FakeInstance(name="node0")]),
            "",
            "",
            None,
            id="cloud implemented with InstancesV2 (without providerID)",
        ),
        pytest.param(
            _v1_error(InstanceNotFoundError()),
            "",
            "",
            "instance not found",
            id="cloud implemented with Instances with instance missing",
        ),
        pytest.param(
            _v1_error(RuntimeError("unknown error")),
            "",
            "",
            "failed to get instance ID from cloud provider: unknown error",
            id="cloud implemented with Instances with unknown error",
        ),
    ],
)
async def test_get_provider_id(
    cloud: FakeCloud, provider_id: str, expected: str, error: str | None
) -> None:
    node = Node(make_node(provider_id=provider_id))
    if error is None:
        assert await nodelifecycle.get_provider_id(cloud, node) == expected
    else:
        with pytest.raises(CloudProviderError) as info:
            await nodelifecycle.get_provider_id(cloud, node)
        assert str(info.value) == error
        if error == "instance not found":
            assert type(info.value) is InstanceNotFoundError


# --- ccm behaviour beyond the tables -----------------------------------------------------------


async def test_ready_node_without_shutdown_taint_costs_no_call(env: Env) -> None:
    await env.add(make_node(ready="True", provider_id=PID, taints=[OTHER_TAINT]))
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    assert env.client.actions == []
    assert env.cloud.total_calls == 0


async def test_a_sweep_over_many_nodes_lets_the_loop_run_between_slices(env: Env) -> None:
    """A sweep over thousands of cached Nodes must not hold the event loop for all of them: other
    tasks (Lease renewals, /healthz) run while it walks the cache."""
    for i in range(1200):
        env.client.put_object(kclient.NODES, make_node(f"n{i:04d}", ready="True", provider_id=PID))
    await env.settle("n1199")
    assert len(env.informer) == 1200
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker(), name="test/ticker")
    await asyncio.sleep(0)
    ticks = 0
    await env.controller.monitor_nodes()
    tick_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick_task
    assert ticks >= 2  # one step per 500 Nodes
    assert env.cloud.total_calls == 0


async def test_ready_node_loses_the_shutdown_taint_and_keeps_the_others(env: Env) -> None:
    stored = await env.add(
        make_node(ready="True", provider_id=PID, taints=[OTHER_TAINT, dict(SHUTDOWN)])
    )
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    after = env.node("node0")
    assert after is not None
    assert after["spec"]["taints"] == [OTHER_TAINT]
    assert [a.verb for a in env.client.writes()] == ["patch"]
    body = env.client.requests[-1].body
    assert body["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert env.cloud.total_calls == 0


async def test_only_the_shutdown_taint_with_its_effect_is_removed(env: Env) -> None:
    foreign = {"key": wellknown.TAINT_SHUTDOWN, "effect": "NoExecute"}  # same key, other effect
    await env.add(make_node(ready="True", provider_id=PID, taints=[foreign, dict(SHUTDOWN)]))
    await env.controller.monitor_nodes()
    after = env.node("node0")
    assert after is not None
    assert after["spec"]["taints"] == [foreign]
    await env.settle("node0")
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    assert env.client.actions == []


async def test_shutdown_taint_is_added_once_with_a_version_guard(env: Env) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    stored = await env.add(make_node(provider_id=PID, taints=[OTHER_TAINT]))
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    after = env.node("node0")
    assert after is not None
    assert after["spec"]["taints"] == [OTHER_TAINT, SHUTDOWN]
    assert (
        env.client.requests[-1].body["metadata"]["resourceVersion"]
        == (stored["metadata"]["resourceVersion"])
    )
    await env.settle("node0")
    env.client.clear_actions()
    await env.controller.monitor_nodes()  # already tainted in the cache: no write
    assert env.client.writes() == []


async def test_shutdown_taint_write_retries_a_conflict_with_a_fresh_read(env: Env) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    await env.add(make_node(provider_id=PID))
    env.client.inject_error("patch", "nodes", 409, times=1)
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    after = env.node("node0")
    assert after is not None
    assert after["spec"]["taints"] == [SHUTDOWN]
    assert [a.verb for a in env.client.actions] == ["patch", "get", "patch"]


async def test_shutdown_taint_gives_up_after_five_conflicts(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    await env.add(make_node(provider_id=PID))
    env.client.inject_error("patch", "nodes", 409)
    env.client.clear_actions()
    with caplog.at_level(logging.ERROR):
        await env.controller.monitor_nodes()
    assert [a.verb for a in env.client.actions].count("patch") == 5
    assert "failed to apply shutdown taint to node node0, it may have been deleted." in caplog.text


async def test_delete_is_guarded_by_the_node_uid_and_resource_version(env: Env) -> None:
    stored = await env.add(make_node(provider_id=PID))
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    assert env.node("node0") is None
    delete = [r for r in env.client.requests if r.verb == "delete"]
    assert len(delete) == 1
    assert delete[0].body["preconditions"] == {
        "uid": stored["metadata"]["uid"],
        "resourceVersion": stored["metadata"]["resourceVersion"],
    }


async def test_a_recreated_node_of_the_same_name_is_not_deleted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    old = await env.add(make_node(provider_id=PID))
    # The Node is deleted and re-created (new UID) after the cache saw the old one.
    env.client.remove_object(kclient.NODES, "node0")
    env.client.put_object(kclient.NODES, make_node(provider_id=PID))
    new = env.node("node0")
    assert new is not None
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    with caplog.at_level(logging.INFO):
        await env.controller.monitor_node(old)
    assert env.node("node0") == new
    assert "replaced meanwhile" in caplog.text
    assert wellknown.EVENT_REASON_DELETING_NODE_FAILED not in env.recorder.reasons()


async def test_failed_delete_records_a_warning(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.add(make_node(provider_id=PID))
    env.client.inject_error("delete", "nodes", 500, times=1)
    with caplog.at_level(logging.ERROR):
        await env.controller.monitor_nodes()
    assert env.node("node0") is not None
    assert env.recorder.reasons() == ["DeletingNode", "DeletingNodeFailed"]
    assert env.recorder.events[1][3].startswith("Failed deleting node node0: ")
    assert "unable to delete node 'node0'" in caplog.text


@pytest.mark.parametrize(
    ("v2", "method", "exc", "reason"),
    [
        pytest.param(True, "instance-exists", CloudProviderError("boom"), "boom", id="v2-error"),
        pytest.param(
            True,
            "instance-exists",
            InstanceNotFoundError("not found as an error"),
            "not found as an error",
            id="v2-instance-not-found-raised",
        ),
        pytest.param(
            False,
            "instance-exists-by-provider-id",
            InstanceNotFoundError("not found as an error"),
            "not found as an error",
            id="v1-instance-not-found-raised",
        ),
        pytest.param(
            False, "instance-id", CloudProviderError("boom"), "boom", id="v1-instance-id-error"
        ),
    ],
)
async def test_never_deletes_on_a_cloud_error(
    v2: bool, method: str, exc: BaseException, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=v2))
    cloud.inject_error(method, exc)
    env, task = await make_env(cloud)
    try:
        await env.add(make_node(provider_id="" if method == "instance-id" else PID))
        env.client.clear_actions()
        with caplog.at_level(logging.ERROR):
            await env.controller.monitor_nodes()
        assert env.node("node0") is not None
        assert env.client.writes() == []
        assert env.recorder.events == []
        assert "error checking if node node0 exists: " in caplog.text
        assert reason in caplog.text
    finally:
        await close_env(env, task)


async def test_never_deletes_on_an_unexpected_exception(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.cloud.inject_error("instance-exists", RuntimeError("provider bug"))
    await env.add(make_node(provider_id=PID))
    env.client.clear_actions()
    with caplog.at_level(logging.ERROR):
        await env.controller.monitor_nodes()
    assert env.node("node0") is not None
    assert env.client.writes() == []
    assert "provider bug" in caplog.text


@pytest.mark.looptime
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_never_deletes_on_a_cloud_timeout(v2: bool, caplog: pytest.LogCaptureFixture) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=v2))
    cloud.set_latency("instance-exists" if v2 else "instance-exists-by-provider-id", 30.0)
    env, task = await make_env(cloud, cloud_timeout=2.0)
    try:
        await env.add(make_node(provider_id=PID))
        env.client.clear_actions()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with caplog.at_level(logging.ERROR):
            await env.controller.monitor_nodes()
        assert loop.time() - start == pytest.approx(2.0, abs=0.1)
        assert env.node("node0") is not None
        assert env.client.writes() == []
        assert "error checking if node node0 exists: timed out" in caplog.text
    finally:
        await close_env(env, task)


async def test_shutdown_check_errors_leave_the_node_alone(env: Env) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    env.cloud.inject_error("instance-shutdown", CloudProviderError("boom"))
    await env.add(make_node(provider_id=PID))
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    assert env.client.writes() == []


@pytest.mark.parametrize(
    "exc",
    [InstanceNotFoundError(), NotImplementedByProviderError()],
    ids=["not-found", "not-implemented"],
)
async def test_v1_shutdown_not_implemented_or_not_found_means_running(
    env_v1: Env, exc: BaseException
) -> None:
    env_v1.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    env_v1.cloud.inject_error("instance-shutdown-by-provider-id", exc)
    await env_v1.add(make_node(provider_id=PID))
    env_v1.client.clear_actions()
    await env_v1.controller.monitor_nodes()
    assert env_v1.client.writes() == []
    assert env_v1.node("node0") is not None


async def test_v1_without_provider_id_looks_it_up_for_both_checks(env_v1: Env) -> None:
    env_v1.cloud.add_instance("node0", provider_id="fake://i-7", shutdown=True)
    await env_v1.add(make_node(provider_id=""))
    await env_v1.controller.monitor_nodes()
    node = env_v1.node("node0")
    assert node is not None
    assert node["spec"]["taints"] == [SHUTDOWN]
    assert env_v1.cloud.call_count("instance-id", "node0") == 2
    assert env_v1.cloud.call_count("instance-exists-by-provider-id", "fake://i-7") == 1
    assert env_v1.cloud.call_count("instance-shutdown-by-provider-id", "fake://i-7") == 1


async def test_malformed_provider_id_is_reported_and_not_deleted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    await env.add(make_node("bad", provider_id="not-a-provider-id"))
    await env.add(make_node("gone", provider_id="fake://gone"))
    env.cloud.add_instance("off", provider_id="fake://off", shutdown=True)
    await env.add(make_node("off", provider_id="fake://off"))
    with caplog.at_level(logging.ERROR):
        await env.controller.monitor_nodes()
        await env.settle("gone")
        await env.controller.monitor_nodes()
    assert env.node("bad") is not None
    assert env.node("gone") is None  # the rest of the cluster is reconciled
    off = env.node("off")
    assert off is not None
    assert off["spec"]["taints"] == [SHUTDOWN]
    warnings = [e for e in env.recorder.events if e[0] == "bad"]
    assert len(warnings) == 1  # once, not every sweep
    assert warnings[0][1:3] == ("Warning", "InvalidProviderID")
    assert "malformed provider ID 'not-a-provider-id'" in warnings[0][3]
    assert caplog.text.count("Not deleting node bad") == 1


# --- concurrency, periodic loop, metrics ------------------------------------------------------


@pytest.mark.looptime
async def test_cloud_calls_of_one_sweep_run_with_bounded_concurrency() -> None:
    in_flight = 0
    peak = 0

    async def hook(call: FakeCall) -> None:
        nonlocal in_flight, peak
        if call.method != "instance-exists":
            return
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(1.0)
        in_flight -= 1

    cloud = FakeCloud(call_hook=hook)
    env, task = await make_env(cloud, concurrency=10)
    try:
        for i in range(30):
            cloud.add_instance(f"n{i}", provider_id=f"fake://n{i}")
            env.client.put_object(kclient.NODES, make_node(f"n{i}", provider_id=f"fake://n{i}"))
        await env.settle("n29")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await env.controller.monitor_nodes()
        assert loop.time() - start == pytest.approx(3.0, abs=0.1)  # ceil(30/10) x 1 s, not 30 s
        assert peak == 10
        assert cloud.call_count("instance-exists") == 30
    finally:
        await close_env(env, task)


async def _wait_for(predicate: Callable[[], bool], step: float = 0.01) -> None:
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not met")


@pytest.mark.looptime
async def test_sweeps_never_overlap_and_slide_by_the_period() -> None:
    release = asyncio.Event()
    started: list[float] = []

    async def hook(call: FakeCall) -> None:
        if call.method == "instance-exists":
            started.append(asyncio.get_running_loop().time())
            if len(started) == 1:
                await release.wait()

    cloud = FakeCloud(call_hook=hook)
    cloud.add_instance("node0", provider_id=PID)
    env, task = await make_env(cloud, node_monitor_period=5.0)
    try:
        await env.add(make_node(provider_id=PID))
        run = asyncio.create_task(env.controller.run(), name="test/lifecycle")
        await _wait_for(lambda: len(started) == 1)
        t0 = started[0]
        await asyncio.sleep(60)  # twelve periods: the first sweep is still blocked
        assert len(started) == 1
        release.set()
        await _wait_for(lambda: len(started) == 3)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        # sliding: the next sweep starts one period after the previous one ENDED
        assert started[1] - (t0 + 60) == pytest.approx(5.0, abs=0.1)
        assert started[2] - started[1] == pytest.approx(5.0, abs=0.1)
    finally:
        await close_env(env, task)


@pytest.mark.looptime
async def test_run_sets_the_running_controllers_gauge(env: Env) -> None:
    gauge = metrics.RUNNING_MANAGED_CONTROLLERS.labels(
        "cloud-node-lifecycle", wellknown.COMPONENT_NAME
    )
    run = asyncio.create_task(env.controller.run(), name="test/lifecycle")
    await asyncio.sleep(1)
    assert gauge._value.get() == 1
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert gauge._value.get() == 0


@pytest.mark.looptime
async def test_periodic_loop_deletes_a_node_once_its_instance_goes(env: Env) -> None:
    env.cloud.add_instance("node0", provider_id=PID)
    await env.add(make_node(provider_id=PID))
    run = asyncio.create_task(env.controller.run(), name="test/lifecycle")
    await asyncio.sleep(12)
    assert env.node("node0") is not None
    env.cloud.remove_instance("node0")
    await _wait_for(lambda: env.node("node0") is None, step=0.5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert env.recorder.reasons() == ["DeletingNode"]


def test_refuses_a_provider_without_instances() -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=False, instances=False))
    with pytest.raises(Exception, match="does not support instances"):
        nodelifecycle.CloudNodeLifecycleController(
            client=FakeKubeClient(),
            nodes=kinformer.Informer(FakeKubeClient(), kclient.NODES),
            cloud=cloud,
            recorder=Recorder(),
        )


def test_the_manager_wires_the_controller() -> None:
    from ccm import names
    from ccm.app import manager

    spec = manager.default_controllers()[names.CLOUD_NODE_LIFECYCLE_CONTROLLER]
    assert spec.init is not None


@pytest.mark.looptime
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_a_hung_call_is_doubt_named_in_the_log_and_never_deletes(
    v2: bool, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=v2))
    call = "instance-exists" if v2 else "instance-exists-by-provider-id"
    cloud.set_latency(call, 3600.0)  # the instance is gone: an answer would delete the Node
    env, task = await make_env(cloud, cloud_timeout=2.0)
    try:
        await env.add(make_node(provider_id=PID))
        env.client.clear_actions()
        with caplog.at_level(logging.ERROR):
            for _ in range(3):
                await env.controller.monitor_nodes()
        assert env.node("node0") is not None
        assert env.client.writes() == []
        assert env.recorder.events == []
        name = call.replace("-", "_")
        assert (
            f"error checking if node node0 exists: timed out waiting for the cloud provider: "
            f"cloud provider call {name} did not return within 2s"
        ) in caplog.text
        # retried on every sweep; once the cloud answers "gone", the Node is deleted
        cloud.set_latency(call, 0.0)
        await env.controller.monitor_nodes()
        assert env.node("node0") is None
    finally:
        await close_env(env, task)


@pytest.mark.looptime
async def test_a_hung_shutdown_call_never_taints(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    env.cloud.set_latency("instance-shutdown", 3600.0)
    await env.add(make_node(provider_id=PID))
    env.client.clear_actions()
    with caplog.at_level(logging.ERROR):
        await env.controller.monitor_nodes()
    assert env.client.writes() == []
    assert "instance_shutdown did not return within" in caplog.text


@pytest.mark.looptime
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_a_late_gone_answer_after_an_ignored_cancellation_never_deletes(
    v2: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that sleeps past --cloud-call-timeout, catches the cancellation and then answers
    "does not exist": the answer is late, so it is doubt, never a delete."""
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=v2))
    call = "instance-exists" if v2 else "instance-exists-by-provider-id"

    async def stubborn(fake_call: FakeCall) -> None:
        if fake_call.method != call:
            return
        with contextlib.suppress(asyncio.CancelledError):  # the provider bug under test
            await asyncio.sleep(5)

    cloud.call_hook = stubborn
    env, task = await make_env(cloud, cloud_timeout=2.0)
    try:
        await env.add(make_node(provider_id=PID))  # no instance: the late answer is "gone"
        env.client.clear_actions()
        with caplog.at_level(logging.WARNING):
            await env.controller.monitor_nodes()
        assert env.node("node0") is not None
        assert env.client.writes() == []
        assert env.recorder.events == []
        name = call.replace("-", "_")
        assert f"cloud provider call {name} ignored its cancellation" in caplog.text
        assert f"cloud provider call {name} did not return within 2s" in caplog.text
    finally:
        await close_env(env, task)


# --- decisions re-checked after the cloud answered ------------------------------------------------


def turn_ready(env: Env, name: str) -> None:
    """The kubelet reports Ready (the apiserver's copy; the informer catches up later)."""
    node = env.node(name)
    assert node is not None
    node["status"]["conditions"][0]["status"] = "True"
    env.client.put_object(kclient.NODES, node)


def ready_during(env: Env, method: str, name: str = "node0", after: float = 1.0) -> None:
    """Make node ``name`` Ready ``after`` seconds into the cloud call ``method`` (which lasts as
    long as the fake's latency for it)."""

    async def hook(call: FakeCall) -> None:
        if call.method == method and call.key in (name, PID):
            await asyncio.sleep(after)
            turn_ready(env, name)

    env.cloud.call_hook = hook


@pytest.mark.looptime
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_a_node_that_turns_ready_during_a_slow_exists_call_is_not_deleted(
    v2: bool, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=v2))
    call = "instance-exists" if v2 else "instance-exists-by-provider-id"
    cloud.set_latency(call, 3.0)
    env, task = await make_env(cloud)  # no instance: the cloud answers "gone"
    try:
        await env.add(make_node(provider_id=PID))
        ready_during(env, call)
        env.client.clear_actions()
        with caplog.at_level(logging.INFO):
            await env.controller.monitor_nodes()
        after = env.node("node0")
        assert after is not None
        assert nodelifecycle.ready_status(after) == "True"
        assert [a.verb for a in env.client.actions] == ["get"]  # the fresh read, no delete
        assert env.recorder.events == []
        assert "not deleting node 'node0'" in caplog.text
        assert "it turned Ready meanwhile" in caplog.text
    finally:
        await close_env(env, task)


async def test_a_node_whose_provider_id_changed_meanwhile_is_not_deleted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    cached = await env.add(make_node(provider_id=PID))
    moved = env.node("node0")
    assert moved is not None
    moved["spec"]["providerID"] = "fake://node0-new"
    env.client.put_object(kclient.NODES, moved)
    with caplog.at_level(logging.INFO):
        await env.controller.monitor_node(cached)  # the answer is about fake://node0
    assert env.node("node0") is not None
    assert "its providerID changed meanwhile" in caplog.text
    assert env.recorder.events == []


async def test_a_node_that_changes_after_the_fresh_read_is_left_for_the_next_sweep(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await env.add(make_node(provider_id=PID))

    def bump_after_read(_req: Any) -> None:
        # the kubelet writes the Node between our GET and our DELETE
        node = env.node("node0")
        assert node is not None
        node["metadata"].setdefault("labels", {})["touched"] = "yes"
        env.client.put_object(kclient.NODES, node)

    real_get = env.client.get

    async def get_then_bump(res: kclient.Resource, name: str, **kw: Any) -> dict[str, Any]:
        obj = await real_get(res, name, **kw)
        bump_after_read(None)
        return obj

    env.client.get = get_then_bump  # type: ignore[method-assign]
    env.client.clear_actions()
    with caplog.at_level(logging.INFO):
        await env.controller.monitor_nodes()
    after = env.node("node0")
    assert after is not None  # the DELETE's resourceVersion precondition failed
    assert after["metadata"]["uid"] == stored["metadata"]["uid"]
    deletes = [a for a in env.client.actions if a.verb == "delete"]
    assert len(deletes) == 1  # no retry loop
    assert "changed meanwhile, deciding again on the next sweep" in caplog.text
    assert wellknown.EVENT_REASON_DELETING_NODE_FAILED not in env.recorder.reasons()
    # the next sweep decides afresh: still NotReady and gone, so it is deleted
    env.client.get = real_get  # type: ignore[method-assign]
    await env.settle("node0")
    await env.controller.monitor_nodes()
    assert env.node("node0") is None


@pytest.mark.looptime
async def test_a_node_that_turns_ready_during_a_slow_shutdown_call_is_not_tainted(
    env: Env,
) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    env.cloud.set_latency("instance-shutdown", 3.0)
    await env.add(make_node(provider_id=PID))
    ready_during(env, "instance-shutdown")
    await env.controller.monitor_nodes()
    after = env.node("node0")
    assert after is not None
    assert nodelifecycle.ready_status(after) == "True"
    assert not after["spec"].get("taints")


# --- the shutdown taint of a NotReady Node whose instance runs again --------------------------


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_not_ready_node_loses_the_shutdown_taint_once_its_instance_runs_again(
    v2: bool,
) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=v2))
    cloud.add_instance("node0", provider_id=PID, shutdown=False)
    env, task = await make_env(cloud)
    try:
        await env.add(make_node(provider_id=PID, taints=[OTHER_TAINT, dict(SHUTDOWN)]))
        await env.controller.monitor_nodes()
        after = env.node("node0")
        assert after is not None
        assert after["spec"]["taints"] == [OTHER_TAINT]
        assert nodelifecycle.ready_status(after) == "False"
        await env.settle("node0")
        env.client.clear_actions()
        await env.controller.monitor_nodes()  # nothing left to remove: no write
        assert env.client.writes() == []
    finally:
        await close_env(env, task)


async def test_not_ready_node_keeps_the_shutdown_taint_while_its_instance_is_shut_down(
    env: Env,
) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=True)
    await env.add(make_node(provider_id=PID, taints=[dict(SHUTDOWN)]))
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    assert env.client.writes() == []
    assert env.node("node0")["spec"]["taints"] == [SHUTDOWN]  # type: ignore[index]


async def test_not_ready_node_keeps_the_shutdown_taint_when_the_shutdown_check_fails(
    env: Env,
) -> None:
    env.cloud.add_instance("node0", provider_id=PID, shutdown=False)
    env.cloud.inject_error("instance-shutdown", CloudProviderError("boom"))
    await env.add(make_node(provider_id=PID, taints=[dict(SHUTDOWN)]))
    env.client.clear_actions()
    await env.controller.monitor_nodes()
    assert env.client.writes() == []
