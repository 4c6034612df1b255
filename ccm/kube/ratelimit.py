"""Client-side rate limiting: an async token bucket on the event loop's clock.

Ports the behaviour of client-go's ``flowcontrol.NewTokenBucketRateLimiter`` (QPS and burst, what
``--kube-api-qps``/``--kube-api-burst`` configure) and of ``golang.org/x/time/rate``'s reservations,
which the work queue's ``BucketRateLimiter`` uses. Time comes from :mod:`ccm.clock`, so looptime can
fast-forward it in tests.
"""

from __future__ import annotations

import asyncio
import math

from ccm import clock

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket holding at most ``burst`` tokens, refilled at ``qps`` tokens a second.

    ``qps <= 0`` or ``qps == inf`` means "no limit". The bucket starts full. Reservations may drive
    the token count negative: the caller then waits until the debt is paid back, which is what
    makes waiting callers queue fairly in arrival order (like ``rate.Limiter.Reserve``).
    """

    __slots__ = ("_last", "_tokens", "burst", "qps")

    def __init__(self, qps: float, burst: int) -> None:
        if math.isnan(qps):
            raise ValueError("qps must be a number")
        self.qps = float(qps)
        self.burst = max(1, int(burst))
        self._tokens = float(self.burst)
        self._last: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.qps <= 0 or math.isinf(self.qps)

    def _advance(self, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.qps)
        # A clock that went backwards (looptime resets between tests) must not mint tokens.
        self._last = now

    def tokens(self) -> float:
        """Tokens available now (negative while reservations are outstanding)."""
        if self.unlimited:
            return float(self.burst)
        self._advance(clock.monotonic())
        return self._tokens

    def reserve(self) -> float:
        """Take one token now and return how many seconds the caller must wait before using it."""
        if self.unlimited:
            return 0.0
        self._advance(clock.monotonic())
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps

    def cancel(self) -> None:
        """Give back one reserved token (the caller gave up before using it)."""
        if not self.unlimited:
            self._tokens = min(float(self.burst), self._tokens + 1.0)

    def try_acquire(self) -> bool:
        """Take one token if one is available right now, without waiting."""
        if self.unlimited:
            return True
        self._advance(clock.monotonic())
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def acquire(self) -> float:
        """Wait for one token; return the seconds waited. Cancellation returns the token."""
        delay = self.reserve()
        if delay <= 0:
            return 0.0
        try:
            await clock.sleep(delay)
        except asyncio.CancelledError:
            self.cancel()
            raise
        return delay
