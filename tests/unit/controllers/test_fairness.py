"""New work before resync work: the PriorityGate, urgent coalescer requests, and the node and
service controllers serving a new Node or Service ahead of a backlog of known ones (virtual time;
every assertion is about order, counted from the fake cloud's recorded calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from ccm.cloudprovider import NodeAddress
from ccm.controllers import batching, priority
from ccm.errors import CloudProviderError
from ccm.kube import client as kclient
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud
from tests.unit.controllers import test_service as svc_env
from tests.unit.controllers.test_batch_controllers import make_env, node_ctrl
from tests.unit.controllers.test_node import make_node

pytestmark = pytest.mark.looptime


# --- PriorityGate -----------------------------------------------------------------------------


async def test_background_calls_run_in_parallel_without_urgent_work() -> None:
    gate = priority.PriorityGate()
    peak = 0

    async def call() -> None:
        nonlocal peak
        async with gate.background():
            peak = max(peak, gate.background_in_progress)
            await asyncio.sleep(1)

    await asyncio.gather(*(call() for _ in range(8)))
    assert peak == 8


async def test_background_calls_go_one_at_a_time_while_urgent_work_runs() -> None:
    gate = priority.PriorityGate()
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def worker() -> None:  # a sweep's worker: one call after another
        for _ in range(5):
            async with gate.background():
                started.append(loop.time())
                await asyncio.sleep(1)

    async def urgent() -> None:
        await asyncio.sleep(0.5)
        with gate.urgent():
            await asyncio.sleep(3.2)

    # 4 calls in flight when the urgent work starts; they finish, then one at a time until the
    # urgent work ends at 3.7 s, then all 4 workers again.
    await asyncio.gather(urgent(), *(worker() for _ in range(4)))
    assert started[:10] == pytest.approx([0, 0, 0, 0, 1, 2, 3, 3.7, 3.7, 3.7])
    assert len(started) == 20


async def test_a_cancelled_background_waiter_leaves_the_others_alone() -> None:
    gate = priority.PriorityGate()
    done: list[int] = []

    async def call(i: int) -> None:
        async with gate.background():
            await asyncio.sleep(1)
            done.append(i)

    with gate.urgent():
        first = asyncio.create_task(call(0))
        await asyncio.sleep(0.1)
        waiting = [asyncio.create_task(call(i)) for i in (1, 2)]
        await asyncio.sleep(0.1)
        waiting[0].cancel()
        await asyncio.gather(first, waiting[1], return_exceptions=True)
    assert waiting[0].cancelled()
    assert done == [0, 2]
    assert gate.background_in_progress == 0


# --- urgent coalescer requests ----------------------------------------------------------------


async def test_an_urgent_request_rides_in_the_next_batch_ahead_of_waiting_ones() -> None:
    calls: list[list[int]] = []

    async def backend(items: Sequence[int]) -> Sequence[int | Exception]:
        calls.append(list(items))
        await asyncio.sleep(1)
        return [i * 10 for i in items]

    c: batching.Coalescer[int, int] = batching.Coalescer(
        backend, max_size=10, seconds=30.0, what="thing_batch", max_in_flight=1
    )
    sweep = [asyncio.create_task(c.submit(i)) for i in range(100)]
    await asyncio.sleep(0.5)
    assert await c.submit(1000, urgent=True) == 10000
    assert calls[1][0] == 1000  # the batch right after the one in flight
    assert len(calls) == 2
    assert await asyncio.gather(*sweep) == [i * 10 for i in range(100)]


async def test_urgent_requests_keep_their_order_among_themselves() -> None:
    calls: list[list[int]] = []

    async def backend(items: Sequence[int]) -> Sequence[int | Exception]:
        calls.append(list(items))
        await asyncio.sleep(1)
        return list(items)

    c: batching.Coalescer[int, int] = batching.Coalescer(
        backend, max_size=4, seconds=30.0, what="thing_batch", max_in_flight=1
    )
    tasks = [asyncio.create_task(c.submit(i)) for i in range(8)]
    await asyncio.sleep(0.5)
    tasks += [asyncio.create_task(c.submit(100 + i, urgent=True)) for i in range(3)]
    await asyncio.gather(*tasks)
    assert calls[1] == [100, 101, 102, 4]


# --- node controller --------------------------------------------------------------------------


def _refreshing_cloud(env_cloud: FakeCloud, names: Sequence[str]) -> None:
    for i, name in enumerate(names):
        env_cloud.add_instance(
            name,
            provider_id=f"fake://{name}",
            addresses=[NodeAddress(type="InternalIP", address=f"10.9.{i // 250}.{i % 250}")],
        )


def _initialized(name: str, i: int) -> dict[str, Any]:
    return make_node(
        name,
        tainted=False,
        provider_id=f"fake://{name}",
        addresses=[
            {"type": "InternalIP", "address": f"10.9.{i // 250}.{i % 250}"},
            {"type": "Hostname", "address": name},
        ],
    )


async def test_a_new_nodes_key_is_handed_out_before_a_relist_of_initialized_nodes() -> None:
    names = [f"old{i}" for i in range(1000)]
    async with make_env(FakeCloud()) as env:
        await env.put(*(_initialized(n, i) for i, n in enumerate(names)))
        controller = node_ctrl(env)  # a late handler: every cached Node is added, as at start-up
        assert len(controller.queue) == 1000
        await env.put(make_node("fresh"))
        assert len(controller.queue) == 1001
        assert await controller.queue.get() == "fresh"
        assert controller.queue.low_len == 1000


async def _wait_initialized(env: Any, name: str) -> None:
    while (env.node(name) or {}).get("spec", {}).get("taints"):
        await asyncio.sleep(0.05)


def _calls_between(cloud: FakeCloud, node: str) -> tuple[int, int, list[str]]:
    """Index of the first and last cloud call about ``node`` and the keys of the calls between."""
    keys = [c.key for c in cloud.calls]
    mine = [i for i, k in enumerate(keys) if node in k]
    return mine[0], mine[-1], keys[mine[0] : mine[-1] + 1]


async def test_the_address_refresh_yields_to_an_initialization_at_a_rate_limited_cloud() -> None:
    """A legacy-Instances Node takes four cloud calls in a row to initialize. Against a cloud
    taking 20 calls a second, a refresh with 20 workers would slip 20 calls in ahead of each of
    them (60 in all); yielding, it finishes the calls it had in flight and then goes one at a
    time."""
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=False))
    names = [f"old{i}" for i in range(400)]
    _refreshing_cloud(cloud, names)
    cloud.add_instance("fresh", provider_id="fake://fresh")
    async with make_env(cloud) as env:
        await env.put(*(_initialized(n, i) for i, n in enumerate(names)))
        cloud.set_rate_limit(20.0, 1)
        controller = node_ctrl(env, workers=1, status_update_workers=20)
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(controller.run(), name="test/node-controller")
            await asyncio.sleep(3)  # the refresh is well under way
            await env.put(make_node("fresh"))
            await _wait_initialized(env, "fresh")
            run.cancel()
    first, last, between = _calls_between(cloud, "fresh")
    assert last - first >= 3  # four calls of its own
    refresh_between = [k for k in between if "fresh" not in k]
    # the calls in flight were made before its first one; then one per call of its own at most
    assert len(refresh_between) <= 4, refresh_between
    refreshed = sum(cloud.call_count(m) for m in ("node-addresses-by-provider-id",))
    assert refreshed < len(names)  # the refresh pass was still going


async def test_an_initialization_overtakes_refresh_requests_waiting_for_a_batch() -> None:
    """With InstancesBatch, a refresh with as many workers as Nodes queues every request in the
    coalescer at once; the new Node's request still goes in the next batch."""
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_batch=True), max_batch_size=50)
    names = [f"old{i}" for i in range(1000)]
    _refreshing_cloud(cloud, names)
    cloud.add_instance("fresh", provider_id="fake://fresh")
    cloud.set_latency("instance-metadata-batch", 1.0)
    async with make_env(cloud) as env:
        await env.put(*(_initialized(n, i) for i, n in enumerate(names)))
        controller = node_ctrl(env, workers=1, status_update_workers=1000)
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(controller.run(), name="test/node-controller")
            await asyncio.sleep(0.5)
            await env.put(make_node("fresh"))
            await _wait_initialized(env, "fresh")
            answered = cloud.batch_items["instance-metadata-batch"]
            run.cancel()
    # 4 batches of 50 were in flight; the next round carried the new Node
    assert answered <= 400, answered


