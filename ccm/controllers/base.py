"""Building blocks shared by the controllers: the bounded cloud call, the work-queue loop that
applies the one failure switch (:mod:`ccm.controllers.failures`) to every reconcile, and the
periodic loop that never overlaps itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sized
from typing import Any, Generic, Literal, Protocol, TypeVar, cast, overload

from ccm import clock, dryrun, fencing, logs, metrics, names, wellknown
from ccm.cloudprovider import LoadBalancerStatus
from ccm.controllers import cloudapi, failures
from ccm.controllers.failures import RECONCILE_TOTAL, Recorder
from ccm.errors import CloudCallTimeoutError, RetryAfterError, find_retry_after
from ccm.kube import client as kclient
from ccm.kube import workqueue

__all__ = [
    "RECONCILE_TOTAL",
    "CloudCallTimeoutError",
    "KubeDeleter",
    "KubeGetter",
    "KubePatcher",
    "PeriodicLoop",
    "Recorder",
    "WorkQueueLoop",
    "call_cloud",
    "run_bounded",
    "running",
]


class KubeGetter(Protocol):
    """``KubeClient.get``, as the controllers use it (so the in-memory fake fits too)."""

    async def get(
        self, res: kclient.Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]: ...


class KubePatcher(Protocol):
    """``KubeClient.patch`` (``decode=False``: the result is not decoded, ``None`` returned)."""

    @overload
    async def patch(
        self,
        res: kclient.Resource,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: kclient.PatchType = "strategic",
        field_manager: str | None = None,
        force: bool | None = None,
        decode: Literal[True] = True,
    ) -> dict[str, Any]: ...

    @overload
    async def patch(
        self,
        res: kclient.Resource,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: kclient.PatchType = "strategic",
        field_manager: str | None = None,
        force: bool | None = None,
        decode: Literal[False],
    ) -> None: ...


class KubeDeleter(Protocol):
    """``KubeClient.delete``."""

    async def delete(
        self,
        res: kclient.Resource,
        name: str,
        *,
        namespace: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any] | None: ...


_log = logging.getLogger("ccm.controllers.base")

K = TypeVar("K")
T = TypeVar("T")


async def call_cloud(
    awaitable: Awaitable[T],
    seconds: float | None,
    method: str,
    *,
    capability: str = cloudapi.OTHER,
) -> T:
    """Await one cloud provider call: admitted by the cloud API budget, bounded by ``seconds``
    (``None``: unbounded), and counted in the ``ccm_cloud_api_*`` metrics.

    ``method`` is the provider method called (``instance_metadata``) and ``capability`` the
    capability it belongs to (:data:`ccm.controllers.cloudapi.INSTANCES`, ...): the labels of the
    metrics, and the unit of back-pressure, since a :class:`ccm.errors.RetryAfterError` answer
    pauses the calls of its capability (:mod:`ccm.controllers.cloudapi`). ``awaitable`` is not
    started before the budget admits the call (pass a coroutine, as every provider method is).
    The time waited for the budget does not count against ``seconds``.

    When the bound expires the call is cancelled and :class:`ccm.errors.CloudCallTimeoutError`
    (naming ``method`` and the bound) is raised. A call that overran its bound is a failure
    whatever it does next: a provider that catches the cancellation and then returns an answer or
    raises its own error still gets ``CloudCallTimeoutError`` (an answer that arrives after the
    bound may describe a cloud that has changed since, and acting on it can delete a live Node),
    with one warning line saying it ignored the cancellation. A ``TimeoutError`` the provider
    raises within the bound passes through unchanged, and so does cancellation of the caller.

    A call that changes the cloud (``method`` in :data:`ccm.fencing.MUTATING_CLOUD_CALLS`) is
    checked against the leader's lease first, and again once the budget admits it: a replica that
    may no longer lead raises :class:`ccm.fencing.NotLeaderError` without calling the provider.

    This is the boundary where a provider's error is typed: an error that wraps a
    :class:`ccm.errors.RetryAfterError` (in its ``__cause__`` or ``__context__``) is raised as a
    ``RetryAfterError`` with the same delay and message, so that nothing after this call needs to
    look inside an exception.

    In a dry run (:mod:`ccm.dryrun`) a call that changes the cloud is logged and counted instead
    of made, and answers as a success would: an empty :class:`LoadBalancerStatus` for
    ``ensure_load_balancer``, ``None`` for the others.
    """
    budget = cloudapi.current()
    try:
        if method in fencing.MUTATING_CLOUD_CALLS:
            fencing.check()
            if dryrun.active():
                _close_unstarted(awaitable)
                fields = logs.fields()
                dryrun.would_write(method, str(fields.get("service") or fields.get("node") or ""))
                return cast(T, _DRY_RUN_ANSWERS.get(method))
        waited = await budget.admit(capability)
    except BaseException:
        _close_unstarted(awaitable)
        raise
    wait = _BUDGET_WAITS.get(capability)
    if wait is None:
        wait = _BUDGET_WAITS[capability] = metrics.CLOUD_API_BUDGET_WAIT.labels(capability)
    wait.observe(waited)
    if method in fencing.MUTATING_CLOUD_CALLS:
        try:
            fencing.check()  # again: the wait for the budget may have outlasted the lease
        except fencing.NotLeaderError:
            _close_unstarted(awaitable)
            # No answer to count: give the place back, as for a caller that gave up.
            budget.record(capability, method, 0.0, asyncio.CancelledError())
            raise
    start = clock.monotonic()
    try:
        answer = await _bounded(awaitable, seconds, method)
    except BaseException as exc:
        budget.record(capability, method, clock.monotonic() - start, exc)
        typed = isinstance(exc, _TYPED)
        retry = None if typed else find_retry_after(exc)
        if retry is not None and isinstance(exc, Exception):
            raise RetryAfterError(str(exc) or str(retry), retry.delay) from exc
        raise
    budget.record(capability, method, clock.monotonic() - start, None)
    return answer


#: The budget-wait histogram child of each capability (one observation per cloud call).
_BUDGET_WAITS: dict[str, Any] = {}

#: Errors that keep their own type even when a RetryAfterError is in their chain: the throttle
#: itself, cancellation, and a call that overran its bound (nothing is known about the cloud then).
_TYPED = (RetryAfterError, asyncio.CancelledError, CloudCallTimeoutError)

#: What a cloud-changing call answers in a dry run (absent: ``None``).
_DRY_RUN_ANSWERS: Mapping[str, object] = {"ensure_load_balancer": LoadBalancerStatus()}


def _close_unstarted(awaitable: Awaitable[Any]) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never started: no "was never awaited" warning


async def _bounded(awaitable: Awaitable[T], seconds: float | None, what: str) -> T:
    """Await ``awaitable`` bounded by ``seconds`` (the timeout rules of :func:`call_cloud`). Uses
    ``asyncio.timeout`` (never ``asyncio.wait_for``, which in 3.11 can swallow a cancellation)."""
    bound = asyncio.timeout(seconds)
    try:
        async with bound:
            result = await awaitable
    except TimeoutError as exc:
        if not bound.expired():
            raise
        if not isinstance(exc.__cause__, asyncio.CancelledError):
            _ignored_cancellation(what, seconds, f"raised {type(exc).__name__}")
        raise _timeout_error(what, seconds) from None
    except Exception as exc:
        if not bound.expired():
            raise
        _ignored_cancellation(what, seconds, f"raised {type(exc).__name__}")
        raise _timeout_error(what, seconds) from exc
    if bound.expired():
        _ignored_cancellation(what, seconds, "returned an answer")
        raise _timeout_error(what, seconds)
    return result


def _timeout_error(what: str, seconds: float | None) -> CloudCallTimeoutError:
    return CloudCallTimeoutError(what, seconds if seconds is not None else 0.0)


def _ignored_cancellation(what: str, seconds: float | None, outcome: str) -> None:
    _log.warning(
        "cloud provider call %s ignored its cancellation at the %gs bound and %s late; "
        "treating it as timed out (a provider must not catch CancelledError)",
        what,
        seconds if seconds is not None else 0.0,
        outcome,
    )


#: Jobs a :func:`run_bounded` worker runs before it lets the rest of the loop run.
RUN_BOUNDED_SLICE = 32


async def run_bounded(
    jobs: Iterable[Callable[[], Awaitable[None]]], workers: int, name: str
) -> None:
    """Run ``jobs`` in order, at most ``workers`` at a time: that many tasks share one iterator,
    instead of one task per job behind a semaphore (5,000 tasks created at once hold the event
    loop for a quarter of a second). An exception from a job cancels the others and propagates,
    as in a ``TaskGroup``. A sized ``jobs`` (a list) gets no more tasks than it has jobs, and none
    when empty. A worker yields to the loop after every ``RUN_BOUNDED_SLICE`` jobs: jobs that
    finish without suspending (a node sync of a Service whose backends did not change) would
    otherwise hold the loop for the whole list."""
    if isinstance(jobs, Sized):
        workers = min(max(1, workers), len(jobs))
        if workers <= 0:
            return
    todo = iter(jobs)

    async def worker() -> None:
        for i, job in enumerate(todo, 1):
            await job()
            if i % RUN_BOUNDED_SLICE == 0:
                await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for i in range(max(1, workers)):
            tg.create_task(worker(), name=f"{name}/{i}")


@contextlib.contextmanager
def running(controller: str) -> Iterator[None]:
    """Show the controller named ``controller`` (``names.CLOUD_NODE_CONTROLLER``, ...) as running
    in ``running_managed_controllers`` while the block runs. The ``name`` label comes from one
    place, :data:`ccm.names.CONTROLLERS`."""
    gauge = metrics.RUNNING_MANAGED_CONTROLLERS.labels(
        names.BY_NAME[controller].metric_name, wellknown.COMPONENT_NAME
    )
    gauge.set(1)
    try:
        yield
    finally:
        gauge.set(0)


class WorkQueueLoop(Generic[K]):
    """Runs ``workers`` tasks that take keys from ``queue``, call ``reconcile(key)`` and apply the
    failure switch (:func:`ccm.controllers.failures.settle`) to its outcome.

    ``recorder`` receives the Warning Event of a terminal failure. ``forget_first`` forgets a
    key's rate-limit history when a worker takes it rather than after a success, so that a key
    queued again during the reconcile is rate-limited afresh (the route controller's single key).
    """

    def __init__(
        self,
        *,
        name: str,
        queue: workqueue.WorkQueue[K],
        reconcile: Callable[[K], Awaitable[None]],
        workers: int = 1,
        logger: logging.Logger | None = None,
        key_field: str = "key",
        recorder: Recorder | None = None,
        forget_first: bool = False,
    ) -> None:
        self.name = name
        self.queue = queue
        #: The log field that carries the key of each reconcile (``node``, ``service``).
        self.key_field = key_field
        self._reconcile = reconcile
        self._workers = max(1, workers)
        self._log = logger or logging.getLogger(f"ccm.controllers.{name}")
        self._recorder = recorder
        self._forget_first = forget_first

    async def run(self) -> None:
        """Run the workers until cancelled; shuts the queue down on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(self._workers):
                    tg.create_task(self._worker(), name=f"{self.name}/worker-{i}")
        finally:
            self.queue.shutdown()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except workqueue.ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)
            # A reconcile that has nothing to do never suspends, and neither does get() on a full
            # queue: without this, one worker could drain thousands of keys (a relist re-adds
            # every Node) while the rest of the loop waits.
            await asyncio.sleep(0)

    async def process(self, key: K) -> None:
        """Reconcile one key and apply the retry switch (public so tests can drive it). Every line
        logged meanwhile carries the key as the ``key_field`` field."""
        with logs.bind(**{self.key_field: str(key)}):
            await self._process(key)

    async def _process(self, key: K) -> None:
        if self._forget_first:
            self.queue.forget(key)
        try:
            await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed: Exception | None = exc
        else:
            failed = None
        failures.settle(
            failed,
            controller=self.name,
            key=key,
            queue=self.queue,
            recorder=self._recorder,
            logger=self._log,
        )


class PeriodicLoop:
    """Calls ``step()`` every ``period`` seconds until cancelled; never overlaps itself.

    ``sliding=True`` waits ``period`` after each step ends (upstream ``wait.Until``);
    ``sliding=False`` keeps a fixed rate (``wait.NonSlidingUntil``), skipping ticks a slow step
    overran. Errors are logged, not raised.
    """

    def __init__(
        self,
        *,
        name: str,
        period: float,
        step: Callable[[], Awaitable[None]],
        sliding: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        if period <= 0:
            raise ValueError(f"{name}: period must be > 0, got {period}")
        self.name = name
        self.period = period
        self._step = step
        self._sliding = sliding
        self._log = logger or logging.getLogger(f"ccm.controllers.{name}")

    async def run(self) -> None:
        next_tick = clock.monotonic()
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("%s failed", self.name)
            now = clock.monotonic()
            if self._sliding:
                next_tick = now + self.period
            else:
                next_tick += self.period
                if next_tick <= now:  # overran: skip the ticks we missed
                    missed = int((now - next_tick) // self.period) + 1
                    next_tick += missed * self.period
            await clock.sleep(next_tick - now)
