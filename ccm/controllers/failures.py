"""What a failure means: the one switch every controller applies to the outcome of a reconcile, and
the one helper that retries an apiserver write after a conflict.

The switch (controller-runtime's, adapted to upstream CCM behaviour) maps an outcome to an action:

=================  ==========================================  ===============================
outcome            raised by the reconcile                     action on the key
=================  ==========================================  ===============================
``success``        nothing                                     forget its failure history
``retry_after``    :class:`ccm.errors.RetryAfterError`         requeue after exactly its delay
``conflict``       :class:`ccm.errors.ConflictError`           rate-limited requeue: the next
                                                               reconcile reads the object again
``terminal``       :class:`TerminalError`                      Warning Event + log line, drop
``error``          any other ``Exception``                     rate-limited requeue (backoff)
=================  ==========================================  ===============================

Each outcome is counted in ``ccm_reconcile_total{controller,result}``. A periodic loop (no queue)
applies the same switch, and every outcome but ``success`` waits for the next period.

Errors are typed where they are raised, at the boundary: :func:`ccm.controllers.base.call_cloud`
turns a provider error that wraps a :class:`ccm.errors.RetryAfterError` into one, and a controller
that adds context to a failure keeps its type with :func:`with_context`. The switch therefore
looks at the type of the exception only, never at its ``__cause__``.

A write that the apiserver refuses with 409 because the object changed since it was read is
retried in place by :func:`retry_on_conflict` (read again, recompute, write again, a bounded
number of times); only a conflict that outlasts it reaches the switch.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

from ccm import clock, logs, metrics, wellknown
from ccm.errors import AlreadyExistsError, CCMError, ConflictError, RetryAfterError
from ccm.kube import workqueue

__all__ = [
    "RECONCILE_TOTAL",
    "Outcome",
    "Recorder",
    "TerminalError",
    "classify",
    "retry_on_conflict",
    "settle",
    "with_context",
]

_log = logging.getLogger("ccm.controllers.failures")

T = TypeVar("T")


class Recorder(Protocol):
    """What controllers need of ``ccm.kube.events.EventRecorder``."""

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None: ...


RECONCILE_TOTAL = Counter(
    "ccm_reconcile_total",
    "Reconciliations by controller and outcome (success, retry_after, conflict, terminal, error).",
    ["controller", "result"],
    registry=metrics.REGISTRY,
)


class Outcome(enum.StrEnum):
    """The outcome of a reconcile; its value is the ``result`` label of ``ccm_reconcile_total``."""

    SUCCESS = "success"
    RETRY_AFTER = "retry_after"
    CONFLICT = "conflict"
    TERMINAL = "terminal"
    ERROR = "error"


#: The ``ccm_reconcile_total`` child of each (controller, outcome) met so far: every reconcile
#: counts one, and a dict lookup is a tenth of ``labels()``.
_RECONCILED: dict[tuple[str, Outcome], Any] = {}


class TerminalError(CCMError):
    """A failure that retrying cannot fix (a bad object): the switch records a Warning Event with
    ``reason`` and the message on ``obj`` (when given), logs one line and drops the key until the
    next change of the object queues it again."""

    def __init__(
        self, message: str, *, obj: Mapping[str, Any] | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.obj = obj
        self.reason = reason


def classify(exc: BaseException | None) -> Outcome:
    """The outcome of a reconcile that raised ``exc`` (``None``: it returned)."""
    if exc is None:
        return Outcome.SUCCESS
    if isinstance(exc, TerminalError):
        return Outcome.TERMINAL
    if isinstance(exc, RetryAfterError):
        return Outcome.RETRY_AFTER
    if isinstance(exc, ConflictError) and not isinstance(exc, AlreadyExistsError):
        return Outcome.CONFLICT
    return Outcome.ERROR


def settle(
    exc: Exception | None,
    *,
    controller: str,
    key: object,
    queue: workqueue.WorkQueue[Any] | None = None,
    recorder: Recorder | None = None,
    logger: logging.Logger = _log,
) -> Outcome:
    """Apply the switch to the outcome of reconciling ``key``: count it, log it, record the Event
    of a terminal failure, and tell ``queue`` what to do with the key (``None``: a periodic loop,
    which tries again on its next period whatever the outcome)."""
    outcome = classify(exc)
    counter = _RECONCILED.get((controller, outcome))
    if counter is None:
        counter = _RECONCILED[controller, outcome] = RECONCILE_TOTAL.labels(controller, outcome)
    counter.inc()
    if exc is None:
        if queue is not None:
            queue.forget(key)
        return outcome
    if isinstance(exc, TerminalError):
        logger.error("error syncing '%s': %s, dropping it", key, exc, extra=logs.err(exc))
        if recorder is not None and exc.obj is not None and exc.reason:
            recorder.event(exc.obj, wellknown.EVENT_WARNING, exc.reason, str(exc))
        if queue is not None:
            queue.forget(key)
    elif isinstance(exc, RetryAfterError):
        logger.warning(
            "error syncing '%s': %s, requeuing after %.3gs",
            key,
            exc,
            exc.delay,
            extra=logs.err(exc),
        )
        if queue is not None:
            queue.add_after(key, exc.delay)
    else:
        logger.info("error syncing '%s': %s, requeuing", key, exc, extra=logs.err(exc))
        if queue is not None:
            queue.add_rate_limited(key)
    return outcome


def with_context(message: str, exc: BaseException, default: type[Exception]) -> Exception:
    """The error to raise (``from exc``) for a failure ``exc`` described as ``message``: a
    ``default`` in general, a :class:`ccm.errors.RetryAfterError` with the same delay when ``exc``
    is one, so that adding context never hides a requested delay from the switch."""
    if isinstance(exc, RetryAfterError):
        return RetryAfterError(message, exc.delay)
    return default(message)


async def retry_on_conflict(
    write: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff: Callable[[int], float],
    reread: Callable[[], Awaitable[None]] | None = None,
    what: str = "",
) -> T:
    """Call ``write`` until it does not raise :class:`ccm.errors.ConflictError`, at most
    ``attempts`` times; return its answer, or raise the last conflict.

    After a conflict of attempt ``n`` (from 0) the helper sleeps ``backoff(n)`` seconds, then calls
    ``reread`` (which fetches the object again, so that ``write`` computes its change from the
    current version). Every other exception of ``write`` or ``reread`` (``NotFoundError`` among
    them) propagates at once: the caller decides what it means. ``what`` names the object in the
    log line of each retry.
    """
    for attempt in range(max(1, attempts)):
        try:
            return await write()
        except AlreadyExistsError:
            raise
        except ConflictError as exc:
            if attempt >= attempts - 1:
                raise
            _log.log(logs.v(4), "Conflict updating %s, retrying: %s", what, exc)
        await clock.sleep(backoff(attempt))
        if reread is not None:
            await reread()
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
