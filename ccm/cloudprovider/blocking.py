"""Blocking cloud SDKs, the supported way: a bounded, named thread pool owned by the framework.

Every widespread cloud SDK (boto3, the azure-mgmt clients, google-cloud's REST clients) is
synchronous. Called inside ``async def`` it stops the one event loop, and with it every controller,
every informer and the leader Lease renewal. A provider built on such an SDK wraps each call::

    from ccm.cloudprovider import run_blocking

    reservations = await run_blocking(ec2.describe_instances, InstanceIds=[instance_id])

:func:`run_blocking` runs the call on the current :class:`BlockingPool`: the daemon's (created
before the provider, sized by ``--cloud-threads``, shut down after the provider's ``aclose``), or
outside the daemon (unit tests, the conformance suite, a script) a default pool of
:data:`DEFAULT_THREADS` threads created on first use. Threads are named ``ccm-cloud-1``,
``ccm-cloud-2``, … (``py-spy dump`` and thread dumps show which are busy), started on demand and
ended after :data:`IDLE_TIMEOUT` seconds without work. They are daemon threads: a call stuck in an
SDK never keeps the process from exiting.

Cancellation. A call cancelled before a thread picks it up never runs. A call cancelled while it
runs cannot be interrupted (Python cannot stop a thread): the thread finishes it, its result or
exception is dropped, and it is counted in ``ccm_cloud_threads_abandoned_total``. The controller
does not wait for it: ``--cloud-call-timeout`` bounds the controller's await whatever the thread
does. The thread stays busy until the SDK returns, so SDK clients should carry their own timeouts
(boto3's ``connect_timeout``/``read_timeout``, azure's ``timeout``) shorter than
``--cloud-call-timeout``.

Metrics (label ``pool``, the pool's name):

- ``ccm_cloud_threads_max``: the pool's size.
- ``ccm_cloud_threads``: threads alive (started on demand, up to the size).
- ``ccm_cloud_threads_busy``: threads running a call; equal to the size means saturated.
- ``ccm_cloud_threads_queued``: calls waiting for a thread.
- ``ccm_cloud_threads_wait_seconds``: how long each call waited for a thread (histogram).
- ``ccm_cloud_threads_abandoned_total``: calls whose caller was cancelled (a timeout, shutdown)
  while a thread ran them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import enum
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from ccm import metrics

__all__ = [
    "DEFAULT_THREADS",
    "IDLE_TIMEOUT",
    "BlockingPool",
    "current_pool",
    "run_blocking",
    "use_pool",
]

_log = logging.getLogger("ccm.cloudprovider.blocking")

P = ParamSpec("P")
T = TypeVar("T")

#: Size of the pool created on first use outside the daemon (the daemon sizes its own).
DEFAULT_THREADS = 16
#: Seconds an idle thread waits for work before it ends (the pool starts another on demand).
IDLE_TIMEOUT = 60.0

THREADS_MAX = Gauge(
    "ccm_cloud_threads_max",
    "Size of the thread pool running blocking cloud SDK calls.",
    ["pool"],
    registry=metrics.REGISTRY,
)
THREADS = Gauge(
    "ccm_cloud_threads",
    "Threads alive in the pool running blocking cloud SDK calls.",
    ["pool"],
    registry=metrics.REGISTRY,
)
THREADS_BUSY = Gauge(
    "ccm_cloud_threads_busy",
    "Threads running a blocking cloud SDK call; equal to ccm_cloud_threads_max means saturated.",
    ["pool"],
    registry=metrics.REGISTRY,
)
THREADS_QUEUED = Gauge(
    "ccm_cloud_threads_queued",
    "Blocking cloud SDK calls waiting for a free thread.",
    ["pool"],
    registry=metrics.REGISTRY,
)
THREADS_WAIT = Histogram(
    "ccm_cloud_threads_wait_seconds",
    "How long a blocking cloud SDK call waited for a free thread.",
    ["pool"],
    buckets=(0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=metrics.REGISTRY,
)
THREADS_ABANDONED = Counter(
    "ccm_cloud_threads_abandoned",
    "Blocking cloud SDK calls whose caller was cancelled while a thread ran them (result dropped).",
    ["pool"],
    registry=metrics.REGISTRY,
)


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLED = "cancelled"
    DONE = "done"


class _Call:
    """One submitted call: what to run, where to deliver the outcome, and how far it got."""

    __slots__ = ("abandoned", "enqueued", "fn", "future", "loop", "state")

    def __init__(
        self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.state = _State.QUEUED
        self.abandoned = False
        # Real time, not ccm.clock: the wait is measured on a worker thread, where the event
        # loop's (possibly fast-forwarded) clock is not available.
        self.enqueued = time.monotonic()


class BlockingPool:
    """A bounded pool of named daemon threads for blocking calls, awaited from any event loop.

    ``max_threads`` bounds the calls running at once; further calls wait in FIFO order (see
    ``ccm_cloud_threads_queued``). One pool may serve several event loops (each call remembers
    its own). :meth:`aclose` stops it.
    """

    def __init__(
        self, max_threads: int, *, name: str = "ccm-cloud", idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        if max_threads < 1:
            raise ValueError(f"a blocking pool needs at least one thread, got {max_threads}")
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0, got {idle_timeout}")
        self.name = name
        self.max_threads = max_threads
        self._idle_timeout = idle_timeout
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[_Call] = collections.deque()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._busy = 0
        self._closed = False
        self._numbers = itertools.count(1)
        self._no_threads = threading.Event()
        self._no_threads.set()
        # Label children looked up once: every call updates them.
        self._m_threads = THREADS.labels(name)
        self._m_busy = THREADS_BUSY.labels(name)
        self._m_queued = THREADS_QUEUED.labels(name)
        self._m_wait = THREADS_WAIT.labels(name)
        self._m_abandoned = THREADS_ABANDONED.labels(name)
        THREADS_MAX.labels(name).set(max_threads)
        self._publish()

    @property
    def busy(self) -> int:
        """Threads running a call now."""
        return self._busy

    @property
    def queued(self) -> int:
        """Calls waiting for a thread now."""
        return len(self._queue)

    @property
    def threads(self) -> int:
        """Threads alive now (busy or idle)."""
        return len(self._threads)

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a pool thread and return (or raise) what it does.

        The caller's context variables are visible to ``fn`` (as with ``asyncio.to_thread``).
        Cancelling the caller before a thread starts ``fn`` removes the call; cancelling it while
        ``fn`` runs lets the thread finish and drops the outcome. Raises ``RuntimeError`` after
        :meth:`aclose`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        ctx = contextvars.copy_context()
        call = _Call(functools.partial(ctx.run, fn, *args, **kwargs), loop, future)
        self._submit(call)
        try:
            return await future
        except asyncio.CancelledError:
            self._cancel(call)
            raise

    def _submit(self, call: _Call) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"blocking pool {self.name} is shut down")
            self._queue.append(call)
            if self._idle >= len(self._queue):
                self._cond.notify()
            elif len(self._threads) < self.max_threads:
                self._start_thread()
            self._publish()

    def _start_thread(self) -> None:
        """Start one worker thread (the lock is held)."""
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-{next(self._numbers)}", daemon=True
        )
        self._threads.add(thread)
        self._no_threads.clear()
        thread.start()

    def _cancel(self, call: _Call) -> None:
        with self._cond:
            if call.state is _State.QUEUED:
                self._queue.remove(call)
                call.state = _State.CANCELLED
                self._publish()
            elif call.state is _State.RUNNING:
                call.abandoned = True
                self._m_abandoned.inc()

    def _publish(self) -> None:
        """Export the pool's state (the lock is held)."""
        self._m_threads.set(len(self._threads))
        self._m_busy.set(self._busy)
        self._m_queued.set(len(self._queue))

    def _next_call(self) -> _Call | None:
        """Wait for a call to run; ``None`` when the thread should end (idle too long, closed)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._idle += 1
                try:
                    woken = self._cond.wait(self._idle_timeout)
                finally:
                    self._idle -= 1
                if not woken and not self._queue:
                    break
            if not self._queue:
                self._retire()
                return None
            call = self._queue.popleft()
            call.state = _State.RUNNING
            self._busy += 1
            self._publish()
        self._m_wait.observe(time.monotonic() - call.enqueued)
        return call

    def _retire(self) -> None:
        """Forget the calling thread, which is about to end (the lock is held)."""
        self._threads.discard(threading.current_thread())
        if not self._threads:
            self._no_threads.set()
        self._publish()

    def _work(self) -> None:
        while (call := self._next_call()) is not None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = call.fn()
            except Exception as exc:
                error = exc
            except BaseException as exc:
                # SystemExit or KeyboardInterrupt raised by the SDK: the caller gets an ordinary
                # error (an asyncio future must not carry them) and the thread ends.
                self._finish(call, None, RuntimeError(f"blocking call raised {exc!r}"))
                with self._cond:
                    self._retire()
                raise
            self._finish(call, result, error)
            del call, result, error  # drop references before waiting for the next call

    def _finish(self, call: _Call, result: Any, error: BaseException | None) -> None:
        with self._cond:
            call.state = _State.DONE
            self._busy -= 1
            self._publish()
        if call.abandoned:
            _log.debug("dropped the outcome of a cancelled blocking call %r", call.fn)
            return
        _deliver(call, result, error)

    async def aclose(self, grace: float = 5.0) -> bool:
        """Stop the pool: refuse new calls, fail queued ones, let idle threads end and wait up to
        ``grace`` seconds for busy ones to finish.

        Returns whether every thread ended in time. Threads still running are logged by name and
        left behind (daemon threads do not hold up the process's exit). Idempotent.
        """
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            for call in dropped:
                call.state = _State.CANCELLED
            self._cond.notify_all()
            self._publish()
        for call in dropped:
            _deliver(call, None, RuntimeError(f"blocking pool {self.name} is shut down"))
        ended = await asyncio.to_thread(self._no_threads.wait, grace)
        if not ended:
            with self._cond:
                running = sorted(t.name for t in self._threads)
            _log.warning(
                "blocking pool %s: %d thread(s) still running a cloud call after %gs: %s",
                self.name,
                len(running),
                grace,
                ", ".join(running),
            )
        return ended


def _deliver(call: _Call, result: Any, error: BaseException | None) -> None:
    """Hand a call's outcome to the loop that awaits it; a caller that went away gets nothing."""
    try:
        call.loop.call_soon_threadsafe(_settle, call.future, result, error)
    except RuntimeError:  # the loop is closed: nobody awaits this call any more
        _log.debug("dropped the outcome of a blocking call: its event loop is closed")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled in the meantime
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_current: contextvars.ContextVar[BlockingPool | None] = contextvars.ContextVar(
    "ccm_blocking_pool", default=None
)
_default: BlockingPool | None = None
_default_lock = threading.Lock()


def current_pool() -> BlockingPool:
    """The pool :func:`run_blocking` uses: the one installed by :func:`use_pool` (the daemon's),
    else a default pool of :data:`DEFAULT_THREADS` threads created on first use."""
    pool = _current.get()
    if pool is not None:
        return pool
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = BlockingPool(DEFAULT_THREADS, name="ccm-cloud-default")
        return _default


@contextlib.contextmanager
def use_pool(pool: BlockingPool) -> Iterator[BlockingPool]:
    """Make ``pool`` the current pool in this context (and the tasks started from it)."""
    token = _current.set(pool)
    try:
        yield pool
    finally:
        _current.reset(token)


async def run_blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run the blocking ``fn(*args, **kwargs)`` on the current pool (see :func:`current_pool`)
    and return its result; semantics as :meth:`BlockingPool.run`."""
    return await current_pool().run(fn, *args, **kwargs)
