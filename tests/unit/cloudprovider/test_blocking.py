"""The framework's pool for blocking SDK calls: bounded, named, cancellable, observable."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from ccm import metrics
from ccm.cloudprovider import BlockingPool, blocking, current_pool, run_blocking, use_pool

WAIT = 10.0  # bound on every wait for a thread in these tests; reached only when a test fails


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT), "the pool thread never got there"


def sample(metric: str, pool: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(metric, {"pool": pool})


class Gate:
    """A blocking call the test releases: records that it started and that it finished."""

    def __init__(self, result: object = "done") -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.thread_name = ""
        self.result = result

    def __call__(self) -> object:
        self.thread_name = threading.current_thread().name
        self.started.set()
        try:
            assert self.release.wait(WAIT)
            return self.result
        finally:
            self.finished.set()


@pytest.fixture
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[BlockingPool]:
    p = BlockingPool(2, name=f"test-{request.node.name}")
    yield p
    assert await p.aclose(WAIT)


async def test_returns_the_result_from_a_named_pool_thread(pool: BlockingPool) -> None:
    def call(a: int, *, b: int) -> tuple[int, str]:
        return a + b, threading.current_thread().name

    total, thread = await pool.run(call, 1, b=2)
    assert total == 3
    assert thread == f"{pool.name}-1"
    assert thread != threading.current_thread().name


async def test_raises_what_the_call_raises(pool: BlockingPool) -> None:
    def fail() -> None:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        await pool.run(fail)


async def test_the_event_loop_keeps_running_while_a_call_blocks(pool: BlockingPool) -> None:
    gate = Gate()
    call = asyncio.create_task(pool.run(gate), name="blocked-call")
    await wait_for(gate.started)
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not call.done()
    gate.release.set()
    assert await call == "done"


async def test_context_variables_reach_the_call(pool: BlockingPool) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller's")
    assert await pool.run(var.get) == "caller's"


async def test_saturation_shows_in_the_metrics(pool: BlockingPool) -> None:
    gates = [Gate(i) for i in range(3)]
    calls = [asyncio.create_task(pool.run(g), name=f"call-{i}") for i, g in enumerate(gates)]
    await wait_for(gates[0].started)
    await wait_for(gates[1].started)
    await asyncio.sleep(0)
    assert not gates[2].started.is_set()
    assert (pool.busy, pool.queued, pool.threads) == (2, 1, 2)
    assert sample("ccm_cloud_threads_max", pool.name) == 2
    assert sample("ccm_cloud_threads_busy", pool.name) == 2
    assert sample("ccm_cloud_threads_queued", pool.name) == 1
    assert sample("ccm_cloud_threads", pool.name) == 2

    gates[0].release.set()
    await wait_for(gates[2].started)  # the third call got the freed thread
    assert sample("ccm_cloud_threads_queued", pool.name) == 0
    for g in gates:
        g.release.set()
    assert await asyncio.gather(*calls) == [0, 1, 2]
    assert sample("ccm_cloud_threads_busy", pool.name) == 0
    assert sample("ccm_cloud_threads_wait_seconds_count", pool.name) == 3


async def test_a_call_cancelled_while_running_finishes_and_its_result_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = BlockingPool(1, name="test-abandon")
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    gate = Gate(result=object())
    before = sample("ccm_cloud_threads_abandoned_total", pool.name) or 0.0
    call = asyncio.create_task(pool.run(gate), name="abandoned-call")
    await wait_for(gate.started)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert pool.busy == 1  # the thread cannot be interrupted: it still runs the call
    assert sample("ccm_cloud_threads_abandoned_total", pool.name) == before + 1

    with caplog.at_level(logging.DEBUG, logger="ccm.cloudprovider.blocking"):
        gate.release.set()
        await wait_for(gate.finished)  # the thread finished the call...
        assert await pool.run(lambda: "next") == "next"  # ...and took the next one
    assert "dropped the outcome of a cancelled blocking call" in caplog.text
    assert pool.busy == 0
    assert loop_errors == []  # the late result was not pushed into the cancelled future
    assert await pool.aclose(WAIT)


async def test_a_call_cancelled_while_queued_never_runs(pool: BlockingPool) -> None:
    gates = [Gate(), Gate()]
    running = [asyncio.create_task(pool.run(g), name=f"running-{i}") for i, g in enumerate(gates)]
    for g in gates:
        await wait_for(g.started)
    ran = threading.Event()
    queued = asyncio.create_task(pool.run(ran.set), name="queued-call")
    await asyncio.sleep(0)
    assert pool.queued == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert pool.queued == 0
    assert sample("ccm_cloud_threads_queued", pool.name) == 0
    for g in gates:
        g.release.set()
    await asyncio.gather(*running)
    await pool.run(lambda: None)  # a later call runs after where the cancelled one stood
    assert not ran.is_set()


async def test_aclose_fails_queued_calls_and_refuses_new_ones() -> None:
    pool = BlockingPool(1, name="test-aclose")
    gate = Gate()
    running = asyncio.create_task(pool.run(gate), name="running")
    await wait_for(gate.started)
    queued = asyncio.create_task(pool.run(lambda: "never"), name="queued")
    await asyncio.sleep(0)
    closing = asyncio.create_task(pool.aclose(WAIT), name="aclose")
    with pytest.raises(RuntimeError, match="test-aclose is shut down"):
        await queued
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.run(lambda: None)
    gate.release.set()
    assert await running == "done"  # a running call completes
    assert await closing is True
    assert pool.threads == 0


async def test_aclose_reports_threads_stuck_in_a_call(caplog: pytest.LogCaptureFixture) -> None:
    pool = BlockingPool(1, name="test-stuck")
    gate = Gate()
    running = asyncio.create_task(pool.run(gate), name="stuck")
    await wait_for(gate.started)
    with caplog.at_level(logging.WARNING, logger="ccm.cloudprovider.blocking"):
        assert await pool.aclose(0.001) is False
    assert "test-stuck-1" in caplog.text
    gate.release.set()
    assert await running == "done"
    assert await pool.aclose(WAIT) is True


async def test_idle_threads_end_and_restart_on_demand() -> None:
    pool = BlockingPool(1, name="test-idle", idle_timeout=0.001)
    assert await pool.run(lambda: 1) == 1
    await wait_for(pool._no_threads)
    assert pool.threads == 0
    assert await pool.run(threading.current_thread) is not None
    assert await pool.aclose(WAIT)


async def test_run_blocking_uses_the_installed_pool_else_a_default_one(
    pool: BlockingPool,
) -> None:
    name: Callable[[], str] = lambda: threading.current_thread().name  # noqa: E731
    with use_pool(pool):
        assert current_pool() is pool
        assert (await run_blocking(name)).startswith(f"{pool.name}-")
    default = current_pool()
    assert default is not pool
    assert default.max_threads == blocking.DEFAULT_THREADS
    assert (await run_blocking(name)).startswith("ccm-cloud-default-")
    assert current_pool() is default  # created once


def test_rejects_a_pool_without_threads() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        BlockingPool(0)
