"""What the suite watches while a provider runs: the exceptions it raises and how long it holds the
event loop.

Every capability call of a conformance run, by the controllers and by the scenarios alike, goes
through :class:`ObservedProvider`. Its proxy records each exception that is not a ``ccm.errors``
type (the ``errors-are-ccm-errors`` rule) and times how long each call holds the event loop (the
``does-not-block-event-loop`` rule).

How a hold is measured
======================
A coroutine holds the event loop from each resumption until its next suspension: nothing else on
that loop runs meanwhile (no controller, no timer, no watch). The proxy drives the provider's
coroutine itself, one step at a time, and times every step; a synchronous method
(``get_load_balancer_name``) is timed as one step. A step that does ``time.sleep(1)``, a synchronous
SDK call or a long parse takes as long as that work, whereas a well-behaved step (compute a request,
hand it to a socket or a thread, suspend) takes microseconds. The measure is exact about *who* held
the loop: only the provider's own code runs inside a step.

On a loaded machine a step can also be slow because the loop's thread waited for a CPU. That wait
is not the provider's doing, so it is subtracted: on Linux the kernel counts, per thread, the time
spent runnable but not running (``/proc/thread-self/schedstat``, second field), and the hold is
the step's wall time minus the growth of that count during the step. Where the count is not
available the wall time is used. A step counts as a hold when it reaches the threshold
(``SuiteConfig.loop_hold_threshold``, 0.1 s by default): a real block of a second exceeds it ten
times over, while the scheduling jitter of a busy machine is taken out before the comparison.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from ccm import errors
from ccm.cloudprovider import CloudProvider, InitContext

__all__ = ["DEFAULT_LOOP_HOLD_THRESHOLD", "LoopHold", "ObservedProvider", "Observer"]

#: A provider step holding the event loop at least this long (seconds) is a violation.
DEFAULT_LOOP_HOLD_THRESHOLD = 0.1

_SCHEDSTAT = "/proc/thread-self/schedstat"


class _Fd:
    """An open file descriptor, closed with its owner (a thread's local storage)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        os.close(self.fd)


class _RunDelay(threading.local):
    """Per-thread reader of the kernel's run-queue delay of the calling thread (seconds)."""

    file: _Fd | None = None
    unavailable = False

    def read(self) -> float | None:
        if self.unavailable:
            return None
        try:
            if self.file is None:
                self.file = _Fd(_SCHEDSTAT)
            return int(os.pread(self.file.fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self.unavailable = True
            return None


_run_delay = _RunDelay()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopHold:
    """One step of a provider call that held the event loop at least the threshold.

    ``method`` is ``Capability.method``; ``task`` the asyncio task that made the call (a controller
    worker such as ``cloud-node/worker-0``, or a scenario); ``thread`` the thread running that event
    loop; ``held`` the seconds the loop was held (the wait for a CPU excluded); ``ended`` the
    ``time.monotonic()`` at the end of the step.
    """

    method: str
    task: str
    thread: str
    held: float
    ended: float

    def describe(self) -> str:
        return (
            f"{self.method} held the event loop (thread {self.thread!r}, called from task "
            f"{self.task!r}) for {self.held:.2f}s in one step"
        )


class Observer:
    """Collects what the proxies see during one run."""

    def __init__(self, *, loop_hold_threshold: float = DEFAULT_LOOP_HOLD_THRESHOLD) -> None:
        self.foreign_errors: list[str] = []
        self.holds: list[LoopHold] = []
        self.loop_hold_threshold = loop_hold_threshold

    def wrap(self, capability: str, target: Any) -> Any:
        return _CapabilityProxy(capability, target, self)

    def holds_between(self, start: float, end: float) -> list[LoopHold]:
        """Holds that overlap ``[start, end]`` (``time.monotonic()`` values), longest first."""
        found = [h for h in self.holds if h.ended >= start and h.ended - h.held <= end]
        return sorted(found, key=lambda h: -h.held)

    def step_started(self) -> tuple[float, float | None]:
        return time.perf_counter(), _run_delay.read()

    def step_ended(self, method: str, started: tuple[float, float | None]) -> None:
        wall = time.perf_counter() - started[0]
        if wall < self.loop_hold_threshold:
            return
        held = wall
        before, after = started[1], _run_delay.read()
        if before is not None and after is not None:
            held = max(0.0, wall - (after - before))
        if held < self.loop_hold_threshold:
            return
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        self.holds.append(
            LoopHold(
                method=method,
                task=task.get_name() if task is not None else "(no task)",
                thread=threading.current_thread().name,
                held=held,
                ended=time.monotonic(),
            )
        )


class _Watched:
    """Awaits a provider coroutine step by step, timing each step (see the module docstring)."""

    __slots__ = ("_coro", "_method", "_observer")

    def __init__(self, coro: Awaitable[Any], observer: Observer, method: str) -> None:
        self._coro = coro
        self._observer = observer
        self._method = method

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self._coro.__await__()
        value: Any = None
        thrown: BaseException | None = None
        while True:
            started = self._observer.step_started()
            try:
                yielded = inner.send(value) if thrown is None else inner.throw(thrown)
            except StopIteration as stop:
                self._observer.step_ended(self._method, started)
                return stop.value
            except BaseException:
                self._observer.step_ended(self._method, started)
                raise
            self._observer.step_ended(self._method, started)
            thrown = None
            try:
                value = yield yielded
            except GeneratorExit:
                close = getattr(inner, "close", None)
                if close is not None:
                    close()
                raise
            except BaseException as exc:  # delivered into the provider's coroutine, as await does
                thrown, value = exc, None


class _CapabilityProxy:
    """Forwards every call to the provider's capability, timing it and recording non-``ccm.errors``
    raises."""

    def __init__(self, capability: str, target: Any, observer: Observer) -> None:
        self._capability = capability
        self._target = target
        self._observer = observer

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        method = f"{self._capability}.{name}"
        observer = self._observer
        if not inspect.iscoroutinefunction(attr):
            return _timed_sync(attr, observer, method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await _watched(attr(*args, **kwargs), observer, method)

        return call


def _record_foreign(observer: Observer, method: str, exc: Exception) -> None:
    if not isinstance(exc, (errors.CCMError, TimeoutError)):
        observer.foreign_errors.append(f"{method} raised {type(exc).__name__}: {exc}")


async def _watched(awaitable: Awaitable[Any], observer: Observer, method: str) -> Any:
    try:
        return await _Watched(awaitable, observer, method)
    except Exception as exc:
        _record_foreign(observer, method, exc)
        raise


def _timed_sync(attr: Callable[..., Any], observer: Observer, method: str) -> Callable[..., Any]:
    """A synchronous method, timed as one step; an awaitable it returns (a coroutine made by a
    plain function, say) is watched like a coroutine method's."""

    def call(*args: Any, **kwargs: Any) -> Any:
        started = observer.step_started()
        try:
            result = attr(*args, **kwargs)
        except Exception as exc:
            _record_foreign(observer, method, exc)
            raise
        finally:
            observer.step_ended(method, started)
        if inspect.isawaitable(result):
            return _watched(result, observer, method)
        return result

    return call


class ObservedProvider(CloudProvider):
    """The provider as the controllers and the scenarios see it during a run (``inner`` is the real
    one)."""

    def __init__(self, inner: CloudProvider, observer: Observer) -> None:
        self.inner = inner
        self.name = inner.provider_name
        self.observer = observer

    async def initialize(self, context: InitContext) -> None:
        await _Watched(self.inner.initialize(context), self.observer, "CloudProvider.initialize")

    async def aclose(self) -> None:
        await _Watched(self.inner.aclose(), self.observer, "CloudProvider.aclose")

    def has_cluster_id(self) -> bool:
        return self.inner.has_cluster_id()

    def _wrap(self, name: str, cap: Any) -> Any:
        return None if cap is None else self.observer.wrap(name, cap)

    def instances_v2(self) -> Any:
        return self._wrap("InstancesV2", self.inner.instances_v2())

    def instances(self) -> Any:
        return self._wrap("Instances", self.inner.instances())

    def instances_batch(self) -> Any:
        return self._wrap("InstancesBatch", self.inner.instances_batch())

    def zones(self) -> Any:
        return self._wrap("Zones", self.inner.zones())

    def load_balancer(self) -> Any:
        return self._wrap("LoadBalancer", self.inner.load_balancer())

    def routes(self) -> Any:
        return self._wrap("Routes", self.inner.routes())

    def clusters(self) -> Any:
        return self._wrap("Clusters", self.inner.clusters())
