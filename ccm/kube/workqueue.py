"""An asyncio work queue with client-go semantics: dedup, a processing set, delays and rate limits.

Ports ``k8s.io/client-go/util/workqueue`` (``queue.go``, ``delaying_queue.go``,
``rate_limiting_queue.go``, ``default_rate_limiters.go``) and its metrics:

* an item added while queued is queued once (dedup, the "dirty" set);
* an item handed to a worker is not handed to another worker until :meth:`WorkQueue.done`; adds in
  the meantime mark it dirty and it is queued again on ``done``;
* :meth:`WorkQueue.add_after` keeps the earliest deadline per item;
* :meth:`WorkQueue.add_rate_limited` asks the queue's :class:`RateLimiter` for the delay;
* after :meth:`WorkQueue.shutdown`, adds are ignored and :meth:`WorkQueue.get` hands out what is
  still queued, then raises :class:`ShutDown`.

Beyond upstream, two lanes: ``add(item, low=True)`` queues resync work (a relist or start-up
re-adding every key, a periodic sweep's retries) behind new work (the default lane), so an object
never seen before is not queued behind thousands of keys that are only being re-checked. An item
queued in the low lane moves to the high lane when it is added again as new work (never the other
way). While both lanes hold items, one item in every ``low_share`` handed out comes from the low
lane, so resync work is slowed, never starved. Retries (``add_after`` and ``add_rate_limited`` of
an item being processed) keep the lane the item was handed out from.

All time comes from the running loop (:mod:`ccm.clock`); delays are ``loop.call_at`` timers, so the
queue owns no task and looptime drives it in tests. Items must be hashable. Not thread-safe: use it
from one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from ccm import clock, metrics
from ccm.kube import ratelimit

__all__ = [
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "ShutDown",
    "WorkQueue",
    "default_controller_rate_limiter",
]

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):  # the upstream "shutdown" result of Get
    """The queue is shut down and drained: the worker should exit."""


class RateLimiter(Protocol):
    """How long an item waits before it is re-queued (upstream ``workqueue.TypedRateLimiter``)."""

    def when(self, item: Hashable) -> float: ...

    def forget(self, item: Hashable) -> None: ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """``base_delay * 2**failures`` per item, capped at ``max_delay``."""

    def __init__(self, base_delay: float, max_delay: float) -> None:
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must be >= 0")
        self.base_delay = float(base_delay)
        self.max_delay = float(max_delay)
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        if exp >= 1024:  # 2.0**1024 raises OverflowError; the cap was reached long ago anyway
            return self.max_delay
        return min(self.base_delay * 2.0**exp, self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """One token bucket for all items: an overall ``qps``/``burst`` limit on retries."""

    def __init__(self, qps: float, burst: int) -> None:
        self._bucket = ratelimit.TokenBucket(qps, burst)

    def when(self, item: Hashable) -> float:
        return self._bucket.reserve()

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay of several limiters (every limiter is consulted on every call)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self._limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter() -> RateLimiter:
    """client-go's ``DefaultControllerRateLimiter``.

    Per item 5 ms doubling up to 1000 s, and overall 10 qps with a burst of 100.
    """
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(10.0, 100),
    )


class WorkQueue(Generic[T]):
    """A de-duplicating, delaying, rate-limited FIFO of keys for controller workers.

    The usual worker loop::

        while True:
            try:
                key = await queue.get()
            except workqueue.ShutDown:
                return
            try:
                await reconcile(key)
            except Exception:
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)
    """

    def __init__(
        self, name: str, *, rate_limiter: RateLimiter | None = None, low_share: int = 10
    ) -> None:
        if low_share < 2:
            raise ValueError(f"low_share must be >= 2, got {low_share}")
        self.name = name
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter()
        self.low_share = low_share
        # Two FIFO lanes of (sequence, item). An entry is live while _queued[item] is its
        # sequence; a promotion to the high lane leaves a stale entry behind in the low lane,
        # skipped when it comes up (cheaper than removing it from the middle of a deque).
        self._high: collections.deque[tuple[int, T]] = collections.deque()
        self._low: collections.deque[tuple[int, T]] = collections.deque()
        self._queued: dict[T, int] = {}  # item -> sequence of its live lane entry
        self._n_low = 0  # live entries of the low lane
        self._high_streak = 0  # high-lane items handed out in a row while the low lane waited
        self._dirty: dict[T, bool] = {}  # item -> queued (or to queue on done) in the low lane
        self._processing: dict[T, float] = {}  # item -> loop time it was handed out
        self._processing_low: set[T] = set()  # items handed out from the low lane
        self._added_at: dict[T, float] = {}  # item -> loop time it was (first) queued
        self._shutting_down = False
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._drained: list[asyncio.Future[None]] = []
        # Delaying part: the earliest deadline per item, a heap with lazy deletion, one timer.
        self._waiting: dict[T, float] = {}
        self._waiting_low: set[T] = set()  # delayed items that will be added to the low lane
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._m_depth = metrics.WORKQUEUE_DEPTH.labels(name)
        self._m_adds = metrics.WORKQUEUE_ADDS.labels(name)
        self._m_queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(name)
        self._m_work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(name)
        # Computed when scraped (upstream refreshes them every 500 ms), not on every get and done.
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(name).set_function(self._unfinished_seconds)
        metrics.WORKQUEUE_LONGEST_RUNNING.labels(name).set_function(self._longest_running_seconds)
        self._m_retries = metrics.WORKQUEUE_RETRIES.labels(name)

    def __repr__(self) -> str:
        return (
            f"<WorkQueue {self.name!r} queued={len(self._queued)} low={self._n_low} "
            f"processing={len(self._processing)} waiting={len(self._waiting)}>"
        )

    # -- basic queue -------------------------------------------------------------------------

    def add(self, item: T, *, low: bool = False) -> None:
        """Queue ``item`` unless already queued; if it is being processed, queue it on done.

        ``low=True`` queues it in the low (resync) lane; an item already queued there moves to
        the high lane when added without ``low``.
        """
        if self._shutting_down:
            return
        queued_low = self._dirty.get(item)
        if queued_low is not None:
            if queued_low and not low:
                self._promote(item)
            return
        self._m_adds.inc()
        self._dirty[item] = low
        if item in self._processing:
            return
        self._push(item, low)

    def _promote(self, item: T) -> None:
        self._dirty[item] = False
        if item in self._queued:  # else it is being processed: it is queued high on done
            self._n_low -= 1
            self._push(item, False)  # the low-lane entry becomes stale

    def _push(self, item: T, low: bool) -> None:
        self._added_at.setdefault(item, clock.monotonic())
        if low and item not in self._queued:
            self._n_low += 1
        seq = self._queued[item] = next(self._seq)
        (self._low if low else self._high).append((seq, item))
        self._m_depth.set(len(self._queued))
        self._wakeup_one()

    def _wakeup_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _wakeup_all(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    async def get(self) -> T:
        """Wait for the next item and mark it as being processed. Raises :class:`ShutDown`."""
        while not self._queued:
            if self._shutting_down:
                raise ShutDown(f"work queue {self.name!r} is shut down")
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                # If we were woken and then cancelled, pass the wake-up on so no item is stranded.
                if getter.done() and not getter.cancelled() and self._queued:
                    self._wakeup_one()
                elif not getter.done():
                    getter.cancel()
                raise
        item, low = self._pop()
        now = clock.monotonic()
        added = self._added_at.pop(item, None)
        if added is not None:
            self._m_queue_duration.observe(max(0.0, now - added))
        self._processing[item] = now
        if low:
            self._processing_low.add(item)
        del self._dirty[item]
        self._m_depth.set(len(self._queued))
        return item

    def _pop(self) -> tuple[T, bool]:
        """The next live item and whether it came from the low lane (at least one is queued)."""
        n_high = len(self._queued) - self._n_low
        low = n_high == 0 or (self._n_low > 0 and self._high_streak >= self.low_share - 1)
        self._high_streak = self._high_streak + 1 if not low and self._n_low else 0
        lane = self._low if low else self._high
        while True:
            seq, item = lane.popleft()
            if self._queued.get(item) == seq:
                break
        del self._queued[item]
        if low:
            self._n_low -= 1
        return item, low

    def done(self, item: T) -> None:
        """Mark ``item`` as finished; if it was re-added meanwhile, it is queued again now."""
        started = self._processing.pop(item, None)
        self._processing_low.discard(item)
        now = clock.monotonic()
        if started is not None:
            self._m_work_duration.observe(max(0.0, now - started))
        low = self._dirty.get(item)
        if low is not None and started is not None:
            self._push(item, low)
        if not self._processing:
            for fut in self._drained:
                if not fut.done():
                    fut.set_result(None)
            self._drained.clear()

    def _unfinished_seconds(self) -> float:
        """Seconds of work in progress, summed over the items being processed."""
        now = clock.monotonic()
        return sum(max(0.0, now - t) for t in list(self._processing.values()))

    def _longest_running_seconds(self) -> float:
        """Seconds the longest-running item has been processed (0 when none is)."""
        started = list(self._processing.values())
        return max(0.0, clock.monotonic() - min(started)) if started else 0.0

    def __len__(self) -> int:
        """Items queued and not yet handed out (upstream ``Len``; excludes delayed items)."""
        return len(self._queued)

    @property
    def low_len(self) -> int:
        """Items queued in the low (resync) lane and not yet handed out."""
        return self._n_low

    def __contains__(self, item: object) -> bool:
        return item in self._dirty

    def peek(self, limit: int) -> list[T]:
        """Up to ``limit`` queued items, the high lane first, each lane in order: the order
        :meth:`get` hands them out, but for the low lane's share (a look, nothing moves)."""
        found: list[T] = []
        for lane in (self._high, self._low):
            for seq, item in lane:
                if len(found) >= limit:
                    return found
                if self._queued.get(item) == seq:  # skip the stale entries promotions leave
                    found.append(item)
        return found

    @property
    def processing(self) -> frozenset[T]:
        """Items handed out and not yet marked done."""
        return frozenset(self._processing)

    @property
    def waiting(self) -> int:
        """Items scheduled by add_after / add_rate_limited and not yet due."""
        return len(self._waiting)

    def shutdown(self) -> None:
        """Stop accepting items, drop delayed ones, and wake every waiting ``get``."""
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        self._waiting.clear()
        self._waiting_low.clear()
        self._heap.clear()
        self._wakeup_all()

    async def shutdown_with_drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Shut down, then wait until items being processed are done; False on timeout."""
        self.shutdown()
        if not self._processing:
            return True
        fut = asyncio.get_running_loop().create_future()
        self._drained.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return False
        return True

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # -- delaying ----------------------------------------------------------------------------

    def add_after(self, item: T, delay: float, *, low: bool | None = None) -> None:
        """Add ``item`` after ``delay`` seconds; an earlier pending deadline for it wins.

        ``low``: the lane (see :meth:`add`); ``None`` keeps the lane of an item being processed
        (a retry) and is the high lane otherwise. Of two pending adds, the high lane wins.
        """
        if self._shutting_down:
            return
        if low is None:
            low = item in self._processing_low
        if delay <= 0:
            self.add(item, low=low)
            return
        deadline = clock.monotonic() + delay
        current = self._waiting.get(item)
        if not low:
            self._waiting_low.discard(item)
        elif current is None:
            self._waiting_low.add(item)
        if current is not None and current <= deadline:
            return
        self._waiting[item] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), item))
        self._schedule()

    def _schedule(self) -> None:
        while self._heap and self._waiting.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale entry: superseded by an earlier deadline or fired
        if not self._heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = None
            return
        first = self._heap[0][0]
        if self._timer is not None and self._timer_at is not None and self._timer_at <= first:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = first
        self._timer = loop.call_at(first, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = clock.monotonic()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, item = heapq.heappop(self._heap)
            if self._waiting.get(item) == deadline:
                del self._waiting[item]
                low = item in self._waiting_low
                self._waiting_low.discard(item)
                self.add(item, low=low)
        if self._heap:
            self._schedule()

    # -- rate limiting -----------------------------------------------------------------------

    def add_rate_limited(self, item: T, *, low: bool | None = None) -> None:
        """Add ``item`` after the delay its rate limiter gives (counts as a retry); ``low`` as
        in :meth:`add_after`."""
        if self._shutting_down:
            return
        self._m_retries.inc()
        self.add_after(item, self.rate_limiter.when(item), low=low)

    def forget(self, item: T) -> None:
        """Clear ``item``'s failure history (call after a successful reconcile)."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)
