"""The cloud API budget: one token bucket for every provider call the controllers make, and
back-pressure from a throttling cloud.

Every call passes through :func:`ccm.controllers.base.call_cloud`, which asks the process-wide
:class:`CloudAPIBudget` for admission before it starts the call:

* the **token bucket** (``--cloud-api-qps``, ``--cloud-api-burst``; off by default) spreads the
  calls of all controllers and capabilities over time, in arrival order, so that a 5,000-Node
  scale-up does not hit the cloud's own rate limit in the first second;
* the **back-pressure**: a call answered with :class:`ccm.errors.RetryAfterError` (a provider's
  way to say "throttled, try again in N seconds", e.g. an HTTP 429 with ``Retry-After``) pauses its
  whole capability (instances, load balancer, routes, ...) for that delay, capped at
  :data:`MAX_PAUSE`: the calls of that capability made meanwhile wait until the pause is over
  instead of being throttled too. Then they do not all go at once (they would be throttled
  together, again and again): the capability lets one call through, and one more place opens per
  answer that is not throttled and did not time out (TCP's slow start: the window doubles per
  round trip) until :data:`MAX_WINDOW` calls are in flight and the window is gone; a throttled
  answer closes it to one again. The key that got the error is requeued after the delay as before
  (``ccm.controllers.base.WorkQueueLoop``).

The time a call waits here is not part of ``--cloud-call-timeout``, which bounds the provider's
answer only. Every wait is bounded: by the pause (at most :data:`MAX_PAUSE`, extended only by new
throttled answers), by the calls ahead in the window (each bounded by the call timeout) and by the
bucket's debt (calls ahead in the queue divided by the QPS).

Measured in process (``FakeCloud`` refusing calls beyond 100/s, burst 10, with a 429 and the time
to its next token; 300 calls from 50 workers that retry after the hint): about 12,000 throttled
answers without back-pressure, 10,500 with the pause alone, about 600 with the pause and the
window, none with ``--cloud-api-qps=90``; 2.9 s in every case, the cloud's own pace.

The AWS cloud controller manager exports ``cloudprovider_aws_api_request_duration_seconds``,
``..._api_request_errors`` and ``..._api_throttled_requests_total``; ccm's equivalents for any
provider are :data:`ccm.metrics.CLOUD_API_REQUEST_DURATION` and its neighbours, fed from here.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Any, Final

from ccm import clock, metrics
from ccm.errors import (
    CloudCallTimeoutError,
    CloudProviderError,
    ImplementedElsewhereError,
    InstanceNotFoundError,
    NotImplementedByProviderError,
    find_retry_after,
)
from ccm.kube import ratelimit

__all__ = [
    "CLUSTERS",
    "INSTANCES",
    "LOAD_BALANCER",
    "MAX_PAUSE",
    "MAX_WINDOW",
    "OTHER",
    "ROUTES",
    "ZONES",
    "CloudAPIBudget",
    "current",
    "error_reason",
    "install",
]

# The ``capability`` label, and the unit of back-pressure. InstancesV2, the legacy Instances and
# InstancesBatch are one capability: they reach the same cloud API.
INSTANCES: Final = "instances"
ZONES: Final = "zones"
LOAD_BALANCER: Final = "load_balancer"
ROUTES: Final = "routes"
CLUSTERS: Final = "clusters"
OTHER: Final = "other"

#: The longest a throttled answer pauses its capability (seconds). A provider may ask one key to
#: come back in an hour; the rest of the capability only waits this long for it.
MAX_PAUSE: Final = 60.0
#: After a throttled answer a capability lets one call at a time through, one more per answer
#: that is neither throttled nor timed out; past this many the window is gone.
MAX_WINDOW: Final = 64


def error_reason(exc: BaseException) -> str:
    """The ``reason`` label of ``ccm_cloud_api_request_errors_total`` for a failed call."""
    if find_retry_after(exc) is not None:
        return "throttled"
    if isinstance(exc, CloudCallTimeoutError):
        return "timeout"
    if isinstance(exc, InstanceNotFoundError):
        return "not_found"
    if isinstance(exc, NotImplementedByProviderError):
        return "not_implemented"
    if isinstance(exc, ImplementedElsewhereError):
        return "implemented_elsewhere"
    if isinstance(exc, CloudProviderError):
        return "cloud"
    return "other"


class _Capability:
    """The back-pressure state of one capability: its pause, and the window of calls in flight
    after a throttled answer (``limit``; ``None``: no window)."""

    __slots__ = ("in_flight", "limit", "paused_until", "waiters")

    def __init__(self) -> None:
        self.paused_until = -math.inf
        self.limit: int | None = None
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def full(self) -> bool:
        return self.limit is not None and self.in_flight >= self.limit


class CloudAPIBudget:
    """Admission of cloud calls: a token bucket shared by every capability, and per capability
    the back-pressure of throttled answers (see the module docstring).

    ``qps <= 0`` switches the bucket off (the default); the back-pressure is always on.
    """

    def __init__(
        self,
        *,
        qps: float = 0.0,
        burst: int = 1,
        max_pause: float = MAX_PAUSE,
        max_window: int = MAX_WINDOW,
    ) -> None:
        if math.isnan(qps) or burst < 1 or max_window < 1:
            raise ValueError("the cloud API budget needs a QPS, a burst >= 1 and a window >= 1")
        self.bucket = ratelimit.TokenBucket(qps, burst)
        self.max_pause = max_pause
        self.max_window = max_window
        self._caps: dict[str, _Capability] = {}
        #: The request-duration histogram child of each (capability, method): one per call.
        self._durations: dict[tuple[str, str], Any] = {}

    @property
    def qps(self) -> float:
        return self.bucket.qps

    @property
    def burst(self) -> int:
        return self.bucket.burst

    def _cap(self, capability: str) -> _Capability:
        cap = self._caps.get(capability)
        if cap is None:
            cap = self._caps[capability] = _Capability()
        return cap

    def paused_for(self, capability: str) -> float:
        """Seconds left in ``capability``'s pause (0 when it is not paused)."""
        cap = self._caps.get(capability)
        if cap is None:
            return 0.0
        return max(0.0, cap.paused_until - clock.monotonic())

    def window(self, capability: str) -> int | None:
        """How many calls of ``capability`` may be in flight at once (``None``: no limit)."""
        cap = self._caps.get(capability)
        return None if cap is None else cap.limit

    def throttled(self, capability: str, delay: float) -> None:
        """A call of ``capability`` was answered "retry after ``delay`` seconds": pause the
        capability that long (at most ``max_pause``; a longer pause already set stays), and let
        one call at a time through afterwards until calls succeed again."""
        cap = self._cap(capability)
        cap.paused_until = max(
            cap.paused_until, clock.monotonic() + min(max(0.0, delay), self.max_pause)
        )
        cap.limit = 1

    async def admit(self, capability: str) -> float:
        """Wait until ``capability`` is not paused, for a place in its window, then for a token of
        the bucket; return the seconds waited. Every admitted call must be followed by
        :meth:`record` (which gives the place back).

        A pause extended while a call waits (another throttled answer) is waited out too.
        """
        start = clock.monotonic()
        cap = self._cap(capability)
        if cap.paused_until <= start and not cap.full() and not cap.waiters:
            cap.in_flight += 1  # the common case: not paused, a place free, nothing awaited
        else:
            await self._wait_for_place(cap)
        try:
            await self.bucket.acquire()
        except BaseException:
            self._release(cap)
            raise
        return clock.monotonic() - start

    async def _wait_for_place(self, cap: _Capability) -> None:
        while True:
            while (left := cap.paused_until - clock.monotonic()) > 0:
                await clock.sleep(left)
            await self._take_place(cap)
            if cap.paused_until <= clock.monotonic():
                return
            self._release(cap)  # throttled again while this call queued: wait for the new pause

    async def _take_place(self, cap: _Capability) -> None:
        if not cap.full() and not cap.waiters:
            cap.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        cap.waiters.append(waiter)
        try:
            await waiter  # _release hands its place over: in_flight already counts this call
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(cap)
            else:
                cap.waiters.remove(waiter)
            raise

    def _release(self, cap: _Capability) -> None:
        cap.in_flight -= 1
        while cap.waiters and not cap.full():
            waiter = cap.waiters.popleft()
            if not waiter.done():
                cap.in_flight += 1
                waiter.set_result(None)

    def record(
        self, capability: str, method: str, seconds: float, exc: BaseException | None
    ) -> None:
        """Count one finished call (its duration, and its error and throttling if it failed),
        adjust the capability's back-pressure and give its place back.

        Any answer but a throttle or a timeout (an error such as "instance not found" is an
        answer too) opens one more place in the window.
        """
        cap = self._cap(capability)
        try:
            if isinstance(exc, asyncio.CancelledError):
                return  # the caller gave up: no answer to count
            duration = self._durations.get((capability, method))
            if duration is None:
                duration = metrics.CLOUD_API_REQUEST_DURATION.labels(capability, method)
                self._durations[capability, method] = duration
            duration.observe(seconds)
            reason = None if exc is None else error_reason(exc)
            if reason is not None:
                metrics.CLOUD_API_REQUEST_ERRORS.labels(capability, method, reason).inc()
            retry = None if exc is None else find_retry_after(exc)
            if retry is not None:
                metrics.CLOUD_API_THROTTLED_REQUESTS.labels(capability, method).inc()
                self.throttled(capability, retry.delay)
            elif reason != "timeout" and cap.limit is not None:
                cap.limit = None if cap.limit >= self.max_window else cap.limit + 1
        finally:
            self._release(cap)


_budget = CloudAPIBudget()


def current() -> CloudAPIBudget:
    """The process-wide budget every ``call_cloud`` uses."""
    return _budget


def install(budget: CloudAPIBudget) -> CloudAPIBudget:
    """Make ``budget`` the process-wide one (the daemon does, from its flags); returns the
    previous one."""
    global _budget
    previous, _budget = _budget, budget
    return previous
