"""The work queue's two lanes: new work is handed out before resync work, resync work is never
starved, and dedup, the processing set, delays and retries keep their lanes."""

from __future__ import annotations

import asyncio

import pytest

from ccm.kube import workqueue

pytestmark = pytest.mark.looptime


def _no_limit() -> workqueue.RateLimiter:
    return workqueue.ItemExponentialFailureRateLimiter(0.0, 0.0)


async def _drain(q: workqueue.WorkQueue[str]) -> list[str]:
    out = []
    while len(q):
        item = await q.get()
        q.done(item)
        out.append(item)
    return out


async def test_new_work_is_handed_out_before_a_resync_backlog() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-order")
    for i in range(5000):
        q.add(f"old-{i}", low=True)
    q.add("new")
    assert len(q) == 5001
    assert q.low_len == 5000
    assert await q.get() == "new"
    assert q.low_len == 5000


async def test_the_low_lane_gets_one_item_in_every_low_share() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-share", low_share=4)
    for i in range(3):
        q.add(f"low-{i}", low=True)
    for i in range(9):
        q.add(f"high-{i}")
    got = await _drain(q)
    assert got == [
        "high-0", "high-1", "high-2", "low-0",
        "high-3", "high-4", "high-5", "low-1",
        "high-6", "high-7", "high-8", "low-2",
    ]  # fmt: skip


async def test_a_low_share_below_two_is_rejected() -> None:
    with pytest.raises(ValueError, match="low_share"):
        workqueue.WorkQueue("lanes-bad", low_share=1)


async def test_an_item_added_as_new_work_leaves_the_low_lane() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-promote")
    for i in range(100):
        q.add(f"k{i}", low=True)
    q.add("k50")  # became new work while queued for a resync
    assert len(q) == 100
    assert q.low_len == 99
    got = await _drain(q)
    assert got[0] == "k50"
    assert got.count("k50") == 1  # the stale low-lane entry is skipped
    assert got[1:] == [f"k{i}" for i in range(100) if i != 50]


async def test_a_resync_add_never_demotes_new_work() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-nodemote")
    q.add("old", low=True)
    q.add("new")
    q.add("new", low=True)
    assert q.low_len == 1
    assert await _drain(q) == ["new", "old"]


async def test_an_item_promoted_while_processing_is_requeued_in_the_high_lane() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-processing")
    q.add("a", low=True)
    assert await q.get() == "a"
    q.add("a", low=True)  # dirty, low
    q.add("a")  # promoted while still being processed
    q.add("b", low=True)
    assert len(q) == 1  # only b: a waits for done
    q.done("a")
    assert q.low_len == 1
    assert await _drain(q) == ["a", "b"]


async def test_a_retry_keeps_the_lane_it_was_handed_out_from() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-retry", rate_limiter=_no_limit())
    q.add("resync", low=True)
    q.add("fresh")
    first = await q.get()
    second = await q.get()
    assert (first, second) == ("fresh", "resync")
    q.add_rate_limited("resync")
    q.add_after("fresh", 1)
    q.done("resync")
    q.done("fresh")
    await asyncio.sleep(2)
    assert len(q) == 2
    assert q.low_len == 1
    assert await _drain(q) == ["fresh", "resync"]


async def test_delayed_adds_keep_their_lane_and_the_high_lane_wins() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-delay", rate_limiter=_no_limit())
    q.add_after("low", 1, low=True)
    q.add_after("both", 5, low=True)
    q.add_after("both", 9)  # later deadline, but new work: the pending add is now high
    q.add_after("high", 1)
    await asyncio.sleep(6)
    assert len(q) == 3
    assert q.low_len == 1
    assert await _drain(q) == ["high", "both", "low"]
    await asyncio.sleep(10)
    assert len(q) == 0  # the superseded deadline does not deliver again


async def test_a_delayed_low_add_of_an_item_queued_high_leaves_it_high() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-delay-high")
    q.add("a")
    q.add_after("a", 1, low=True)
    await asyncio.sleep(2)
    assert len(q) == 1
    assert q.low_len == 0


async def test_many_workers_share_both_lanes_without_losing_or_duplicating_items() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-workers", low_share=3)
    seen: list[str] = []

    async def worker() -> None:
        while True:
            try:
                item = await q.get()
            except workqueue.ShutDown:
                return
            seen.append(item)
            await asyncio.sleep(0.01)
            q.done(item)

    for i in range(200):
        q.add(f"low-{i}", low=True)
    async with asyncio.TaskGroup() as tg:
        for i in range(4):
            tg.create_task(worker(), name=f"lanes-worker-{i}")
        for i in range(50):
            q.add(f"high-{i}")
            q.add(f"low-{i * 3}")  # promotions mixed in
            await asyncio.sleep(0.005)
        while len(q) or q.processing:
            await asyncio.sleep(0.1)
        q.shutdown()
    assert sorted(seen) == sorted(
        {*(f"low-{i}" for i in range(200)), *(f"high-{i}" for i in range(50))}
    )


async def test_peek_shows_the_high_lane_first_and_skips_promoted_entries() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue("lanes-peek")
    for item in "abc":
        q.add(item, low=True)
    q.add("x")
    q.add("b")  # promoted: its low-lane entry is stale
    assert q.peek(10) == ["x", "b", "a", "c"]
    assert q.peek(3) == ["x", "b", "a"]
    assert len(q) == 4
