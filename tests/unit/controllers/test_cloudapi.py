"""The cloud API budget of ``call_cloud``: the token bucket of ``--cloud-api-qps`` and
``--cloud-api-burst``, back-pressure from throttled answers, and the ``ccm_cloud_api_*``
metrics."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from ccm import metrics
from ccm.controllers import base, cloudapi
from ccm.errors import (
    CloudCallTimeoutError,
    CloudProviderError,
    InstanceNotFoundError,
    RetryAfterError,
)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class Cloud:
    """Records when each call started (loop time); answers after ``latency`` seconds."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.started: list[tuple[str, float]] = []
        self.fail: dict[str, BaseException] = {}

    async def call(self, name: str) -> str:
        self.started.append((name, asyncio.get_running_loop().time()))
        await asyncio.sleep(self.latency)
        exc = self.fail.pop(name, None)
        if exc is not None:
            raise exc
        return name


def starts(cloud: Cloud) -> dict[str, float]:
    return dict(cloud.started)


@pytest.mark.looptime
async def test_without_a_budget_every_call_starts_at_once() -> None:
    cloud = Cloud(latency=1)
    async with asyncio.TaskGroup() as tg:
        for i in range(50):
            tg.create_task(base.call_cloud(cloud.call(f"c{i}"), 5, "instance_metadata"))
    assert set(starts(cloud).values()) == {0.0}


@pytest.mark.looptime
async def test_the_token_bucket_spreads_calls_of_every_capability_in_arrival_order(
    fresh_cloud_api_budget: cloudapi.CloudAPIBudget,
) -> None:
    cloudapi.install(cloudapi.CloudAPIBudget(qps=2, burst=2))
    cloud = Cloud()
    capabilities = [cloudapi.INSTANCES, cloudapi.LOAD_BALANCER, cloudapi.ROUTES] * 2
    waited_before = sample("ccm_cloud_api_budget_wait_seconds_sum", capability=cloudapi.ROUTES)
    async with asyncio.TaskGroup() as tg:
        for i, capability in enumerate(capabilities):
            tg.create_task(
                base.call_cloud(cloud.call(f"c{i}"), 5, "m", capability=capability),
                name=f"call-{i}",
            )
    # burst 2 at t=0, then one every 0.5 s, whichever the capability.
    assert starts(cloud) == {
        "c0": 0.0,
        "c1": 0.0,
        "c2": 0.5,
        "c3": 1.0,
        "c4": 1.5,
        "c5": 2.0,
    }
    waited = sample("ccm_cloud_api_budget_wait_seconds_sum", capability=cloudapi.ROUTES)
    assert waited - waited_before == pytest.approx(0.5 + 2.0)


@pytest.mark.looptime
async def test_a_throttled_answer_pauses_its_capability_for_the_delay() -> None:
    cloud = Cloud(latency=0.1)
    cloud.fail["first"] = RetryAfterError("429 Too Many Requests", 3)
    with pytest.raises(RetryAfterError):
        await base.call_cloud(
            cloud.call("first"), 5, "instance_metadata", capability=cloudapi.INSTANCES
        )
    # The answer came at t=0.1: instances calls wait until t=3.1, load balancer calls do not.
    async with asyncio.TaskGroup() as tg:
        tg.create_task(
            base.call_cloud(cloud.call("next"), 5, "instance_exists", capability=cloudapi.INSTANCES)
        )
        tg.create_task(
            base.call_cloud(
                cloud.call("lb"), 5, "ensure_load_balancer", capability=cloudapi.LOAD_BALANCER
            )
        )
    assert starts(cloud)["next"] == pytest.approx(3.1)
    assert starts(cloud)["lb"] == pytest.approx(0.1)