# --- service controller -----------------------------------------------------------------------


async def test_a_new_service_is_synced_before_a_start_up_backlog_of_served_services() -> None:
    cloud = FakeCloud()
    cloud.set_latency("create", 1.0)
    env = await svc_env.start_env(cloud)
    for i in range(200):
        env.client.put_object(
            kclient.SERVICES, svc_env.make_service(f"old{i}", ingress=f"192.0.2.{i % 250}")
        )
    env.client.put_object(kclient.NODES, svc_env.make_node("n1"))
    async with svc_env._informers(env), svc_env._running(env):
        await svc_env.wait_for(lambda: cloud.call_count("create") >= 3)
        await svc_env.put(env, kclient.SERVICES, svc_env.make_service("fresh"))
        await svc_env.wait_for(lambda: cloud.load_balancer_for(f"{svc_env.NS}/fresh") is not None)
    creates = env.cloud_calls("create")
    position = creates.index(f"{svc_env.NS}/fresh")
    assert position <= 5, creates[: position + 1]
    assert len(creates) < 50  # the backlog of 200 was still there


async def test_node_sync_retries_queue_behind_new_services(env: svc_env.Env) -> None:
    await svc_env.put(env, kclient.NODES, svc_env.make_node("n1"))
    names = [f"s{i}" for i in range(5)]
    await svc_env.put(env, kclient.SERVICES, *(svc_env.make_service(n) for n in names))
    for n in names:
        await env.controller.process_service_key(f"{svc_env.NS}/{n}")
    await svc_env.put(env, kclient.NODES, svc_env.make_node("n2"))
    env.cloud.inject_error("update", CloudProviderError("backend pool locked"))
    while len(env.controller.service_queue):  # ignore what the events queued so far
        env.controller.service_queue.done(await env.controller.service_queue.get())
    await env.controller._process_node_key("n2")
    assert env.controller.service_queue.low_len == 5
    await svc_env.put(env, kclient.SERVICES, svc_env.make_service("fresh"))
    assert await env.controller.service_queue.get() == f"{svc_env.NS}/fresh"


