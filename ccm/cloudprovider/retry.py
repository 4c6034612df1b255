"""Retries of cloud API calls inside a provider, on tenacity: transient failures retried with
bounded exponential backoff and jitter, throttling handed to the controller as
:class:`ccm.errors.RetryAfterError`, everything else raised at once.

::

    from ccm.cloudprovider import retry

    def classify(exc: Exception) -> retry.Verdict | None:
        if isinstance(exc, MyApiError):
            return retry.classify_http_status(exc.status, retry_after=exc.retry_after)
        return None                            # the default rules below

    policy = retry.RetryPolicy(attempts=4, initial_backoff=0.2, max_backoff=5, classify=classify)

    vm = await policy.call("GetVM", api.get_vm, vm_id)                       # an async SDK
    out = await policy.call_blocking("DescribeInstances", ec2.describe_instances, InstanceIds=ids)

The classifier sorts each exception the call raises into one of four verdicts:

- ``TRANSIENT`` (5xx, connection reset, timeout): tried again after
  ``min(initial_backoff * 2**(n-1), max_backoff)`` plus up to ``jitter`` seconds, at most
  ``attempts`` tries in all; then :class:`ccm.errors.RetriesExhaustedError` (the last failure as
  its ``__cause__``).
- ``throttled(delay)`` (HTTP 429, "Throttling", "RequestLimitExceeded"): not retried here, where
  it would hold a controller worker and add to the load; raised at once as
  :class:`ccm.errors.RetryAfterError` with the server's hint (or ``throttle_delay`` without one),
  so the controller requeues the object after exactly that long.
- ``FATAL`` (any other 4xx, a bad request, a permission error) and ``NOT_FOUND`` (404): never
  retried; the exception is raised unchanged for the provider to translate (a 404 means "gone" to
  one call and "already deleted" to another).

A classifier returns ``None`` to defer to :func:`default_classification`: a ``RetryAfterError`` is
throttling with its own delay, any other :mod:`ccm.errors` type is fatal (already translated),
``TimeoutError`` and ``ConnectionError`` are transient, anything else is fatal. Cancellation (the
controller's ``--cloud-call-timeout``, shutdown) is never caught: it stops the loop at once,
backoff sleeps included. Backoff sleeps use ``ccm.clock`` (looptime fast-forwards them in tests).

Metric: ``ccm_cloud_retries_total{result}``, ``result`` one of ``retried`` (a transient failure
tried again), ``gave_up`` (RetriesExhaustedError raised) and ``throttled`` (RetryAfterError
raised).
"""

from __future__ import annotations

import email.utils
import enum
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, cast

import tenacity
from prometheus_client import Counter

from ccm import clock, metrics
from ccm.cloudprovider.blocking import run_blocking
from ccm.errors import CCMError, RetriesExhaustedError, RetryAfterError

__all__ = [
    "FATAL",
    "NOT_FOUND",
    "TRANSIENT",
    "Classifier",
    "Kind",
    "RetryPolicy",
    "Verdict",
    "classify_http_status",
    "default_classification",
    "parse_retry_after",
    "throttled",
]

_log = logging.getLogger("ccm.cloudprovider.retry")

P = ParamSpec("P")
T = TypeVar("T")

RETRIES = Counter(
    "ccm_cloud_retries",
    "Cloud calls inside providers by retry outcome: retried (a transient failure tried again), "
    "gave_up (retries exhausted), throttled (turned into RetryAfterError).",
    ["result"],
    registry=metrics.REGISTRY,
)


class Kind(enum.Enum):
    """What a failure means for retrying."""

    TRANSIENT = "transient"
    THROTTLED = "throttled"
    FATAL = "fatal"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classifier's answer; ``retry_after`` is the server's hint in seconds (throttling)."""

    kind: Kind
    retry_after: float | None = None


TRANSIENT = Verdict(Kind.TRANSIENT)
FATAL = Verdict(Kind.FATAL)
NOT_FOUND = Verdict(Kind.NOT_FOUND)


def throttled(retry_after: float | None = None) -> Verdict:
    """Throttling, with the server's hint in seconds when it gave one."""
    return Verdict(Kind.THROTTLED, retry_after)


