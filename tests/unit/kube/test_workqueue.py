"""The work queue: client-go semantics on a fast-forwarded loop clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from ccm import metrics
from ccm.kube import workqueue

pytestmark = pytest.mark.looptime


def _no_limit() -> workqueue.RateLimiter:
    return workqueue.ItemExponentialFailureRateLimiter(0.0, 0.0)


async def test_an_item_added_twice_is_queued_once() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("dedup")
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_an_item_being_processed_is_not_handed_to_a_second_worker() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("processing")
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # re-added while processing: dirty, not queued
    assert len(q) == 0
    second = asyncio.create_task(q.get())
    await asyncio.sleep(1)
    assert not second.done()
    q.done("a")  # now it is queued again, once
    assert await asyncio.wait_for(second, 1) == "a"
    q.done("a")
    assert len(q) == 0


async def test_peek_shows_the_next_items_in_order_and_moves_nothing() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("test")
    for item in "abcd":
        q.add(item)
    assert await q.get() == "a"
    assert q.peek(2) == ["b", "c"]
    assert q.peek(10) == ["b", "c", "d"]
    assert q.peek(0) == []
    assert len(q) == 3 and await q.get() == "b"


async def test_done_without_a_readd_does_not_requeue() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("done")
    q.add("a")
    item = await q.get()
    q.done(item)
    assert len(q) == 0
    assert q.processing == frozenset()


async def test_get_waits_for_an_add() -> None:
    q: workqueue.WorkQueue[int] = workqueue.WorkQueue("wait")
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(5)
    assert not getter.done()
    q.add(7)
    assert await getter == 7


async def test_a_cancelled_getter_does_not_swallow_an_item() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("cancel")
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")
    first.cancel()  # woken but cancelled before it ran: the wake-up passes on
    assert await asyncio.wait_for(second, 1) == "a"


async def test_add_after_delivers_in_deadline_order() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("delay", rate_limiter=_no_limit())
    start = asyncio.get_running_loop().time()
    q.add_after("late", 10)
    q.add_after("early", 3)
    q.add_after("middle", 5)
    assert len(q) == 0
    assert q.waiting == 3
    got = []
    for _ in range(3):
        got.append((await q.get(), asyncio.get_running_loop().time() - start))
    assert got == [("early", 3), ("middle", 5), ("late", 10)]


async def test_add_after_keeps_the_earliest_deadline_per_item() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("earliest", rate_limiter=_no_limit())
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_after("a", 10)
    q.add_after("a", 2)
    q.add_after("a", 30)  # later: ignored
    assert q.waiting == 1
    assert await q.get() == "a"
    assert loop.time() - start == 2
    q.done("a")
    await asyncio.sleep(60)
    assert len(q) == 0  # no second delivery from the superseded deadlines


async def test_add_after_with_no_delay_adds_at_once() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("now")
    q.add_after("a", 0)
    q.add_after("b", -1)
    assert len(q) == 2


async def test_a_delayed_item_already_queued_is_not_duplicated() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("dup-delay")
    q.add("a")
    q.add_after("a", 1)
    await asyncio.sleep(2)
    assert len(q) == 1


async def test_add_rate_limited_backs_off_exponentially_until_forget() -> None:
    limiter = workqueue.ItemExponentialFailureRateLimiter(1.0, 100.0)
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("backoff", rate_limiter=limiter)
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(4):
        start = loop.time()
        q.add_rate_limited("a")
        item = await q.get()
        delays.append(loop.time() - start)
        q.done(item)
    assert delays == [1, 2, 4, 8]
    assert q.num_requeues("a") == 4
    q.forget("a")
    assert q.num_requeues("a") == 0
    start = loop.time()
    q.add_rate_limited("a")
    await q.get()
    assert loop.time() - start == 1


def test_exponential_backoff_values_and_cap() -> None:
    limiter = workqueue.ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("x") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert limiter.when("y") == 0.005  # per item
    for _ in range(2000):  # far past any float overflow
        limiter.when("x")
    assert limiter.when("x") == 1000.0


async def test_bucket_limiter_allows_a_burst_then_spaces_items() -> None:
    limiter = workqueue.BucketRateLimiter(qps=10.0, burst=3)
    delays = [limiter.when(i) for i in range(6)]
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:] == pytest.approx([0.1, 0.2, 0.3])
    assert limiter.num_requeues(1) == 0


async def test_default_controller_rate_limiter_is_max_of_item_and_bucket() -> None:
    limiter = workqueue.default_controller_rate_limiter()
    assert limiter.when("a") == 0.005
    assert limiter.when("a") == 0.01
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    # The overall bucket (10 qps, burst 100) dominates once the burst is spent.
    delays = [limiter.when(f"k{i}") for i in range(120)]
    assert max(delays) > 1.0


async def test_shutdown_drains_then_raises_and_ignores_new_adds() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("shutdown")
    q.add("a")
    q.add_after("delayed", 5)
    q.shutdown()
    assert q.shutting_down
    q.add("b")  # ignored
    assert await q.get() == "a"  # still drained
    with pytest.raises(workqueue.ShutDown):
        await q.get()
    await asyncio.sleep(10)
    assert len(q) == 0  # the delayed item was dropped


async def test_shutdown_wakes_every_waiting_worker() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("wake")
    workers = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shutdown()
    results = await asyncio.gather(*workers, return_exceptions=True)
    assert all(isinstance(r, workqueue.ShutDown) for r in results)


async def test_shutdown_with_drain_waits_for_items_in_progress() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("drain")
    q.add("a")
    item = await q.get()
    asyncio.get_running_loop().call_later(3, q.done, item)
    assert await q.shutdown_with_drain(timeout=10)
    q2: workqueue.WorkQueue[str] = workqueue.WorkQueue("drain-timeout")
    q2.add("b")
    await q2.get()
    assert not await q2.shutdown_with_drain(timeout=1)


async def test_metrics_follow_adds_depth_and_durations() -> None:
    name = "metrics-test-queue"
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue(name, rate_limiter=_no_limit())

    def value(metric: str) -> float:
        got = metrics.REGISTRY.get_sample_value(metric, {"name": name})
        return got or 0.0

    q.add("a")
    q.add("a")
    q.add("b")
    assert value("workqueue_adds_total") == 2  # a duplicate add is not counted, as upstream
    assert value("workqueue_depth") == 2
    await asyncio.sleep(2)
    item = await q.get()
    assert value("workqueue_depth") == 1
    assert value("workqueue_queue_duration_seconds_count") == 1
    assert value("workqueue_queue_duration_seconds_sum") == 2
    await asyncio.sleep(3)
    q.done(item)
    assert value("workqueue_work_duration_seconds_sum") == 3
    q.add_rate_limited("c")
    assert value("workqueue_retries_total") == 1


async def test_unfinished_work_and_longest_running_are_read_when_scraped() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("unfinished-gauges")

    def sample(metric: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(metric, {"name": "unfinished-gauges"})

    unfinished = "workqueue_unfinished_work_seconds"
    longest = "workqueue_longest_running_processor_seconds"
    assert (sample(unfinished), sample(longest)) == (0.0, 0.0)
    q.add("a")
    q.add("b")
    assert await q.get() == "a"
    await asyncio.sleep(3)
    assert await q.get() == "b"
    await asyncio.sleep(2)
    assert sample(unfinished) == pytest.approx(5.0 + 2.0)
    assert sample(longest) == pytest.approx(5.0)
    q.done("a")
    assert (sample(unfinished), sample(longest)) == (pytest.approx(2.0), pytest.approx(2.0))
    q.done("b")
    assert (sample(unfinished), sample(longest)) == (0.0, 0.0)
