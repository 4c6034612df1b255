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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from ccm.controllers import base
from ccm.errors import CloudProviderError

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
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

BatchFn = Callable[[Sequence[I]], Awaitable[Sequence[R | Exception]]]


class BatchAnswerError(CloudProviderError):
    """The provider answered a batch call with the wrong number of results (a provider bug);
    every input of that batch gets this error."""


async def call_batch(
    fn: BatchFn[I, R], items: Sequence[I], seconds: float | None, what: str
) -> list[R | Exception]:
    """One batch call for ``items`` (bounded by ``seconds``); one result or Exception per item.

    The call's own exception (including :class:`ccm.errors.CloudCallTimeoutError`) becomes every
    item's result; cancellation propagates.
    """
    if not items:
        return []
    try:
        answers = await base.call_cloud(fn(items), seconds, what)
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
    ) -> None:
        self._fn = fn
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
        #: Batch calls made and items answered (for tests and logs).
        self.calls = 0
        self.items = 0

    async def submit(self, item: I, *, urgent: bool = False) -> R:
        """Ask for ``item``; returns its result or raises its exception. An ``urgent`` request
        goes after the urgent requests already waiting and before all others."""
        if self._closed:
            raise RuntimeError(f"{self._what}: the coalescer is closed")
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
        task = asyncio.create_task(coro, name=f"batch/{self._what}/{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self) -> None:
        # In place: a sweep as wide as the cluster queues thousands of requests at once, and
        # copying the rest of the list for every batch (or every request) would be quadratic.
        batch = self._pending[: self.max_size]
        del self._pending[: self.max_size]
        self._in_flight += 1
        self._spawn(self._run(batch), "call")

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
            # Requests that queued up during the call have waited already: they go now.
            self._schedule(partial_now=True)