#: Sorts an exception raised by a call; ``None`` defers to :func:`default_classification`.
Classifier = Callable[[Exception], Verdict | None]


def default_classification(exc: Exception) -> Verdict:
    """The rules used when no classifier decides (see the module docstring)."""
    if isinstance(exc, RetryAfterError):
        return throttled(exc.delay)
    if isinstance(exc, CCMError):
        return FATAL
    if isinstance(exc, TimeoutError | ConnectionError):
        return TRANSIENT
    return FATAL


def parse_retry_after(value: str | float | None) -> float | None:
    """Seconds in an HTTP ``Retry-After`` value (delta-seconds or an HTTP date), ``None`` when
    absent or unreadable; never negative."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(when.timestamp() - clock.wall(), 0.0)


def classify_http_status(status: int, *, retry_after: str | float | None = None) -> Verdict:
    """The verdict for an HTTP status: 429 throttled (with ``Retry-After``), 404 not found, other
    4xx fatal, 5xx transient except 501 Not Implemented, anything else fatal."""
    if status == 429:
        return throttled(parse_retry_after(retry_after))
    if status == 404:
        return NOT_FOUND
    if 500 <= status <= 599 and status != 501:
        return TRANSIENT
    return FATAL


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a provider retries its cloud calls; share one per client (it holds no state)."""

    #: Tries in all (the first call included), >= 1.
    attempts: int = 4
    #: Wait before the second try; doubled before each further one.
    initial_backoff: float = 0.2
    #: Ceiling of the doubled wait.
    max_backoff: float = 5.0
    #: Up to this many seconds are added at random to each wait (``None``: ``initial_backoff``),
    #: so that callers failing together do not retry together.
    jitter: float | None = None
    #: Delay of the RetryAfterError for throttling without a server hint.
    throttle_delay: float = 1.0
    classify: Classifier | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        for name in ("initial_backoff", "max_backoff", "throttle_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.jitter is not None and self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")

    def verdict(self, exc: Exception) -> Verdict:
        """The classifier's verdict on ``exc``, else the default rules'."""
        decided = self.classify(exc) if self.classify is not None else None
        return decided if decided is not None else default_classification(exc)

    async def call(
        self, what: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy; ``what`` names the call in errors and
        logs (``"DescribeInstances"``)."""
        tries = 0
        last: tuple[Exception, Verdict] | None = None  # the classifier runs once per failure

        async def attempt() -> T:
            nonlocal tries
            tries += 1
            return await fn(*args, **kwargs)

        def retry_on(exc: BaseException) -> bool:
            nonlocal last
            if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt: never
                return False
            last = (exc, self.verdict(exc))
            return last[1].kind is Kind.TRANSIENT

        def before_sleep(state: tenacity.RetryCallState) -> None:
            RETRIES.labels("retried").inc()
            failure = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            _log.debug(
                "%s failed (attempt %d of %d), retrying in %.3gs: %s",
                what,
                state.attempt_number,
                self.attempts,
                delay,
                failure,
            )

        jitter = self.initial_backoff if self.jitter is None else self.jitter
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.initial_backoff, max=self.max_backoff)
            + tenacity.wait_random(0, jitter),
            retry=tenacity.retry_if_exception(retry_on),
            sleep=clock.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return cast(T, await retrying(attempt))
        except Exception as exc:
            verdict = last[1] if last is not None and last[0] is exc else self.verdict(exc)
            if verdict.kind is Kind.TRANSIENT:
                RETRIES.labels("gave_up").inc()
                raise RetriesExhaustedError(what, tries, exc) from exc
            if verdict.kind is Kind.THROTTLED:
                RETRIES.labels("throttled").inc()
                if isinstance(exc, RetryAfterError):
                    raise
                delay = self.throttle_delay if verdict.retry_after is None else verdict.retry_after
                raise RetryAfterError(f"{what}: throttled: {exc}", delay) from exc
            raise

    async def call_blocking(
        self, what: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """:meth:`call` for a blocking SDK function: each try runs on the framework's thread pool
        (:func:`ccm.cloudprovider.run_blocking`); the backoff waits never hold a thread."""
        return await self.call(what, functools.partial(run_blocking, fn, *args, **kwargs))
