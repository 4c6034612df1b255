"""The one failure switch (:mod:`ccm.controllers.failures`): what each outcome of a reconcile does
to its key, through the WorkQueueLoop every controller runs and through the route controller in
both its modes; the conflict-retry helper; and errors typed at the cloud-call boundary."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ccm import metrics, wellknown
from ccm.controllers import base, failures
from ccm.controllers import route as route_controller
from ccm.errors import (
    AlreadyExistsError,
    CCMError,
    CloudProviderError,
    ConflictError,
    NotFoundError,
    RetryAfterError,
)
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube import workqueue
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCloud
from tests.unit.recorder import Recorder

NODE: dict[str, Any] = {"metadata": {"name": "node-1", "uid": "u1"}}


def reconciles(name: str, result: str) -> float:
    labels = {"controller": name, "result": result}
    return metrics.REGISTRY.get_sample_value("ccm_reconcile_total", labels) or 0.0


def queue() -> workqueue.WorkQueue[str]:
    return workqueue.WorkQueue(
        "test", rate_limiter=workqueue.ItemExponentialFailureRateLimiter(5.0, 300.0)
    )


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        pytest.param(None, failures.Outcome.SUCCESS, id="success"),
        pytest.param(RetryAfterError("later", 3), failures.Outcome.RETRY_AFTER, id="retry-after"),
        pytest.param(ConflictError("changed"), failures.Outcome.CONFLICT, id="conflict"),
        pytest.param(AlreadyExistsError("there"), failures.Outcome.ERROR, id="already-exists"),
        pytest.param(failures.TerminalError("bad"), failures.Outcome.TERMINAL, id="terminal"),
        pytest.param(CloudProviderError("boom"), failures.Outcome.ERROR, id="cloud-error"),
        pytest.param(RuntimeError("bug"), failures.Outcome.ERROR, id="bug"),
    ],
)
def test_classify_maps_each_exception_to_its_outcome(
    exc: BaseException | None, outcome: failures.Outcome
) -> None:
    assert failures.classify(exc) is outcome


def test_classify_never_looks_inside_the_cause_chain() -> None:
    wrapped = CCMError("sync failed")
    wrapped.__cause__ = RetryAfterError("slow down", 7)
    assert failures.classify(wrapped) is failures.Outcome.ERROR


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("make_error", "result", "requeues", "waiting"),
    [
        pytest.param(lambda: None, "success", 0, 0, id="success-forgets"),
        pytest.param(lambda: RetryAfterError("later", 42), "retry_after", 1, 1, id="retry-after"),
        pytest.param(lambda: ConflictError("changed"), "conflict", 2, 1, id="conflict-backs-off"),
        pytest.param(lambda: CloudProviderError("boom"), "error", 2, 1, id="error-backs-off"),
        pytest.param(
            lambda: failures.TerminalError("bad spec", obj=NODE, reason="BadSpec"),
            "terminal",
            0,
            0,
            id="terminal-drops",
        ),
    ],
)
async def test_the_work_queue_loop_applies_the_switch(
    make_error: Callable[[], Exception | None], result: str, requeues: int, waiting: int
) -> None:
    q = queue()
    q.add_rate_limited("k")  # a failure history that success and terminal must forget
    recorder = Recorder()

    async def reconcile(_key: str) -> None:
        exc = make_error()
        if exc is not None:
            raise exc

    loop = base.WorkQueueLoop(name="switch-test", queue=q, reconcile=reconcile, recorder=recorder)
    before = reconciles("switch-test", result)
    await asyncio.sleep(10)  # the first backoff is over: the key is in the queue again
    assert await q.get() == "k"
    await loop.process("k")
    q.done("k")
    assert reconciles("switch-test", result) == before + 1
    assert q.num_requeues("k") == requeues
    assert q.waiting == waiting
    if result == "terminal":
        assert recorder.events == [("node-1", wellknown.EVENT_WARNING, "BadSpec", "bad spec")]
    else:
        assert recorder.events == []


@pytest.mark.looptime
async def test_retry_after_requeues_after_exactly_its_delay() -> None:
    q = queue()
    q.add("k")

    async def reconcile(_key: str) -> None:
        raise RetryAfterError("provisioning", 42)

    loop = base.WorkQueueLoop(name="switch-test", queue=q, reconcile=reconcile)
    start = asyncio.get_running_loop().time()
    assert await q.get() == "k"
    await loop.process("k")
    q.done("k")
    assert await q.get() == "k"
    assert asyncio.get_running_loop().time() - start == pytest.approx(42)


async def test_a_periodic_loop_without_a_queue_only_counts_and_logs() -> None:
    before = reconciles("periodic-test", "error")
    outcome = failures.settle(CloudProviderError("boom"), controller="periodic-test", key="k")
    assert outcome is failures.Outcome.ERROR
    assert reconciles("periodic-test", "error") == before + 1


def test_context_keeps_a_requested_delay_and_types_the_rest() -> None:
    kept = failures.with_context("ensure: later", RetryAfterError("later", 9), RuntimeError)
    assert isinstance(kept, RetryAfterError) and kept.delay == 9
    assert str(kept) == "ensure: later"
    plain = failures.with_context("ensure: boom", CloudProviderError("boom"), RuntimeError)
    assert type(plain) is RuntimeError and str(plain) == "ensure: boom"


async def test_call_cloud_types_a_wrapped_retry_after_at_the_boundary() -> None:
    async def provider() -> None:
        try:
            raise RetryAfterError("429", 12)
        except RetryAfterError as exc:
            raise CloudProviderError("sync failed") from exc

    with pytest.raises(RetryAfterError) as caught:
        await base.call_cloud(provider(), 5, "ensure_load_balancer")
    assert caught.value.delay == 12
    assert str(caught.value) == "sync failed"


# --- the conflict-retry helper ---------------------------------------------------------------


@pytest.mark.looptime
async def test_retry_on_conflict_rereads_between_attempts_and_returns_the_answer() -> None:
    log: list[str] = []

    async def write() -> str:
        log.append("write")
        if log.count("write") < 3:
            raise ConflictError("changed")
        return "done"

    async def reread() -> None:
        log.append("read")

    start = asyncio.get_running_loop().time()
    answer = await failures.retry_on_conflict(
        write, attempts=5, backoff=lambda n: 1.0 + n, reread=reread
    )
    assert answer == "done"
    assert log == ["write", "read", "write", "read", "write"]
    assert asyncio.get_running_loop().time() - start == pytest.approx(1.0 + 2.0)


@pytest.mark.looptime
async def test_retry_on_conflict_gives_up_with_the_last_conflict() -> None:
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        raise ConflictError(f"changed {calls}")

    with pytest.raises(ConflictError, match="changed 4"):
        await failures.retry_on_conflict(write, attempts=4, backoff=lambda _n: 0.1)
    assert calls == 4


@pytest.mark.parametrize(
    "error", [NotFoundError("gone"), AlreadyExistsError("there"), CloudProviderError("x")]
)
async def test_retry_on_conflict_passes_other_errors_through_at_once(error: Exception) -> None:
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await failures.retry_on_conflict(write, attempts=5, backoff=lambda _n: 0.1)
    assert calls == 1


# --- routes go through the switch --------------------------------------------------------------


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[FakeKubeClient, kinformer.Informer]]:
    client = FakeKubeClient()
    informer = kinformer.Informer(client, kclient.NODES)
    task = asyncio.create_task(informer.run(), name="test/informer")
    await informer.wait_for_sync(timeout=5)
    try:
        yield client, informer
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()


def routes_controller(
    nodes: tuple[FakeKubeClient, kinformer.Informer], cloud: FakeCloud, **kwargs: Any
) -> route_controller.RouteController:
    routes = cloud.routes()
    assert routes is not None
    return route_controller.RouteController(
        client=nodes[0],
        nodes=nodes[1],
        routes=routes,
        recorder=Recorder(),
        cluster_name="c",
        cluster_cidrs=(ipaddress.ip_network("10.120.0.0/16"),),
        **kwargs,
    )


def failing_once(rc: route_controller.RouteController, error: Exception) -> list[float]:
    """Replace the pass of ``rc`` by one that fails with ``error`` the first time; return the
    list of the (loop) times of every pass. The cloud is not involved, so its budget's
    back-pressure does not hide what the switch does."""
    times: list[float] = []

    async def reconcile_node_routes() -> None:
        times.append(asyncio.get_running_loop().time())
        if len(times) == 1:
            raise error

    rc.reconcile_node_routes = reconcile_node_routes  # type: ignore[method-assign]
    return times


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("error", "result", "retried_after"),
    [
        # the queue's token bucket still holds its one token: the rate-limited retry is at once
        pytest.param(CloudProviderError("api down"), "error", 0.0, id="error-rate-limited"),
        pytest.param(RetryAfterError("throttled", 30), "retry_after", 30.0, id="retry-after"),
        pytest.param(ConflictError("changed"), "conflict", 0.0, id="conflict-rate-limited"),
    ],
)
async def test_watch_based_routes_go_through_the_switch(
    nodes: tuple[FakeKubeClient, kinformer.Informer],
    error: Exception,
    result: str,
    retried_after: float,
) -> None:
    rc = routes_controller(nodes, FakeCloud(), watch_based=True)
    times = failing_once(rc, error)
    before = reconciles("route", result)
    success = reconciles("route", "success")
    task = asyncio.create_task(rc.run(), name="test/route")
    try:
        await asyncio.sleep(45)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert reconciles("route", result) == before + 1
    assert reconciles("route", "success") == success + 1
    assert len(times) == 2
    assert times[1] - times[0] == pytest.approx(retried_after, abs=0.5)


@pytest.mark.looptime
async def test_watch_based_routes_drop_a_terminal_failure_with_an_event(
    nodes: tuple[FakeKubeClient, kinformer.Informer],
) -> None:
    rc = routes_controller(nodes, FakeCloud(), watch_based=True)
    bad = failures.TerminalError("cannot route", obj=NODE, reason="BadRoute")
    times = failing_once(rc, bad)
    before = reconciles("route", "terminal")
    task = asyncio.create_task(rc.run(), name="test/route")
    try:
        await asyncio.sleep(45)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(times) == 1  # dropped: no retry until a Node change queues the key again
    assert reconciles("route", "terminal") == before + 1
    assert isinstance(rc._recorder, Recorder)
    assert rc._recorder.events == [("node-1", wellknown.EVENT_WARNING, "BadRoute", "cannot route")]


@pytest.mark.looptime
async def test_periodic_routes_count_each_pass_in_the_switch(
    nodes: tuple[FakeKubeClient, kinformer.Informer],
) -> None:
    rc = routes_controller(nodes, FakeCloud(), period=10.0)
    times = failing_once(rc, CloudProviderError("api down"))
    errors, successes = reconciles("route", "error"), reconciles("route", "success")
    task = asyncio.create_task(rc.run(), name="test/route")
    try:
        await asyncio.sleep(15)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert times == [pytest.approx(times[0]), pytest.approx(times[0] + 10)]
    assert reconciles("route", "error") == errors + 1
    assert reconciles("route", "success") == successes + 1
