"""The batch coalescer and ``call_batch`` of ``ccm.controllers.batching`` (virtual time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import pytest

from ccm import logs
from ccm.controllers import batching
from ccm.errors import CloudCallTimeoutError, CloudProviderError, InstanceNotFoundError


class Backend:
    """A batch function that records its calls; answers ``item * 10`` after ``latency``."""

    def __init__(self, latency: float = 1.0) -> None:
        self.latency = latency
        self.calls: list[list[int]] = []
        self.fail_items: dict[int, Exception] = {}
        self.raise_error: Exception | None = None
        self.drop_last = False

    async def __call__(self, items: Sequence[int]) -> Sequence[int | Exception]:
        self.calls.append(list(items))
        await asyncio.sleep(self.latency)
        if self.raise_error is not None:
            raise self.raise_error
        answers: list[int | Exception] = [self.fail_items.get(i, i * 10) for i in items]
        return answers[:-1] if self.drop_last else answers


def coalescer(
    backend: Backend, *, max_size: int = 100, seconds: float | None = 30.0, window: float = 0.005
) -> batching.Coalescer[int, int]:
    return batching.Coalescer(
        backend, max_size=max_size, seconds=seconds, what="thing_batch", window=window
    )


@pytest.mark.looptime
async def test_concurrent_requests_share_one_call() -> None:
    backend = Backend()
    c = coalescer(backend)
    results = await asyncio.gather(*(c.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert backend.calls == [[0, 1, 2, 3, 4]]
    assert (c.calls, c.items) == (1, 5)


@pytest.mark.looptime
async def test_requests_within_the_window_join_later_ones_open_a_new_batch() -> None:
    backend = Backend()
    c = coalescer(backend, window=0.5)

    async def later(item: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return await c.submit(item)

    results = await asyncio.gather(later(1, 0), later(2, 0.2), later(3, 0.7))
    assert results == [10, 20, 30]
    assert backend.calls == [[1, 2], [3]]


@pytest.mark.looptime
async def test_requests_queued_during_a_call_go_together_when_it_returns() -> None:
    backend = Backend(latency=1.0)
    c = coalescer(backend)
    loop = asyncio.get_running_loop()

    async def later(item: int, delay: float) -> float:
        await asyncio.sleep(delay)
        assert await c.submit(item) == item * 10
        return loop.time()

    done = await asyncio.gather(later(1, 0), later(2, 0.2), later(3, 0.4), later(4, 0.6))
    assert backend.calls == [[1], [2, 3, 4]]
    assert done[0] == pytest.approx(1.005)
    assert done[1:] == [pytest.approx(2.005)] * 3  # sent the moment the first call returned


@pytest.mark.looptime
async def test_against_a_rate_limited_cloud_batches_grow_while_a_call_is_in_flight() -> None:
    """Ten workers, each asking for one item after another with 0-27 ms of work of its own in
    between (like node workers), against a cloud that takes one call at a time (100 ms each). The
    requests that queue up while a call is in flight go together when it returns; were each window
    a batch of its own, every call would carry about two items (100 calls for 200 items)."""
    backend = Backend(latency=0.1)
    one_at_a_time = asyncio.Lock()

    async def limited(items: Sequence[int]) -> Sequence[int | Exception]:
        async with one_at_a_time:
            return await backend(items)

    c: batching.Coalescer[int, int] = batching.Coalescer(
        limited, max_size=100, seconds=30.0, what="thing_batch"
    )

    async def worker(w: int) -> None:
        for round_ in range(20):
            await asyncio.sleep(0.003 * w)
            assert await c.submit(w * 100 + round_) == (w * 100 + round_) * 10

    await asyncio.gather(*(worker(w) for w in range(10)))
    sizes = [len(call) for call in backend.calls]
    assert sum(sizes) == 200
    assert len(sizes) <= 50
    assert max(sizes) >= 8


@pytest.mark.looptime
async def test_a_closed_coalescer_refuses_new_requests() -> None:
    c = coalescer(Backend())
    await c.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await c.submit(1)


@pytest.mark.looptime
async def test_a_full_batch_goes_at_once_and_the_rest_is_split() -> None:
    backend = Backend()
    c = coalescer(backend, max_size=3, window=60)
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = asyncio.gather(*(c.submit(i) for i in range(3)))
    assert await first == [0, 10, 20]
    assert loop.time() - start == pytest.approx(1.0)  # no wait for the 60 s window: it was full
    results = await asyncio.gather(*(c.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert [len(call) for call in backend.calls] == [3, 3, 3, 1]


@pytest.mark.looptime
async def test_a_per_item_exception_goes_to_its_waiter_only() -> None:
    backend = Backend()
    backend.fail_items[2] = InstanceNotFoundError("no such instance")
    c = coalescer(backend)
    results = await asyncio.gather(*(c.submit(i) for i in range(4)), return_exceptions=True)
    assert results[:2] == [0, 10]
    assert isinstance(results[2], InstanceNotFoundError)
    assert results[3] == 30
    assert len(backend.calls) == 1


@pytest.mark.looptime
async def test_a_failed_call_fails_every_waiter() -> None:
    backend = Backend()
    backend.raise_error = CloudProviderError("quota")
    c = coalescer(backend)
    results = await asyncio.gather(*(c.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, CloudProviderError) and str(r) == "quota" for r in results)


@pytest.mark.looptime
async def test_a_wrong_length_answer_is_an_error_for_every_item_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend()
    backend.drop_last = True
    c = coalescer(backend)
    with caplog.at_level(logging.ERROR):
        results = await asyncio.gather(*(c.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, batching.BatchAnswerError) for r in results)
    assert "thing_batch answered 2 results for 3 nodes" in caplog.text


@pytest.mark.looptime
async def test_the_whole_batch_call_is_bounded_by_the_cloud_timeout() -> None:
    backend = Backend(latency=3600)
    c = coalescer(backend, seconds=5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(c.submit(i) for i in range(3)), return_exceptions=True)
    assert loop.time() - start == pytest.approx(5.005)
    assert all(isinstance(r, CloudCallTimeoutError) for r in results)
    assert "thing_batch did not return within 5s" in str(results[0])


@pytest.mark.looptime
async def test_cancelling_one_waiter_does_not_break_the_others() -> None:
    backend = Backend(latency=2)
    c = coalescer(backend)
    tasks = [asyncio.create_task(c.submit(i)) for i in range(3)]
    await asyncio.sleep(1)  # the call is in flight
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert done[0] == 0
    assert isinstance(done[1], asyncio.CancelledError)
    assert done[2] == 20
    assert backend.calls == [[0, 1, 2]]
    # the coalescer keeps working
    assert await c.submit(7) == 70


@pytest.mark.looptime
async def test_a_waiter_cancelled_before_the_call_is_left_out() -> None:
    backend = Backend()
    c = coalescer(backend, window=1)
    tasks = [asyncio.create_task(c.submit(i)) for i in range(3)]
    await asyncio.sleep(0.5)
    tasks[0].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1:] == [10, 20]
    assert backend.calls == [[1, 2]]


@pytest.mark.looptime
async def test_when_every_waiter_is_gone_the_call_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def hang(items: Sequence[int]) -> Sequence[int]:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return list(items)

    c: batching.Coalescer[int, int] = batching.Coalescer(
        hang, max_size=10, seconds=None, what="hang"
    )
    tasks = [asyncio.create_task(c.submit(i)) for i in range(2)]
    await asyncio.sleep(1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.1)
    assert cancelled.is_set()


@pytest.mark.looptime
async def test_aclose_cancels_batches_in_progress() -> None:
    backend = Backend(latency=3600)
    c = coalescer(backend, seconds=None)
    task = asyncio.create_task(c.submit(1))
    await asyncio.sleep(1)
    await c.aclose()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.looptime
async def test_call_batch_returns_one_result_per_item() -> None:
    backend = Backend()
    assert await batching.call_batch(backend, [1, 2], 5, "x") == [10, 20]
    assert await batching.call_batch(backend, [], 5, "x") == []
    assert len(backend.calls) == 1  # no call for no items

    async def not_a_sequence(items: Sequence[int]) -> Sequence[int]:
        return None  # type: ignore[return-value]

    [result] = await batching.call_batch(not_a_sequence, [1], 5, "x")
    assert isinstance(result, batching.BatchAnswerError)
    assert "no sequence" in str(result)


class StubbornBackend(Backend):
    """A batch function that catches its cancellation and answers anyway, late."""

    async def __call__(self, items: Sequence[int]) -> Sequence[int | Exception]:
        self.calls.append(list(items))
        with contextlib.suppress(asyncio.CancelledError):  # the provider bug under test
            await asyncio.sleep(self.latency)
        return [i * 10 for i in items]


@pytest.mark.looptime
async def test_group_commit_fails_every_waiter_of_a_late_answer() -> None:
    backend = StubbornBackend(latency=60.0)
    c = coalescer(backend, seconds=2.0)
    try:
        results = await asyncio.gather(
            c.submit(1), c.submit(2), c.submit(3), return_exceptions=True
        )
    finally:
        await c.aclose()
    assert backend.calls == [[1, 2, 3]]
    assert all(isinstance(r, CloudCallTimeoutError) for r in results), results


# --- read-ahead ---------------------------------------------------------------------------------


class Ahead:
    """What the caller will ask for next (a work queue); items are keyed by themselves."""

    def __init__(self, *items: int) -> None:
        self.items = list(items)
        self.asked: list[int] = []

    def __call__(self, room: int) -> list[int]:
        self.asked.append(room)
        return self.items[:room]


def reading_ahead(
    backend: Backend, ahead: Ahead, *, max_size: int = 100, ttl: float = 30.0
) -> batching.Coalescer[int, int]:
    return batching.Coalescer(
        backend,
        max_size=max_size,
        seconds=30.0,
        what="thing_batch",
        read_ahead=ahead,
        key=lambda item: item,
        read_ahead_ttl=ttl,
    )


@pytest.mark.looptime
async def test_a_batch_with_room_asks_ahead_and_later_requests_take_the_kept_answers() -> None:
    backend = Backend(latency=1.0)
    ahead = Ahead(2, 3, 4, 5)
    c = reading_ahead(backend, ahead, max_size=4)
    assert await c.submit(1) == 10
    assert backend.calls == [[1, 2, 3, 4]]  # the request itself first, then the room filled
    assert ahead.asked == [3]
    assert await asyncio.gather(c.submit(2), c.submit(3), c.submit(4)) == [20, 30, 40]
    assert len(backend.calls) == 1
    assert c.read_ahead_hits == 3
    assert await c.submit(2) == 20  # a kept answer is used once
    assert len(backend.calls) == 2


@pytest.mark.looptime
async def test_a_request_for_an_item_still_in_flight_waits_for_that_call() -> None:
    backend = Backend(latency=5.0)
    c = reading_ahead(backend, Ahead(7, 8))
    first = asyncio.create_task(c.submit(7))
    await asyncio.sleep(1)  # the call asking for 7 and 8 is in flight
    assert await c.submit(8) == 80
    assert await first == 70
    assert backend.calls == [[7, 8]]


@pytest.mark.looptime
async def test_kept_answers_expire_and_kept_errors_are_not_reused() -> None:
    backend = Backend(latency=1.0)
    backend.fail_items[3] = InstanceNotFoundError("gone for now")
    c = reading_ahead(backend, Ahead(1, 2, 3), ttl=10.0)
    await c.submit(1)
    assert backend.calls == [[1, 2, 3]]
    del backend.fail_items[3]
    assert await c.submit(3) == 30  # its kept error is not reused: a call of its own
    assert len(backend.calls) == 2
    await asyncio.sleep(10)
    assert await c.submit(2) == 20  # kept for 10 s after the call returned: expired
    assert len(backend.calls) == 3


@pytest.mark.looptime
async def test_read_ahead_never_asks_twice_for_an_item_nor_beyond_max_size() -> None:
    backend = Backend(latency=1.0)
    c = reading_ahead(backend, Ahead(2, 3, 3, 4, 5, 6), max_size=4)
    assert await asyncio.gather(c.submit(1), c.submit(2)) == [10, 20]
    assert backend.calls == [[1, 2, 3]]  # 2 is in the batch already: only 3 is read ahead


@pytest.mark.looptime
async def test_a_failing_read_ahead_leaves_the_batch_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend(latency=1.0)

    def broken(room: int) -> list[int]:
        raise RuntimeError("queue bug")

    c = batching.Coalescer(
        backend, max_size=10, seconds=30.0, what="thing_batch", read_ahead=broken, key=str
    )
    assert await c.submit(1) == 10
    assert backend.calls == [[1]]
    assert "read-ahead failed" in caplog.text


def test_read_ahead_needs_a_key() -> None:
    with pytest.raises(ValueError, match="go together"):
        batching.Coalescer(Backend(), max_size=2, seconds=1.0, what="x", read_ahead=Ahead())


@pytest.mark.looptime
async def test_a_batch_call_logs_under_its_controller_not_under_the_worker_that_started_it() -> (
    None
):
    seen: list[dict[str, object]] = []

    async def fn(items: Sequence[int]) -> Sequence[int]:
        seen.append(dict(logs.fields()))
        return [i * 10 for i in items]

    c = batching.Coalescer(fn, max_size=10, seconds=30.0, what="thing_batch", window=0.005)

    async def request(item: int) -> int:
        with logs.bind(node=f"node-{item}"):
            return await c.submit(item)

    with logs.bind(controller="cloud-node-controller"):
        assert await asyncio.gather(request(1), request(2)) == [10, 20]
    assert seen == [{"controller": "cloud-node-controller"}]
