"""The retry policy for provider calls: transient failures retried with bounded exponential backoff
and jitter, throttling handed over as RetryAfterError, 4xx and not-found never retried."""

from __future__ import annotations

import asyncio
import email.utils
import threading

import pytest

from ccm import clock, metrics
from ccm.cloudprovider import retry
from ccm.cloudprovider.retry import RetryPolicy, Verdict
from ccm.errors import (
    CloudProviderError,
    InstanceNotFoundError,
    RetriesExhaustedError,
    RetryAfterError,
)


class ApiError(Exception):
    """An SDK's error with an HTTP status, as a provider's classifier sees it."""

    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def classify(exc: Exception) -> Verdict | None:
    if isinstance(exc, ApiError):
        return retry.classify_http_status(exc.status, retry_after=exc.retry_after)
    return None


class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"; records the loop time of each try."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(clock.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def count(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("ccm_cloud_retries_total", {"result": result}) or 0.0


POLICY = RetryPolicy(
    attempts=4, initial_backoff=1.0, max_backoff=3.0, jitter=0.5, classify=classify
)


@pytest.mark.looptime
async def test_transient_failures_are_retried_with_bounded_exponential_backoff() -> None:
    call = Flaky(ApiError(503), ConnectionResetError("reset"), TimeoutError())
    before = count("retried")
    assert await POLICY.call("GetVM", call) == "ok"
    assert len(call.times) == 4
    # 1, 2, then 4 capped at 3 seconds; each plus up to 0.5 s of jitter.
    for gap, base in zip(call.gaps, (1.0, 2.0, 3.0), strict=True):
        assert base <= gap <= base + 0.5, call.gaps
    assert count("retried") == before + 3


@pytest.mark.looptime
async def test_gives_up_after_the_attempts_with_a_ccm_error() -> None:
    call = Flaky(*(ApiError(500) for _ in range(10)))
    before = count("gave_up")
    with pytest.raises(RetriesExhaustedError) as exc:
        await POLICY.call("GetVM", call)
    assert len(call.times) == 4
    assert str(exc.value) == "GetVM: gave up after 4 attempts: HTTP 500"
    assert isinstance(exc.value, CloudProviderError)
    assert isinstance(exc.value.__cause__, ApiError)
    assert (exc.value.call, exc.value.attempts) == ("GetVM", 4)
    assert count("gave_up") == before + 1


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
async def test_4xx_is_never_retried(status: int) -> None:
    call = Flaky(ApiError(status))
    with pytest.raises(ApiError, match=f"HTTP {status}"):
        await POLICY.call("GetVM", call)
    assert len(call.times) == 1


async def test_not_found_is_never_retried_and_raised_unchanged() -> None:
    call = Flaky(ApiError(404))
    with pytest.raises(ApiError, match="HTTP 404"):
        await POLICY.call("GetVM", call)
    assert len(call.times) == 1


@pytest.mark.parametrize(
    ("header", "delay"),
    [
        pytest.param("7", 7.0, id="delta seconds"),
        pytest.param(None, 1.0, id="no hint: the policy's throttle delay"),
        pytest.param("soon", 1.0, id="unreadable hint"),
    ],
)
async def test_throttling_becomes_retry_after_with_the_servers_hint(
    header: str | None, delay: float
) -> None:
    call = Flaky(ApiError(429, retry_after=header))
    before = count("throttled")
    with pytest.raises(RetryAfterError) as exc:
        await POLICY.call("ListRoutes", call)
    assert len(call.times) == 1  # not retried here: the controller requeues after the delay
    assert exc.value.delay == delay
    assert str(exc.value) == "ListRoutes: throttled: HTTP 429"
    assert count("throttled") == before + 1


async def test_a_retry_after_error_from_the_call_passes_through() -> None:
    original = RetryAfterError("busy", 3.0)
    with pytest.raises(RetryAfterError) as exc:
        await POLICY.call("X", Flaky(original))
    assert exc.value is original


async def test_ccm_errors_and_unknown_exceptions_are_fatal_by_default() -> None:
    for error in (InstanceNotFoundError("gone"), KeyError("bug"), ValueError("bad")):
        call = Flaky(error)
        with pytest.raises(type(error)):
            await RetryPolicy(initial_backoff=0).call("X", call)
        assert len(call.times) == 1


@pytest.mark.looptime
async def test_classifier_decides_before_the_default_rules() -> None:
    class Odd(Exception):
        pass

    def custom(exc: Exception) -> Verdict | None:
        if isinstance(exc, Odd):
            return retry.TRANSIENT
        if isinstance(exc, TimeoutError):
            return retry.FATAL
        return None

    policy = RetryPolicy(attempts=3, initial_backoff=0.1, classify=custom)
    call = Flaky(Odd(), Odd())
    assert await policy.call("X", call) == "ok"
    timeout = Flaky(TimeoutError())
    with pytest.raises(TimeoutError):
        await policy.call("X", timeout)
    assert len(timeout.times) == 1


@pytest.mark.looptime
async def test_cancellation_stops_the_backoff_at_once() -> None:
    call = Flaky(*(ApiError(503) for _ in range(10)))
    slow = RetryPolicy(attempts=10, initial_backoff=30.0, max_backoff=60.0, classify=classify)
    task = asyncio.create_task(slow.call("X", call), name="retrying-call")
    await asyncio.sleep(5)  # inside the first 30 s backoff
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(call.times) == 1


async def test_call_blocking_runs_each_try_on_the_pool() -> None:
    threads: list[str] = []
    failures = [ConnectionResetError("reset")]

    def describe(instance_id: str) -> str:
        threads.append(threading.current_thread().name)
        if failures:
            raise failures.pop()
        return instance_id

    policy = RetryPolicy(attempts=2, initial_backoff=0.0, jitter=0.0)
    assert await policy.call_blocking("DescribeInstances", describe, "i-1") == "i-1"
    assert len(threads) == 2
    assert all(t != threading.current_thread().name for t in threads)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, retry.Kind.TRANSIENT),
        (502, retry.Kind.TRANSIENT),
        (503, retry.Kind.TRANSIENT),
        (504, retry.Kind.TRANSIENT),
        (501, retry.Kind.FATAL),
        (400, retry.Kind.FATAL),
        (403, retry.Kind.FATAL),
        (408, retry.Kind.FATAL),
        (404, retry.Kind.NOT_FOUND),
        (429, retry.Kind.THROTTLED),
        (302, retry.Kind.FATAL),
    ],
)
def test_classify_http_status(status: int, kind: retry.Kind) -> None:
    assert retry.classify_http_status(status).kind is kind


def test_parse_retry_after() -> None:
    assert retry.parse_retry_after("120") == 120.0
    assert retry.parse_retry_after(" 1.5 ") == 1.5
    assert retry.parse_retry_after("-3") == 0.0
    assert retry.parse_retry_after(None) is None
    assert retry.parse_retry_after("later") is None
    in_a_minute = email.utils.formatdate(clock.wall() + 60, usegmt=True)
    assert retry.parse_retry_after(in_a_minute) == pytest.approx(60, abs=2)
    assert retry.parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0  # in the past


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="max_backoff"):
        RetryPolicy(max_backoff=-1)


@pytest.mark.looptime
async def test_the_classifier_runs_once_per_failure() -> None:
    seen: list[Exception] = []

    def counting(exc: Exception) -> Verdict | None:
        seen.append(exc)
        return classify(exc)

    errors = [ApiError(503), ApiError(503), ApiError(403)]
    policy = RetryPolicy(attempts=5, initial_backoff=0.1, classify=counting)
    with pytest.raises(ApiError, match="403"):
        await policy.call("X", Flaky(*errors))
    assert seen == errors
