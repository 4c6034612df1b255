"""Batched cloud calls (the optional :class:`ccm.cloudprovider.InstancesBatch` capability).

Two pieces, shared by the node and node-lifecycle controllers:

- :func:`call_batch` makes one batch call bounded by the cloud-call timeout and returns exactly
  one result per input, in order: the provider's answer, or an ``Exception`` for that input (its
  own per-item error, the whole call's error, or :class:`BatchAnswerError` when the provider
  answered a list of the wrong length, which is also logged);
- :class:`Coalescer` lets concurrent callers ask for one item each (``await submit(item)``) and
  answers them with as few batch calls as it can, like a database's group commit:

  * with no call in flight, the first request waits ``window`` seconds for company, then goes;
  * while a call is in flight, requests queue up and go together, at once, when it returns; so
    the slower the cloud answers (latency, its own rate limit), the larger the batches;
  * ``max_size`` items make a full batch, sent at once, up to ``max_in_flight`` calls at a time.

  * an urgent request (``submit(item, urgent=True)``: a Node being initialized) goes before
    every request that is not urgent, so it rides in the next batch however many requests of a
    periodic sweep are waiting.

  Each waiter gets its own result or exception. A waiter that is cancelled leaves the others
  alone; when every waiter of a batch is gone before the call starts, no call is made, and when
  they are all gone during the call, the call is cancelled.

  * read-ahead (optional ``read_ahead`` and ``key``): a batch with room also asks for the items
    the caller will want next (for the node controller: the tainted Nodes waiting in its work
    queue). Their answers are kept for ``read_ahead_ttl`` seconds after the call returns, under
    ``key(item)`` (a Node's name, uid and resourceVersion, so a changed Node asks again), and a
    later ``submit`` of an equal key takes the kept answer (or waits for the call still carrying
    it) instead of queuing. A kept error is not reused: that item asks on its own.

  Why read-ahead: a worker asks for one Node's metadata, then writes that Node to the apiserver
  (the initialization patch, the address patch) before it asks for the next one. The workers
  therefore come back one by one, spread over the apiserver's write latency, and a short window
  catches few of them: 24 Nodes and 10 workers took 3 calls with instant writes and 13 with writes
  spread over 200 ms. With read-ahead the first call asks for every Node already waiting, so the
  number of calls follows the queue (about one per ``max_size`` Nodes of a burst), not the
  apiserver's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ccm import clock, logs
from ccm.controllers import base, cloudapi
from ccm.errors import CloudProviderError

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_READ_AHEAD_TTL",
    "DEFAULT_WINDOW",
    "BatchAnswerError",
    "Coalescer",
    "call_batch",
]

_log = logging.getLogger("ccm.controllers.batching")

I = TypeVar("I")  # noqa: E741 - an input item
R = TypeVar("R")  # a result

#: How long a request that finds no call in flight waits for company (seconds).
DEFAULT_WINDOW = 0.005
#: Full batches sent at once.
DEFAULT_MAX_IN_FLIGHT = 4
#: How long an answer asked for ahead of its request is kept after the call returned (seconds).
DEFAULT_READ_AHEAD_TTL = 30.0

BatchFn = Callable[[Sequence[I]], Awaitable[Sequence[R | Exception]]]


class BatchAnswerError(CloudProviderError):
    """The provider answered a batch call with the wrong number of results (a provider bug);
    every input of that batch gets this error."""


async def call_batch(
    fn: BatchFn[I, R],
    items: Sequence[I],
    seconds: float | None,
    what: str,
    *,
    capability: str = cloudapi.INSTANCES,
) -> list[R | Exception]:
    """One batch call for ``items`` (bounded by ``seconds``); one result or Exception per item.

    The call's own exception (including :class:`ccm.errors.CloudCallTimeoutError`) becomes every
    item's result; cancellation propagates.
    """
    if not items:
        return []
    try:
        answers = await base.call_cloud(fn(items), seconds, what, capability=capability)
    except Exception as exc:
        failed: list[R | Exception] = [exc] * len(items)
        return failed
    results: list[R | Exception] | None = None
    with contextlib.suppress(TypeError):
        results = list(answers)
    if results is None or len(results) != len(items):
        got = "no sequence" if results is None else f"{len(results)} results"
        message = (
            f"cloud provider bug: {what} answered {got} for {len(items)} nodes; "
            "treating every node of the batch as an error"
        )
        _log.error("%s", message)
        wrong: list[R | Exception] = [BatchAnswerError(message)] * len(items)
        return wrong
    return results


@dataclass(slots=True)
class _Ahead(Generic[R]):
    """An answer asked for ahead of its request: in flight, then kept until ``expires``."""

    future: asyncio.Future[R]
    expires: float = float("inf")


class Coalescer(Generic[I, R]):
    """Coalesces concurrent single-item requests into batch calls of ``fn`` (see the module)."""

    def __init__(
        self,
        fn: BatchFn[I, R],
        *,
        max_size: int,
        seconds: float | None,
        what: str,
        window: float = DEFAULT_WINDOW,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        read_ahead: Callable[[int], Sequence[I]] | None = None,
        key: Callable[[I], Hashable] | None = None,
        read_ahead_ttl: float = DEFAULT_READ_AHEAD_TTL,
    ) -> None:
        if (read_ahead is None) != (key is None):
            raise ValueError("read_ahead and key go together")
        self._fn = fn
        self._read_ahead = read_ahead
        self._key = key
        self._read_ahead_ttl = read_ahead_ttl
        self._ahead: dict[Hashable, _Ahead[R]] = {}
        self.max_size = max(1, int(max_size))
        self._seconds = seconds
        self._what = what
        self._window = max(0.0, window)
        self._max_in_flight = max(1, int(max_in_flight))
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._urgent: set[asyncio.Future[R]] = set()  # waiters of urgent requests
        self._in_flight = 0
        self._window_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Batch calls made, items answered, and requests answered by read-ahead (for tests).
        self.calls = 0
        self.items = 0
        self.read_ahead_hits = 0

    async def submit(self, item: I, *, urgent: bool = False) -> R:
        """Ask for ``item``; returns its result or raises its exception. An ``urgent`` request
        goes after the urgent requests already waiting and before all others."""
        if self._closed:
            raise RuntimeError(f"{self._what}: the coalescer is closed")
        if self._key is not None:
            ahead = self._ahead.pop(self._key(item), None)
            if ahead is not None and ahead.expires > clock.monotonic():
                # asyncio.wait: our cancellation propagates, the call's own does not reach us.
                await asyncio.wait({ahead.future})
                if not ahead.future.cancelled() and ahead.future.exception() is None:
                    self.read_ahead_hits += 1
                    return ahead.future.result()
                # A kept error (or a call cut short) is not reused: ask on our own.
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if urgent:
            self._pending.insert(self._urgent_pending(), (item, fut))
            self._urgent.add(fut)
            fut.add_done_callback(self._urgent.discard)
        else:
            self._pending.append((item, fut))
        self._schedule(partial_now=False)
        return await fut

    def _urgent_pending(self) -> int:
        """How many requests at the head of the pending list are urgent."""
        n = 0
        for _, fut in self._pending:
            if fut not in self._urgent:
                break
            n += 1
        return n

    async def aclose(self) -> None:
        """Cancel the batches in progress and the queued requests (their waiters get
        CancelledError)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        for ahead in self._ahead.values():
            ahead.future.cancel()
        self._ahead.clear()

    def _schedule(self, *, partial_now: bool) -> None:
        """Send what may go now: full batches while fewer than ``max_in_flight`` calls run; a
        partial batch only when nothing is in flight (at once if its requests already waited for a
        call, else after the window)."""
        if self._closed:
            return
        while self._pending and self._pending[0][1].done():  # waiters gone before their call
            del self._pending[0]
        while len(self._pending) >= self.max_size and self._in_flight < self._max_in_flight:
            self._dispatch()
        if not self._pending or self._in_flight:
            return
        if partial_now or self._window == 0:
            self._dispatch()
        elif self._window_task is None:
            self._window_task = self._spawn(self._after_window(), "window")

    async def _after_window(self) -> None:
        try:
            await asyncio.sleep(self._window)
        finally:
            self._window_task = None
        self._schedule(partial_now=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        # The task serves every queued request, not the one whose worker happened to start it.
        task = asyncio.create_task(
            coro, name=f"batch/{self._what}/{what}", context=logs.shared_context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self) -> None:
        # In place: a sweep as wide as the cluster queues thousands of requests at once, and
        # copying the rest of the list for every batch (or every request) would be quadratic.
        batch = self._pending[: self.max_size]
        del self._pending[: self.max_size]
        ahead = self._fill(batch)
        self._in_flight += 1
        self._spawn(self._run([*batch, *ahead]), "call")

    def _fill(self, batch: list[tuple[I, asyncio.Future[R]]]) -> list[tuple[I, asyncio.Future[R]]]:
        """Items to ask for ahead of their requests, in the room ``batch`` leaves."""
        room = self.max_size - len(batch)
        if self._read_ahead is None or self._key is None or room <= 0:
            return []
        now = clock.monotonic()
        for k in [k for k, a in self._ahead.items() if a.expires <= now]:
            del self._ahead[k]
        taken = {self._key(i) for i, _ in (*batch, *self._pending)}
        extra: list[tuple[I, asyncio.Future[R]]] = []
        try:
            candidates = list(self._read_ahead(room))
        except Exception:
            _log.exception("%s: read-ahead failed; sending the batch without it", self._what)
            return []
        for item in candidates[:room]:
            k = self._key(item)
            if k in taken or k in self._ahead:
                continue
            taken.add(k)
            fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)  # nobody may ever ask: never "exception not retrieved"
            self._ahead[k] = _Ahead(fut)
            extra.append((item, fut))
        return extra

    def _keep(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        """Start the keep period of the read-ahead answers ``batch`` carried."""
        if self._key is None:
            return
        expires = clock.monotonic() + self._read_ahead_ttl
        for item, fut in batch:
            ahead = self._ahead.get(self._key(item))
            if ahead is not None and ahead.future is fut:
                ahead.expires = expires

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            live = [(i, f) for i, f in batch if not f.done()]
            if not live:
                return
            call: asyncio.Task[list[R | Exception]] = asyncio.create_task(  # noqa: RUF006 - awaited
                call_batch(self._fn, [i for i, _ in live], self._seconds, self._what)
            )
            remaining = len(live)

            def waiter_done(_fut: asyncio.Future[Any]) -> None:
                nonlocal remaining
                remaining -= 1
                if remaining == 0 and not call.done():
                    call.cancel()  # nobody wants the answer any more

            for _, fut in live:
                fut.add_done_callback(waiter_done)
            self.calls += 1
            self.items += len(live)
            try:
                results = await call
            except asyncio.CancelledError:
                if remaining == 0:
                    return
                raise
            for (_, fut), result in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        finally:
            self._in_flight -= 1
            for _, fut in batch:
                if not fut.done():
                    fut.cancel()
            self._keep(batch)
            # Requests that queued up during the call have waited already: they go now.
            self._schedule(partial_now=True)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
