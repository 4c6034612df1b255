"""Fencing: a replica that may no longer be the leader writes nothing.

A leader can be paused past its lease (SIGSTOP, a frozen VM, a blocked event loop) and resume
after a standby took over. Its controllers then still hold work decided on the old state: a Node
patch, a route deletion, a load balancer update. client-go's answer is a leader check right before
acting; ccm makes it one gate that every write passes:

* the Kubernetes client's write verbs (create, update, patch, delete: :mod:`ccm.kube.client`);
* the cloud calls that change the cloud (:data:`MUTATING_CLOUD_CALLS`, checked by
  ``ccm.controllers.base.call_cloud``).

The gate is a context variable. The controller manager installs the leader elector's check with
:func:`guard` at the start of the code that runs while leading; every task created from there
(controllers, event recorders, the provider's own tasks) inherits it, while the elector's Lease
renewals, which run outside, are never gated. Without leader election nothing is installed and
:func:`check` does nothing. A refused write raises :class:`NotLeaderError`; the check that refused
it also makes the elector step down (the process exits 1, as on any lost lease).

A check that passes holds only until the lease may lapse (the guard returns that moment), while a
request can spend long after it on its way out: waiting for a pooled connection, a TCP and TLS
handshake. A process stopped there (SIGSTOP past the lease) would send the request on resuming,
with no further check. :func:`fenced` therefore bounds the sending itself: when the moment comes
and the guard, asked again, refuses, the request is cancelled. On resuming, the loop runs the due
timer in the same iteration as the I/O callbacks that complete the handshake, before the request's
own task can go on, so nothing reaches the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Final

from ccm import clock
from ccm.errors import KubeError

__all__ = ["MUTATING_CLOUD_CALLS", "NotLeaderError", "check", "fenced", "guard"]

#: The cloud calls (by the name ``call_cloud`` is given) that change the cloud.
MUTATING_CLOUD_CALLS: Final = frozenset(
    {
        "ensure_load_balancer",
        "update_load_balancer",
        "ensure_load_balancer_deleted",
        "create_route",
        "delete_route",
    }
)

#: A guard returns the ``ccm.clock.monotonic`` time until which writes stay allowed (``None``: no
#: limit) or raises :class:`NotLeaderError`.
Guard = Callable[[], float | None]

_GUARD: contextvars.ContextVar[Guard | None] = contextvars.ContextVar(
    "ccm_write_guard", default=None
)


class NotLeaderError(KubeError):
    """A write was refused: this replica's lease lapsed (or it stopped leading) before it acted.

    A :class:`ccm.errors.KubeError` (a request that never reached the apiserver), so every caller
    that copes with a failed write (event recorders, credential refresh, the controllers' retry
    switch) copes with this one; retrying it is pointless, the process is stepping down.
    """


def check() -> float | None:
    """Raise :class:`NotLeaderError` if the installed guard refuses writes; else return the
    ``ccm.clock.monotonic`` time until which they stay allowed (``None``: no guard, no limit)."""
    current = _GUARD.get()
    if current is None:
        return None
    return current()


def fenced() -> contextlib.AbstractAsyncContextManager[None]:
    """Check, then run the body (a write on its way to the apiserver) only while writes stay
    allowed: when the allowed time ends and the guard, asked again, refuses, the body is cancelled
    and :class:`NotLeaderError` raised; when it allows (the lease was renewed meanwhile), the body
    goes on until the new end."""
    return _Fence()


class _Fence(contextlib.AbstractAsyncContextManager[None]):
    """:func:`fenced` as a plain class: every write passes here, and without a guard (no leader
    election) entering and leaving cost two method calls."""

    __slots__ = ("_handle", "_refused", "_task")

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._refused: NotLeaderError | None = None
        self._task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> None:
        until = check()
        if until is None:
            return
        self._task = asyncio.current_task()
        assert self._task is not None
        self._handle = asyncio.get_running_loop().call_later(
            until - clock.monotonic(), self._expire
        )

    def _expire(self) -> None:
        try:
            later = check()
        except NotLeaderError as exc:
            self._handle = None
            self._refused = exc
            assert self._task is not None
            self._task.cancel()
            return
        self._handle = (
            None
            if later is None
            else asyncio.get_running_loop().call_later(later - clock.monotonic(), self._expire)
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if (
            isinstance(exc, asyncio.CancelledError)
            and self._refused is not None
            and self._task is not None
            and self._task.uncancel() == 0
        ):
            raise self._refused from None


@contextlib.contextmanager
def guard(check_fn: Guard) -> Iterator[None]:
    """Gate every write made in this context (and the tasks created in it) by ``check_fn``, which
    raises :class:`NotLeaderError` to refuse and else returns until when writes stay allowed."""
    token = _GUARD.set(check_fn)
    try:
        yield
    finally:
        _GUARD.reset(token)