@pytest.mark.looptime
async def test_after_a_pause_calls_go_one_at_a_time_then_one_more_per_success(
    fresh_cloud_api_budget: cloudapi.CloudAPIBudget,
) -> None:
    budget = fresh_cloud_api_budget
    budget.throttled(cloudapi.LOAD_BALANCER, 1)
    assert budget.window(cloudapi.LOAD_BALANCER) == 1
    cloud = Cloud(latency=1)
    async with asyncio.TaskGroup() as tg:
        for i in range(7):
            tg.create_task(
                base.call_cloud(
                    cloud.call(f"c{i}"),
                    5,
                    "ensure_load_balancer",
                    capability=cloudapi.LOAD_BALANCER,
                )
            )
    # t=1: the pause ends, one call (a probe); each success widens the window by one, so it
    # doubles per round: 1, 2, 4.
    assert sorted(starts(cloud).values()) == [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert budget.window(cloudapi.LOAD_BALANCER) == 8


@pytest.mark.looptime
async def test_the_window_closes_again_on_a_throttle_and_opens_after_enough_successes() -> None:
    budget = cloudapi.CloudAPIBudget(max_window=3)
    cloudapi.install(budget)
    cloud = Cloud()
    cap = cloudapi.ROUTES
    budget.throttled(cap, 0)
    for i in range(3):
        await base.call_cloud(cloud.call(f"ok{i}"), 5, "create_route", capability=cap)
    assert budget.window(cap) is None  # past max_window: no window any more
    cloud.fail["slow"] = RetryAfterError("throttled", 2)
    with pytest.raises(RetryAfterError):
        await base.call_cloud(cloud.call("slow"), 5, "create_route", capability=cap)
    assert budget.window(cap) == 1
    assert budget.paused_for(cap) == pytest.approx(2)


@pytest.mark.looptime
async def test_answers_that_are_errors_widen_the_window_but_timeouts_do_not(
    fresh_cloud_api_budget: cloudapi.CloudAPIBudget,
) -> None:
    budget = fresh_cloud_api_budget
    cap = cloudapi.INSTANCES
    budget.throttled(cap, 0)
    cloud = Cloud(latency=0.5)
    cloud.fail["gone"] = InstanceNotFoundError()
    with pytest.raises(InstanceNotFoundError):
        await base.call_cloud(cloud.call("gone"), 5, "instance_metadata", capability=cap)
    assert budget.window(cap) == 2  # "not found" is the cloud answering
    cloud.latency = 10
    with pytest.raises(CloudCallTimeoutError):
        await base.call_cloud(cloud.call("hang"), 1, "instance_metadata", capability=cap)
    assert budget.window(cap) == 2  # a timeout may be an overloaded cloud: no wider


@pytest.mark.looptime
async def test_a_call_queued_for_the_window_waits_for_a_pause_set_meanwhile(
    fresh_cloud_api_budget: cloudapi.CloudAPIBudget,
) -> None:
    budget = fresh_cloud_api_budget
    budget.throttled(cloudapi.INSTANCES, 0)  # window of one, no pause
    cloud = Cloud(latency=1)
    cloud.fail["probe"] = RetryAfterError("429", 5)
    probe = asyncio.create_task(
        base.call_cloud(cloud.call("probe"), 5, "m", capability=cloudapi.INSTANCES)
    )
    await asyncio.sleep(0.1)
    queued = asyncio.create_task(
        base.call_cloud(cloud.call("queued"), 5, "m", capability=cloudapi.INSTANCES)
    )
    with pytest.raises(RetryAfterError):
        await probe
    await queued
    assert queued.result() == "queued"
    # The probe was throttled at t=1 with a 5 s hint: the queued call went at t=6, not t=1.
    assert starts(cloud)["queued"] == pytest.approx(6.0)


@pytest.mark.looptime
async def test_a_call_cancelled_in_the_window_queue_leaves_no_place_taken(
    fresh_cloud_api_budget: cloudapi.CloudAPIBudget,
) -> None:
    budget = fresh_cloud_api_budget
    budget.throttled(cloudapi.INSTANCES, 0)
    cloud = Cloud(latency=1)
    first = asyncio.create_task(
        base.call_cloud(cloud.call("first"), 5, "m", capability=cloudapi.INSTANCES)
    )
    await asyncio.sleep(0)
    queued = asyncio.create_task(
        base.call_cloud(cloud.call("queued"), 5, "m", capability=cloudapi.INSTANCES)
    )
    await asyncio.sleep(0.5)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await first == "first"
    # The window has room again: a new call goes at once.
    assert await base.call_cloud(cloud.call("next"), 5, "m", capability=cloudapi.INSTANCES)
    assert starts(cloud)["next"] == pytest.approx(1.0)
    assert "queued" not in starts(cloud)


@pytest.mark.looptime
async def test_a_pause_extended_while_calls_wait_is_waited_out_too(
    fresh_cloud_api_budget: cloudapi.CloudAPIBudget,
) -> None:
    budget = fresh_cloud_api_budget
    budget.throttled(cloudapi.ROUTES, 2)
    cloud = Cloud()

    async def extend() -> None:
        await asyncio.sleep(1)
        budget.throttled(cloudapi.ROUTES, 4)  # until t=5
        budget.throttled(cloudapi.ROUTES, 1)  # a shorter pause never shortens it

    async with asyncio.TaskGroup() as tg:
        tg.create_task(extend())
        tg.create_task(
            base.call_cloud(cloud.call("r"), 5, "create_route", capability=cloudapi.ROUTES)
        )
    assert starts(cloud)["r"] == pytest.approx(5.0)


@pytest.mark.looptime
async def test_a_pause_is_capped(fresh_cloud_api_budget: cloudapi.CloudAPIBudget) -> None:
    fresh_cloud_api_budget.throttled(cloudapi.INSTANCES, 3600)
    assert fresh_cloud_api_budget.paused_for(cloudapi.INSTANCES) == cloudapi.MAX_PAUSE
    cloud = Cloud()
    await base.call_cloud(cloud.call("x"), 5, "instance_exists", capability=cloudapi.INSTANCES)
    assert starts(cloud)["x"] == pytest.approx(cloudapi.MAX_PAUSE)


@pytest.mark.looptime
async def test_the_budget_wait_does_not_count_against_the_call_timeout() -> None:
    cloudapi.install(cloudapi.CloudAPIBudget(qps=0.5, burst=1))
    cloud = Cloud(latency=0.3)
    await base.call_cloud(cloud.call("a"), 1, "m")
    # The second call waits 2 s for a token, then answers within its 1 s bound.
    assert await base.call_cloud(cloud.call("b"), 1, "m") == "b"
    assert starts(cloud)["b"] == pytest.approx(2.0)


@pytest.mark.looptime
async def test_a_call_cancelled_while_waiting_never_starts_and_gives_its_token_back() -> None:
    budget = cloudapi.CloudAPIBudget(qps=1, burst=1)
    cloudapi.install(budget)
    cloud = Cloud()
    await base.call_cloud(cloud.call("a"), 5, "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be an error
        task = asyncio.create_task(base.call_cloud(cloud.call("never"), 5, "m"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        gc.collect()
    assert "never" not in starts(cloud)
    await asyncio.sleep(0.5)  # t=1: the token the cancelled call reserved is there again
    assert budget.bucket.tokens() == pytest.approx(1.0)


@pytest.mark.looptime
async def test_metrics_count_durations_errors_by_reason_and_throttles() -> None:
    cloud = Cloud(latency=0.25)
    m, cap = "get_load_balancer", cloudapi.LOAD_BALANCER

    def errors(reason: str) -> float:
        return sample("ccm_cloud_api_request_errors_total", capability=cap, method=m, reason=reason)

    before = {
        "count": sample("ccm_cloud_api_request_duration_seconds_count", capability=cap, method=m),
        "sum": sample("ccm_cloud_api_request_duration_seconds_sum", capability=cap, method=m),
        "throttled": sample("ccm_cloud_api_throttled_requests_total", capability=cap, method=m),
        **{r: errors(r) for r in ("throttled", "cloud", "not_found", "timeout", "other")},
    }
    await base.call_cloud(cloud.call("ok"), 5, m, capability=cap)
    for name, exc in (
        ("cloud", CloudProviderError("boom")),
        ("not_found", InstanceNotFoundError()),
        ("other", RuntimeError("bug")),
    ):
        cloud.fail[name] = exc
        with pytest.raises(type(exc)):
            await base.call_cloud(cloud.call(name), 5, m, capability=cap)
    cloud.fail["wrapped"] = CloudProviderError("sync failed")
    cloud.fail["wrapped"].__cause__ = RetryAfterError("slow down", 0)
    with pytest.raises(CloudProviderError):
        await base.call_cloud(cloud.call("wrapped"), 5, m, capability=cap)
    cloud.latency = 10
    with pytest.raises(CloudCallTimeoutError):
        await base.call_cloud(cloud.call("hang"), 1, m, capability=cap)

    def delta(key: str, now: float) -> float:
        return now - before[key]

    count = sample("ccm_cloud_api_request_duration_seconds_count", capability=cap, method=m)
    total = sample("ccm_cloud_api_request_duration_seconds_sum", capability=cap, method=m)
    assert delta("count", count) == 6
    assert delta("sum", total) == pytest.approx(5 * 0.25 + 1)
    throttled = sample("ccm_cloud_api_throttled_requests_total", capability=cap, method=m)
    assert delta("throttled", throttled) == 1
    assert {
        r: delta(r, errors(r)) for r in ("throttled", "cloud", "not_found", "timeout", "other")
    } == {
        "throttled": 1,
        "cloud": 1,
        "not_found": 1,
        "timeout": 1,
        "other": 1,
    }


@pytest.mark.parametrize(("qps", "burst"), [(float("nan"), 1), (1.0, 0)])
def test_a_budget_needs_a_number_and_a_burst(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        cloudapi.CloudAPIBudget(qps=qps, burst=burst)
