"""base.run_bounded: at most N jobs at a time, N tasks at most, in order, errors propagate."""

from __future__ import annotations

import asyncio
import functools
import itertools

import pytest

from ccm.controllers import base


@pytest.mark.looptime
async def test_runs_every_job_in_order_with_at_most_n_at_once_and_n_tasks() -> None:
    started: list[int] = []
    in_flight = peak = 0
    tasks_seen: set[asyncio.Task[object] | None] = set()

    async def job(i: int) -> None:
        nonlocal in_flight, peak
        started.append(i)
        tasks_seen.add(asyncio.current_task())
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(1)
        in_flight -= 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    await base.run_bounded((functools.partial(job, i) for i in range(10)), 3, "test")
    assert started == list(range(10))
    assert peak == 3
    assert len(tasks_seen) == 3  # not one task per job
    assert loop.time() - start == pytest.approx(4.0)  # ceil(10 / 3) rounds


@pytest.mark.looptime
async def test_an_error_cancels_the_other_jobs_and_propagates() -> None:
    cancelled: list[int] = []

    async def job(i: int) -> None:
        if i == 1:
            raise RuntimeError("boom")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    with pytest.raises(ExceptionGroup) as info:
        await base.run_bounded((functools.partial(job, i) for i in range(4)), 2, "test")
    assert [str(e) for e in info.value.exceptions] == ["boom"]
    assert cancelled == [0]  # the one running beside it; jobs 2 and 3 never started


async def test_no_jobs_is_a_no_op() -> None:
    await base.run_bounded([], 5, "test")


async def test_a_list_of_jobs_gets_no_more_tasks_than_jobs() -> None:
    tasks_seen: set[asyncio.Task[object] | None] = set()
    names: list[str] = []

    async def job() -> None:
        task = asyncio.current_task()
        tasks_seen.add(task)
        assert task is not None
        names.append(task.get_name())
        await asyncio.sleep(0)

    await base.run_bounded([job, job], 10, "test")
    assert len(tasks_seen) == 2
    assert sorted(names) == ["test/0", "test/1"]


async def test_jobs_that_never_suspend_still_let_the_loop_run_between_slices() -> None:
    """A node sync over thousands of unchanged Services finishes each job without suspending; the
    workers must still yield, or they hold the loop for the whole list."""
    done: list[int] = []
    seen_by_other: list[int] = []

    async def job(i: int) -> None:
        done.append(i)

    async def other() -> None:
        while len(done) < 1000:
            seen_by_other.append(len(done))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(other())
    await asyncio.sleep(0)
    await base.run_bounded([functools.partial(job, i) for i in range(1000)], 2, "test")
    await watcher
    assert done == list(range(1000))
    # The other task ran between slices: it saw the work part done, more than once.
    partial = [n for n in seen_by_other if 0 < n < 1000]
    assert len(partial) >= 1000 // (2 * base.RUN_BOUNDED_SLICE) - 1
    assert max(b - a for a, b in itertools.pairwise(seen_by_other)) <= (2 * base.RUN_BOUNDED_SLICE)
