"""call_cloud in a dry run: a call that changes the cloud is counted, logged and not made; reads
are made as usual."""

from __future__ import annotations

from ccm import dryrun, fencing, logs
from ccm.cloudprovider import LoadBalancerStatus
from ccm.controllers import base

CALLED: list[str] = []


async def _call(name: str, answer: object) -> object:
    CALLED.append(name)
    return answer


async def test_mutating_calls_are_not_made_and_answer_as_a_success() -> None:
    CALLED.clear()
    before = dryrun.DRY_RUN_WRITES.labels("service-lb-controller", "ensure_load_balancer")
    start = before._value.get()
    with dryrun.enabled(), logs.bind(controller="service-lb-controller", service="ns/web"):
        for method in sorted(fencing.MUTATING_CLOUD_CALLS):
            answer = await base.call_cloud(_call(method, "real"), 1.0, method)
            expected = LoadBalancerStatus() if method == "ensure_load_balancer" else None
            assert answer == expected, method
        read = await base.call_cloud(_call("get_load_balancer", "real"), 1.0, "get_load_balancer")
    assert CALLED == ["get_load_balancer"]
    assert read == "real"
    assert before._value.get() == start + 1


async def test_without_dry_run_mutating_calls_are_made() -> None:
    CALLED.clear()
    answer = await base.call_cloud(_call("create_route", "made"), 1.0, "create_route")
    assert (answer, CALLED) == ("made", ["create_route"])
