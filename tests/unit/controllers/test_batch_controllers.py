"""The node and node-lifecycle controllers with the optional InstancesBatch capability of the fake
cloud: same outcomes as the single-call path, far fewer cloud calls, per-Node errors per Node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from ccm import wellknown
from ccm.cloudprovider import Node, NodeAddress
from ccm.controllers import node as node_controller
from ccm.controllers import nodelifecycle
from ccm.errors import CloudProviderError, InstanceNotFoundError
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCall, FakeCapabilities, FakeCloud
from tests.unit.controllers.test_node import make_node as make_tainted_node
from tests.unit.controllers.test_nodelifecycle import make_node as make_lifecycle_node
from tests.unit.recorder import Recorder

SHUTDOWN = {"key": wellknown.TAINT_SHUTDOWN, "effect": "NoSchedule"}


def batch_cloud(*, batch: bool = True, max_batch_size: int = 100, **caps: bool) -> FakeCloud:
    return FakeCloud(
        capabilities=FakeCapabilities(instances_batch=batch, **caps), max_batch_size=max_batch_size
    )


@dataclass
class Env:
    client: FakeKubeClient
    cloud: FakeCloud
    informer: kinformer.Informer
    recorder: Recorder

    def node(self, name: str) -> dict[str, Any] | None:
        return self.client.get_object(kclient.NODES, name)

    async def put(self, *nodes: dict[str, Any]) -> None:
        for node in nodes:
            self.client.put_object(kclient.NODES, node)
        for _ in range(500):
            if all(
                (cached := self.informer.get(n["metadata"]["name"])) is not None
                and cached["metadata"]["resourceVersion"]
                == self.client.get_object(kclient.NODES, n["metadata"]["name"])["metadata"][  # type: ignore[index]
                    "resourceVersion"
                ]
                for n in nodes
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("informer did not catch up")


@asynccontextmanager
async def make_env(cloud: FakeCloud) -> AsyncIterator[Env]:
    client = FakeKubeClient()
    informer = kinformer.Informer(client, kclient.NODES)
    task = asyncio.create_task(informer.run(), name="test/informer")
    await informer.wait_for_sync(timeout=5)
    try:
        yield Env(client, cloud, informer, Recorder())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()


def node_ctrl(env: Env, **kwargs: Any) -> node_controller.CloudNodeController:
    return node_controller.CloudNodeController(
        client=env.client, nodes=env.informer, cloud=env.cloud, recorder=env.recorder, **kwargs
    )


def lifecycle_ctrl(env: Env, **kwargs: Any) -> nodelifecycle.CloudNodeLifecycleController:
    return nodelifecycle.CloudNodeLifecycleController(
        client=env.client, nodes=env.informer, cloud=env.cloud, recorder=env.recorder, **kwargs
    )


def addr(t: str, a: str) -> NodeAddress:
    return NodeAddress(type=t, address=a)


async def initialize_all(env: Env, names: Sequence[str], **kwargs: Any) -> None:
    controller = node_ctrl(env, **kwargs)
    run = asyncio.create_task(controller.run())
    await env.put(*(make_tainted_node(n) for n in names))
    while any((env.node(n) or {}).get("spec", {}).get("taints") for n in names):
        await asyncio.sleep(0.1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


# --- node controller --------------------------------------------------------------------------


@pytest.mark.looptime
async def test_node_initialization_coalesces_metadata_calls_with_the_same_outcome() -> None:
    names = [f"node{i}" for i in range(8)]
    outcomes: dict[bool, Any] = {}
    for batch in (False, True):
        cloud = batch_cloud(batch=batch)
        for i, name in enumerate(names):
            cloud.add_instance(
                name, instance_type="m5.large", zone="z1", region="r1",
                addresses=[addr("InternalIP", f"10.0.0.{i + 1}")],
            )  # fmt: skip
        async with make_env(cloud) as env:
            await initialize_all(env, names, workers=8)
            nodes = {n: env.node(n) for n in names}
            outcomes[batch] = (
                {
                    n: (
                        node["spec"],  # type: ignore[index]
                        node["metadata"]["labels"],  # type: ignore[index]
                        node["status"]["addresses"],  # type: ignore[index]
                    )
                    for n, node in nodes.items()
                },
                sorted(env.recorder.events),
                sorted((a.verb, a.subresource or "", a.name) for a in env.client.writes()),
            )
            if batch:
                assert cloud.call_count("instance-metadata") == 0
                assert 1 <= cloud.call_count("instance-metadata-batch") < len(names) / 2
                assert cloud.batch_items["instance-metadata-batch"] == len(names)
            else:
                assert cloud.call_count("instance-metadata") == len(names)
    assert outcomes[True] == outcomes[False]


@pytest.mark.looptime
async def test_a_per_node_batch_error_fails_only_that_node() -> None:
    cloud = batch_cloud()
    for name in ("a", "b", "c"):
        cloud.add_instance(name, zone="z")
    cloud.inject_error("instance-metadata", InstanceNotFoundError("gone"), key="b")
    async with make_env(cloud) as env:
        controller = node_ctrl(env, workers=3)
        await env.put(*(make_tainted_node(n) for n in ("a", "b", "c")))
        results = await asyncio.gather(
            *(controller.sync_node(n) for n in ("a", "b", "c")), return_exceptions=True
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], node_controller.NodeInitializationError)
        assert cloud.call_count("instance-metadata-batch") == 1
        assert [e[0] for e in env.recorder.events if e[2] == "FailedToInitializeNode"] == ["b"]
        [failed] = [e[3] for e in env.recorder.events if e[2] == "FailedToInitializeNode"]
        assert "failed to get instance metadata for node b: gone" in failed
        assert not env.node("a")["spec"].get("taints")  # type: ignore[index]
        assert env.node("b")["spec"]["taints"]  # type: ignore[index]


@pytest.mark.looptime
async def test_a_hung_batch_call_times_out_for_every_waiter() -> None:
    cloud = batch_cloud()
    for name in ("a", "b"):
        cloud.add_instance(name, zone="z")
    cloud.set_latency("instance-metadata-batch", 3600)
    async with make_env(cloud) as env:
        controller = node_ctrl(env, workers=2, cloud_timeout=5)
        await env.put(*(make_tainted_node(n) for n in ("a", "b")))
        results = await asyncio.gather(
            *(controller.sync_node(n) for n in ("a", "b")), return_exceptions=True
        )
        assert all(isinstance(r, Exception) for r in results)
        messages = [e[3] for e in env.recorder.events]
        assert (
            messages
            == [
                "Failed to initialize node with cloud provider: cloud provider call "
                "instance_metadata_batch did not return within 5s"
            ]
            * 2
        )
        assert cloud.call_count("instance-metadata-batch") == 1


@pytest.mark.looptime
async def test_address_refresh_uses_batches_of_max_size() -> None:
    cloud = batch_cloud(max_batch_size=4)
    names = [f"n{i}" for i in range(10)]
    for i, name in enumerate(names):
        cloud.add_instance(name, addresses=[addr("InternalIP", f"10.1.0.{i + 1}")])
    async with make_env(cloud) as env:
        await env.put(*(make_tainted_node(n, tainted=False) for n in names))
        await node_ctrl(env, status_update_workers=10).update_node_status()
        for i, name in enumerate(names):
            assert env.node(name)["status"]["addresses"][0]["address"] == f"10.1.0.{i + 1}"  # type: ignore[index]
        assert cloud.call_count("instance-metadata-batch") == 3  # 4 + 4 + 2
        assert cloud.call_count("instance-metadata") == 0


@pytest.mark.looptime
async def test_batch_is_not_used_without_instances_v2() -> None:
    cloud = batch_cloud(instances_v2=False)
    cloud.add_instance("a", zone="z")
    async with make_env(cloud) as env:
        await env.put(make_tainted_node("a"))
        await node_ctrl(env).sync_node("a")
        assert not env.node("a")["spec"].get("taints")  # type: ignore[index]
        assert cloud.call_count("instance-metadata-batch") == 0


# --- node lifecycle controller ------------------------------------------------------------------


@pytest.mark.looptime
async def test_lifecycle_sweep_asks_in_chunks_with_single_call_semantics() -> None:
    cloud = batch_cloud(max_batch_size=3)
    nodes = []
    for i in range(7):  # 0,1: gone; 2,3: stopped; 4,5,6: running
        name = f"n{i}"
        pid = f"fake://{name}"
        if i >= 2:
            cloud.add_instance(name, provider_id=pid, shutdown=i in (2, 3))
        nodes.append(make_lifecycle_node(name, provider_id=pid))
    nodes.append(make_lifecycle_node("ready", ready="True", provider_id="fake://ready"))
    async with make_env(cloud) as env:
        await env.put(*nodes)
        env.client.clear_actions()
        await lifecycle_ctrl(env).monitor_nodes()
        assert env.node("n0") is None and env.node("n1") is None
        for name in ("n2", "n3"):
            assert SHUTDOWN in env.node(name)["spec"]["taints"]  # type: ignore[index]
        for name in ("n4", "n5", "n6", "ready"):
            assert not (env.node(name) or {}).get("spec", {}).get("taints")
        assert cloud.call_count("instance-exists-batch") == 3  # 7 NotReady Nodes / 3
        # one shutdown batch per chunk holding existing Nodes: [n2], [n3, n4, n5], [n6]
        assert cloud.call_count("instance-shutdown-batch") == 3
        assert cloud.call_count("instance-exists") == 0
        assert cloud.call_count("instance-shutdown") == 0
        assert cloud.batch_items["instance-exists-batch"] == 7
        reasons = sorted(e[2] for e in env.recorder.events)
        assert reasons == [wellknown.EVENT_REASON_DELETING_NODE] * 2


@pytest.mark.looptime
async def test_lifecycle_per_node_batch_error_is_doubt() -> None:
    cloud = batch_cloud()
    cloud.inject_error("instance-exists", CloudProviderError("lookup failed"), key="n0")
    async with make_env(cloud) as env:
        await env.put(
            make_lifecycle_node("n0", provider_id="fake://n0"),
            make_lifecycle_node("n1", provider_id="fake://n1"),
        )
        await lifecycle_ctrl(env).monitor_nodes()
        assert env.node("n0") is not None  # doubt: kept
        assert env.node("n1") is None  # gone: deleted
        assert cloud.call_count("instance-exists-batch") == 1


class DropsLastAnswer(FakeCloud):
    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        return list(await super().instance_exists_batch(nodes))[:-1]


@pytest.mark.looptime
@pytest.mark.parametrize("fault", ["wrong-length", "call-error", "hung"])
async def test_lifecycle_never_deletes_on_a_broken_batch(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caps = FakeCapabilities(instances_batch=True)
    cloud = (
        DropsLastAnswer(capabilities=caps)
        if fault == "wrong-length"
        else FakeCloud(capabilities=caps)
    )
    if fault == "call-error":
        cloud.inject_error("instance-exists-batch", CloudProviderError("quota"))
    if fault == "hung":
        cloud.set_latency("instance-exists-batch", 3600)
    async with make_env(cloud) as env:
        await env.put(*(make_lifecycle_node(f"n{i}", provider_id=f"fake://n{i}") for i in range(3)))
        env.client.clear_actions()
        with caplog.at_level(logging.ERROR):
            await lifecycle_ctrl(env, cloud_timeout=2).monitor_nodes()
        assert env.client.writes() == []
        assert all(env.node(f"n{i}") is not None for i in range(3))
        expected = {
            "wrong-length": "instance_exists_batch answered 2 results for 3 nodes",
            "call-error": "error checking if node n0 exists: quota",
            "hung": "cloud provider call instance_exists_batch did not return within 2s",
        }[fault]
        assert expected in caplog.text


@pytest.mark.looptime
async def test_lifecycle_uses_single_calls_when_batch_is_off() -> None:
    cloud = batch_cloud(batch=False)
    async with make_env(cloud) as env:
        await env.put(make_lifecycle_node("n0", provider_id="fake://n0"))
        await lifecycle_ctrl(env).monitor_nodes()
        assert env.node("n0") is None
        assert cloud.call_count("instance-exists") == 1
        assert cloud.call_count("instance-exists-batch") == 0


@pytest.mark.looptime
async def test_lifecycle_batch_rechecks_readiness_before_deleting_or_tainting() -> None:
    cloud = batch_cloud()
    cloud.add_instance("stopped-ready", provider_id="fake://stopped-ready", shutdown=True)
    cloud.add_instance("stopped", provider_id="fake://stopped", shutdown=True)
    cloud.set_latency("instance-exists-batch", 3.0)
    cloud.set_latency("instance-shutdown-batch", 3.0)
    async with make_env(cloud) as env:
        names = ("gone-ready", "gone", "stopped-ready", "stopped")
        await env.put(*(make_lifecycle_node(n, provider_id=f"fake://{n}") for n in names))

        def turn_ready(name: str) -> None:
            node = env.node(name)
            assert node is not None
            node["status"]["conditions"][0]["status"] = "True"
            env.client.put_object(kclient.NODES, node)

        async def hook(call: FakeCall) -> None:
            # the kubelets report Ready while the cloud is still answering
            await asyncio.sleep(1.0)
            if call.method == "instance-exists-batch":
                turn_ready("gone-ready")
            if call.method == "instance-shutdown-batch":
                turn_ready("stopped-ready")

        cloud.call_hook = hook
        await lifecycle_ctrl(env).monitor_nodes()
        assert env.node("gone") is None
        assert env.node("gone-ready") is not None
        assert SHUTDOWN in env.node("stopped")["spec"]["taints"]  # type: ignore[index]
        assert not env.node("stopped-ready")["spec"].get("taints")  # type: ignore[index]
        assert [e[0] for e in env.recorder.events] == ["gone"]


@pytest.mark.looptime
async def test_lifecycle_batch_removes_the_shutdown_taint_once_the_instance_runs_again() -> None:
    cloud = batch_cloud()
    cloud.add_instance("restarted", provider_id="fake://restarted", shutdown=False)
    cloud.add_instance("stopped", provider_id="fake://stopped", shutdown=True)
    async with make_env(cloud) as env:
        await env.put(
            *(
                make_lifecycle_node(n, provider_id=f"fake://{n}", taints=[dict(SHUTDOWN)])
                for n in ("restarted", "stopped")
            )
        )
        await lifecycle_ctrl(env).monitor_nodes()
        assert not env.node("restarted")["spec"].get("taints")  # type: ignore[index]
        assert env.node("stopped")["spec"]["taints"] == [SHUTDOWN]  # type: ignore[index]
        assert cloud.call_count("instance-shutdown-batch") == 1


class SlowNodeWrites(FakeKubeClient):
    """Node writes take 5 ms to 205 ms, spread like an apiserver under load (deterministic)."""

    def __init__(self) -> None:
        super().__init__()
        self.node_writes = 0

    async def patch(  # type: ignore[override]
        self, res: kclient.Resource, name: str, body: Any, **kw: Any
    ) -> dict[str, Any]:
        if res is kclient.NODES:
            self.node_writes += 1
            await asyncio.sleep(0.005 + 0.2 * ((self.node_writes * 37) % 100) / 100)
        return await super().patch(res, name, body, **kw)


@pytest.mark.looptime
async def test_a_burst_of_nodes_takes_one_metadata_call_however_slow_the_node_writes() -> None:
    # Workers come back for their next Node one by one, after writes of varying latency: without
    # read-ahead of the queued Nodes each straggler opened a call of its own (13 calls here).
    names = [f"burst{i}" for i in range(24)]
    cloud = batch_cloud(max_batch_size=50)
    for name in names:
        cloud.add_instance(name, zone="z1", region="r1")
    client = SlowNodeWrites()
    for name in names:
        client.put_object(kclient.NODES, make_tainted_node(name))
    informer = kinformer.Informer(client, kclient.NODES)
    controller = node_controller.CloudNodeController(
        client=client, nodes=informer, cloud=cloud, recorder=Recorder(), workers=10
    )
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(informer.run(), name="test/informer"),
            tg.create_task(controller.run(), name="test/controller"),
        ]
        while any((client.get_object(kclient.NODES, n) or {})["spec"].get("taints") for n in names):
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
    assert cloud.call_count("instance-metadata-batch") == 1
    assert cloud.batch_items["instance-metadata-batch"] == len(names)
    assert cloud.call_count("instance-metadata") == 0
