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
  instead of being throttled too. The key that got the error is requeued after the delay as
  before (``ccm.controllers.base.WorkQueueLoop``).

The time a call waits here is not part of ``--cloud-call-timeout``, which bounds the provider's
answer only. Every wait is bounded: by the pause (at most :data:`MAX_PAUSE`, extended only by new
throttled answers) and by the bucket's debt (calls ahead in the queue divided by the QPS).

The AWS cloud controller manager exports ``cloudprovider_aws_api_request_duration_seconds``,
``..._api_request_errors`` and ``..._api_throttled_requests_total``; ccm's equivalents for any
provider are :data:`ccm.metrics.CLOUD_API_REQUEST_DURATION` and its neighbours, fed from here.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

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


class CloudAPIBudget:
    """Admission of cloud calls: a token bucket shared by every capability, and one pause per
    capability set by throttled answers (see the module docstring).

    ``qps <= 0`` switches the bucket off (the default); the pauses are always on.
    """

    def __init__(self, *, qps: float = 0.0, burst: int = 1, max_pause: float = MAX_PAUSE) -> None:
        if math.isnan(qps) or burst < 1:
            raise ValueError("the cloud API budget needs a QPS and a burst >= 1")
        self.bucket = ratelimit.TokenBucket(qps, burst)
        self.max_pause = max_pause
        self._paused_until: dict[str, float] = {}

    @property
    def qps(self) -> float:
        return self.bucket.qps

    @property
    def burst(self) -> int:
        return self.bucket.burst

    def paused_for(self, capability: str) -> float:
        """Seconds left in ``capability``'s pause (0 when it is not paused)."""
        until = self._paused_until.get(capability)
        if until is None:
            return 0.0
        left = until - clock.monotonic()
        if left <= 0:
            del self._paused_until[capability]
            return 0.0
        return left

    def throttled(self, capability: str, delay: float) -> None:
        """A call of ``capability`` was answered "retry after ``delay`` seconds": pause the
        capability that long (at most ``max_pause``; a longer pause already set stays)."""
        until = clock.monotonic() + min(max(0.0, delay), self.max_pause)
        if until > self._paused_until.get(capability, -math.inf):
            self._paused_until[capability] = until

    async def admit(self, capability: str) -> float:
        """Wait until ``capability`` is not paused, then for a token; return the seconds waited.

        A pause extended while a call waits (another throttled answer) is waited out too.
        """
        start = clock.monotonic()
        while (left := self.paused_for(capability)) > 0:
            await clock.sleep(left)
        await self.bucket.acquire()
        return clock.monotonic() - start

    def record(
        self, capability: str, method: str, seconds: float, exc: BaseException | None
    ) -> None:
        """Count one finished call: its duration, and its error and throttling if it failed."""
        if isinstance(exc, asyncio.CancelledError):
            return  # the caller gave up: no answer to count
        metrics.CLOUD_API_REQUEST_DURATION.labels(capability, method).observe(seconds)
        if exc is None:
            return
        reason = error_reason(exc)
        metrics.CLOUD_API_REQUEST_ERRORS.labels(capability, method, reason).inc()
        retry = find_retry_after(exc)
        if retry is not None:
            metrics.CLOUD_API_THROTTLED_REQUESTS.labels(capability, method).inc()
            self.throttled(capability, retry.delay)


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