@pytest.fixture
async def env() -> Any:
    e = await svc_env.start_env()
    async with svc_env._informers(e):
        yield e


async def test_the_node_sync_yields_to_a_first_sync_at_a_rate_limited_cloud() -> None:
    """A provider whose ensure takes three cloud calls in a row (two reads, then the write), and
    a node sync updating 100 load balancers 10 at a time against a cloud taking 10 calls a second:
    between the new Service's first and last call the node sync only finishes what it had in
    flight and then goes one at a time, instead of slipping 10 calls in ahead of each (20 in
    all)."""
    cloud = FakeCloud()
    env = await svc_env.start_env(cloud, workers=10)
    async with svc_env._informers(env):
        await svc_env.put(env, kclient.NODES, svc_env.make_node("n1"))
        names = [f"old{i}" for i in range(100)]
        await svc_env.put(env, kclient.SERVICES, *(svc_env.make_service(n) for n in names))
        async with svc_env._running(env):
            await svc_env.wait_for(lambda: cloud.call_count("create") == 100)
            real_ensure = cloud.ensure_load_balancer

            async def three_calls(cluster: str, service: Any, nodes: Any) -> Any:
                await cloud.get_load_balancer(cluster, service)
                await cloud.get_load_balancer(cluster, service)
                return await real_ensure(cluster, service, nodes)

            cloud.ensure_load_balancer = three_calls  # type: ignore[method-assign]
            cloud.set_rate_limit(10.0, 1)
            cloud.clear_calls()
            await svc_env.put(env, kclient.NODES, svc_env.make_node("n2"))
            await asyncio.sleep(2)  # the node sync is well under way
            await svc_env.put(env, kclient.SERVICES, svc_env.make_service("fresh"))
            await svc_env.wait_for(
                lambda: cloud.load_balancer_for(f"{svc_env.NS}/fresh") is not None
            )
    first, last, between = _calls_between(cloud, "fresh")
    assert last - first >= 2  # three calls of its own
    updates_between = [k for k in between if "fresh" not in k]
    assert len(updates_between) <= 3, updates_between  # one per call of its own at most
    assert cloud.call_count("update") < 100  # the node sync was still going
