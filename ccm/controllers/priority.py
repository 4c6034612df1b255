"""Background sweeps that give way to urgent work sharing the same cloud.

A periodic sweep (the node controller's address refresh, the service controller's node sync) runs
many cloud calls in parallel; work that serves an object for the first time (initializing a new
Node, the first load balancer of a Service) must not queue behind them at a slow or rate-limited
cloud. A :class:`PriorityGate` is shared by both: urgent work runs inside :meth:`urgent`, each
background cloud call inside :meth:`background`. While any urgent work is in progress, background
calls go one at a time (after the ones already in flight have returned), so the cloud serves the
urgent work next and the sweep still advances; once no urgent work is left, the sweep's full
parallelism resumes at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterator

__all__ = ["PriorityGate"]


class PriorityGate:
    """Lets urgent work overtake a background sweep (see the module docstring)."""

    def __init__(self) -> None:
        self._urgent = 0
        self._background = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def urgent_in_progress(self) -> int:
        """Urgent jobs running now."""
        return self._urgent

    @property
    def background_in_progress(self) -> int:
        """Background calls running now."""
        return self._background

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """Mark the enclosed work as urgent: background calls slow down to one at a time."""
        self._urgent += 1
        try:
            yield
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._wake(everyone=True)

    @contextlib.asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Wait for a turn, then run the enclosed background call."""
        while self._urgent and self._background:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(everyone=False)  # pass on the turn this waiter was given
                raise
        self._background += 1
        try:
            yield
        finally:
            self._background -= 1
            # One call may go in its place (waking every waiter for each call that returns
            # would be quadratic in a wide sweep); when the urgent work ends, all go.
            self._wake(everyone=not self._urgent)

    def _wake(self, *, everyone: bool) -> None:
        """Wake the longest waiting background call (each re-checks), or every one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return
