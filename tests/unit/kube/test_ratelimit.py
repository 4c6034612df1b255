"""The client-side token bucket, on a fast-forwarded loop clock."""

from __future__ import annotations

import asyncio

import pytest

from ccm.kube import ratelimit

pytestmark = pytest.mark.looptime


async def test_a_full_bucket_serves_the_burst_at_once() -> None:
    bucket = ratelimit.TokenBucket(qps=2.0, burst=5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        assert await bucket.acquire() == 0.0
    assert loop.time() == start


async def test_after_the_burst_requests_are_spaced_by_one_over_qps() -> None:
    bucket = ratelimit.TokenBucket(qps=2.0, burst=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    times = []
    for _ in range(4):
        await bucket.acquire()
        times.append(loop.time() - start)
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5])


async def test_concurrent_waiters_queue_fairly() -> None:
    bucket = ratelimit.TokenBucket(qps=10.0, burst=2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    done: list[float] = []

    async def one() -> None:
        await bucket.acquire()
        done.append(round(loop.time() - start, 6))

    await asyncio.gather(*(one() for _ in range(6)))
    assert done == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])


async def test_tokens_refill_up_to_burst_only() -> None:
    bucket = ratelimit.TokenBucket(qps=1.0, burst=3)
    for _ in range(3):
        assert bucket.try_acquire()
    assert not bucket.try_acquire()
    await asyncio.sleep(100)
    assert bucket.tokens() == 3
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]


async def test_a_cancelled_wait_gives_its_token_back() -> None:
    bucket = ratelimit.TokenBucket(qps=1.0, burst=1)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.9)
    assert bucket.try_acquire()  # the cancelled reservation did not eat this token


@pytest.mark.parametrize("qps", [0.0, -1.0, float("inf")])
async def test_zero_negative_or_infinite_qps_means_no_limit(qps: float) -> None:
    bucket = ratelimit.TokenBucket(qps=qps, burst=1)
    assert bucket.unlimited
    for _ in range(1000):
        assert bucket.reserve() == 0.0


def test_nan_qps_is_rejected() -> None:
    with pytest.raises(ValueError, match="qps"):
        ratelimit.TokenBucket(qps=float("nan"), burst=1)
