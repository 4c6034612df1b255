"""The fake cloud's faults: injected errors, calls that ignore cancellation, the rate limit."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ccm import clock
from ccm.errors import (
    CloudProviderError,
    ImplementedElsewhereError,
    InstanceNotFoundError,
    NotImplementedByProviderError,
    RetryAfterError,
)
from ccm.testing.fake_cloud.documents import ErrorKind, ErrorSpec
from ccm.testing.fake_cloud.methods import _LIFECYCLE_METHODS, _WILDCARD, _check_method

_log = logging.getLogger("ccm.testing.fake_cloud")


ErrorSource = BaseException | type[BaseException] | Callable[[], BaseException]


def make_error(
    kind: ErrorKind, message: str | None = None, retry_after: float = 1.0
) -> BaseException:
    """Build the exception for an error rule ``kind`` (see :mod:`ccm.testing.fake_cloud`)."""
    if kind == "retryAfter":
        return RetryAfterError(message or "injected: retry later", retry_after)
    if kind == "generic":
        return RuntimeError(message or "injected generic error")
    cls: type[CloudProviderError] = {
        "cloud": CloudProviderError,
        "instanceNotFound": InstanceNotFoundError,
        "implementedElsewhere": ImplementedElsewhereError,
        "notImplemented": NotImplementedByProviderError,
    }[kind]
    return cls(message)


@dataclass(slots=True, kw_only=True)
class ErrorRule:
    """Raise ``error`` from calls of ``method`` (or ``"*"``) whose identifiers include ``key``
    (None: every call).

    ``times`` is how many more calls fail (None: forever); ``fired`` counts the failures raised so
    far. ``error`` may be an exception instance (raised each time), an exception class (called with
    no arguments) or a factory returning one.
    """

    method: str
    error: ErrorSource
    key: str | None = None
    times: int | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        _check_method(self.method)
        if self.times is not None and self.times < 0:
            raise ValueError("ErrorRule.times must be >= 0 or None")

    @classmethod
    def from_spec(cls, spec: ErrorSpec) -> ErrorRule:
        return cls(
            method=spec.method,
            error=functools.partial(make_error, spec.kind, spec.message, spec.retry_after),
            key=spec.key,
            times=spec.times,
        )

    def matches(self, method: str, keys: Iterable[str]) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method == _WILDCARD:
            if method in _LIFECYCLE_METHODS:
                return False
        elif self.method != method:
            return False
        return self.key is None or self.key in keys

    def build(self) -> BaseException:
        error = self.error
        if isinstance(error, BaseException):
            return error.with_traceback(None)
        built = error()
        if not isinstance(built, BaseException):
            raise TypeError(
                f"error factory for {self.method!r} returned {built!r}, not an exception"
            )
        return built


async def _sleep_ignoring_cancellation(seconds: float) -> None:
    """Sleep ``seconds`` even when cancelled meanwhile: the injected fault of a provider that
    ignores cancellation (a blocking SDK call that cannot be interrupted, a swallowed
    ``CancelledError``). The caller then gets the answer late, as if it had never been cancelled;
    the framework must not use it."""
    deadline = clock.monotonic() + seconds
    while (remaining := deadline - clock.monotonic()) > 0:
        try:
            await clock.sleep(remaining)
        except asyncio.CancelledError:  # swallowed on purpose: the fault being modelled
            left = deadline - clock.monotonic()
            _log.info("fake cloud call ignores its cancellation (%.3g s left)", left)
            continue


class _TokenBucket:
    """A token bucket on the loop clock; ``reserve()`` returns how long the caller must wait."""

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("rate limit needs qps > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    def reserve(self, now: float) -> float:
        if self._stamp is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def take(self, now: float) -> float:
        """Take a token if there is one (0.0), else take nothing and return when there will be."""
        wait = self.reserve(now)
        if wait > 0:
            self._tokens += 1.0
            return (1.0 - self._tokens) / self.qps
        return 0.0
