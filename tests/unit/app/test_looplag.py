"""The event-loop lag monitor: what it measures and what it records."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

import pytest

from ccm import metrics
from ccm.app.looplag import GEN0_THRESHOLD, LagMonitor, freeze_after_sync


@pytest.mark.looptime
async def test_lag_is_how_late_the_timer_fired_by_the_clock() -> None:
    loop = asyncio.get_running_loop()
    blocked = 0.0  # extra seconds the fake clock says the loop was busy

    def clock() -> float:
        return loop.time() + blocked

    seen: list[float] = []
    monitor = LagMonitor(interval=0.1, clock=clock, observe=seen.append)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.35)  # three on-time samples
    blocked = 0.25  # the next wake-up is 250 ms late
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen[:3] == [0.0, 0.0, 0.0]
    assert seen[3] == pytest.approx(0.25)
    assert monitor.samples == len(seen) and monitor.max_lag == pytest.approx(0.25)


async def test_a_blocking_call_on_the_loop_shows_up_as_lag() -> None:
    seen: list[float] = []
    monitor = LagMonitor(interval=0.01, observe=seen.append)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.03)
    time.sleep(0.2)  # noqa: ASYNC251 - a synchronous step that holds the loop, on purpose
    await asyncio.sleep(0.03)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # The monitor's timer was due while the loop was held: at least ~190 ms late.
    assert max(seen) >= 0.15


def test_samples_land_in_the_histogram_and_long_blocks_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def count() -> float:
        value = metrics.REGISTRY.get_sample_value("ccm_event_loop_lag_seconds_count")
        return value or 0.0

    def over_half_second() -> float:
        le = metrics.REGISTRY.get_sample_value("ccm_event_loop_lag_seconds_bucket", {"le": "0.5"})
        return count() - (le or 0.0)

    before, before_slow = count(), over_half_second()
    monitor = LagMonitor(interval=0.1, warn_after=1.0)
    with caplog.at_level(logging.WARNING, logger="ccm.app.looplag"):
        monitor.sample(0.002)
        monitor.sample(-0.001)  # clock jitter, not negative lag
        monitor.sample(1.5)
    assert count() - before == 3
    assert over_half_second() - before_slow == 1
    assert monitor.max_lag == 1.5
    assert [r.getMessage() for r in caplog.records] == ["Event loop was blocked for 1.50s"]


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        LagMonitor(interval=0)


async def test_caches_are_frozen_out_of_the_gc_once_synced() -> None:
    synced = asyncio.Event()
    cache = [{"metadata": {"name": f"n{i}"}} for i in range(1000)]
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        task = asyncio.create_task(freeze_after_sync([synced.wait()]))
        await asyncio.sleep(0)
        assert gc.get_freeze_count() == 0  # nothing happens before the caches are filled
        synced.set()
        frozen = await task
        assert frozen >= len(cache) and gc.get_freeze_count() >= len(cache)
        assert not any(obj is cache[0] for obj in gc.get_objects())  # out of the collector's walk
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((700, 10, 10), (GEN0_THRESHOLD, 10, 10)),  # CPython's default: raised once synced
        ((GEN0_THRESHOLD * 2, 5, 7), (GEN0_THRESHOLD * 2, 5, 7)),  # already higher: kept
        ((0, 10, 10), (0, 10, 10)),  # collection switched off by the embedder: kept off
    ],
)
async def test_young_collections_are_rarer_once_synced(
    before: tuple[int, int, int], after: tuple[int, int, int]
) -> None:
    synced = asyncio.Event()
    thresholds = gc.get_threshold()
    gc.set_threshold(*before)
    try:
        task = asyncio.create_task(freeze_after_sync([synced.wait()]))
        await asyncio.sleep(0)
        assert gc.get_threshold() == before  # nothing changes before the caches are filled
        synced.set()
        await task
        assert gc.get_threshold() == after
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((700, 10, 10), (GEN0_THRESHOLD, 10, 10)),  # CPython's default: raised from the start
        ((GEN0_THRESHOLD * 2, 5, 7), (GEN0_THRESHOLD * 2, 5, 7)),  # already higher: kept
        ((0, 10, 10), (0, 10, 10)),  # collection switched off by the embedder: kept off
    ],
)
def test_the_daemon_raises_the_young_threshold_as_it_starts(
    before: tuple[int, int, int], after: tuple[int, int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    from ccm.app import main as appmain

    thresholds = gc.get_threshold()
    gc.set_threshold(*before)
    try:
        assert appmain.run(["--version"]) == 0
        assert gc.get_threshold() == after
    finally:
        gc.set_threshold(*thresholds)
    assert capsys.readouterr().out.startswith("ccm ")
