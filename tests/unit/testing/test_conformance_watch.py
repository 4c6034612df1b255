"""What the conformance suite watches and how it reports it: loop holds by the provider (measured
per step, the wait for a CPU excluded), a failure caused by a blocked loop reported as the block,
and checks the driver cannot verify reported as unverified (text and JUnit XML), all without an
apiserver."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ccm import errors
from ccm.cloudprovider import CloudProvider, Node
from ccm.testing.conformance import observe, suite
from ccm.testing.conformance.driver import CloudLoadBalancer, CloudRoute
from ccm.testing.conformance.fake_driver import FakeCloudDriver
from ccm.testing.conformance.report import format_report, write_junit_xml
from ccm.testing.fake_cloud import FakeCloud
from tests.conformance_broken.blocks_event_loop import BlocksEventLoop
from tests.conformance_broken.leaky_delete import LeakyDelete


def _scenario(name: str) -> suite.Scenario:
    (found,) = [s for s in suite.SCENARIOS if s.name == name]
    return found


def _ctx(provider: CloudProvider, drv: object = None, *, call_timeout: float = 5) -> suite.Context:
    return suite.Context(
        provider,
        drv,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # these scenarios never touch the apiserver
        suite.SuiteConfig(call_timeout=call_timeout),
        suite.Observer(),
    )


class BlindDriver(FakeCloudDriver):
    """A driver that can create machines but cannot list load balancers or routes."""

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        return None

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        return None


class BlocksThenWaits(FakeCloud):
    """Holds the loop for a second, then awaits: the caller's timeout fires as a symptom."""

    async def instance_exists(self, node: Node) -> bool:
        time.sleep(1)  # noqa: ASYNC251 - the deliberate bug
        await asyncio.sleep(0)
        return await super().instance_exists(node)


async def test_a_blocking_step_is_recorded_with_method_task_and_time() -> None:
    observer = suite.Observer()
    inst = suite.ObservedProvider(BlocksEventLoop(), observer).instances_v2()
    await asyncio.create_task(inst.instance_exists(suite.node_view("n1")), name="probe/worker-3")
    (hold,) = observer.holds
    assert hold.method == "InstancesV2.instance_exists"
    assert hold.task == "probe/worker-3"
    assert hold.held >= 0.9
    assert "held the event loop" in hold.describe()
    assert "'probe/worker-3'" in hold.describe()


async def test_the_wait_for_a_cpu_is_not_counted_as_a_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step that took 0.3s of wall time while the thread waited 0.3s for a CPU (a loaded
    machine) held nothing; the same step without that wait is a hold."""
    waits = iter([0.0, 0.3])
    monkeypatch.setattr(observe._run_delay, "read", lambda: next(waits))

    class Slow(FakeCloud):
        async def instance_shutdown(self, node: Node) -> bool:
            time.sleep(0.3)  # noqa: ASYNC251 - stands for a descheduled thread
            return False

    observer = suite.Observer()
    inst = suite.ObservedProvider(Slow(), observer).instances_v2()
    await inst.instance_shutdown(suite.node_view("n1"))
    assert observer.holds == []
    monkeypatch.setattr(observe._run_delay, "read", lambda: None)
    await inst.instance_shutdown(suite.node_view("n1"))
    assert [h.method for h in observer.holds] == ["InstancesV2.instance_shutdown"]


async def test_watched_calls_keep_await_semantics() -> None:
    """Values, ccm errors, cancellation and sync methods pass through the step-timing proxy."""
    observer = suite.Observer()
    cloud = FakeCloud()
    cloud.add_instance("n1")
    observed = suite.ObservedProvider(cloud, observer)
    assert await observed.instances_v2().instance_exists(suite.node_view("n1")) is True
    with pytest.raises(errors.InstanceNotFoundError):
        await observed.instances_v2().instance_metadata(suite.node_view("gone"))

    class Slow(FakeCloud):
        async def list_routes(self, cluster_name: str) -> Sequence[suite.Route]:
            await asyncio.sleep(30)
            return ()

    routes = suite.ObservedProvider(Slow(), observer).routes()
    task = asyncio.ensure_future(routes.list_routes("c"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lb = observed.load_balancer()
    assert lb.get_load_balancer_name("c", suite.service_view("ns", "s"))
    assert observer.holds == []
    assert observer.foreign_errors == []


async def test_a_failure_caused_by_a_blocked_loop_names_the_block_not_the_symptom(
    tmp_path: Path,
) -> None:
    cloud = BlocksThenWaits()
    ctx = _ctx(cloud, FakeCloudDriver(cloud), call_timeout=0.5)
    result = await suite.play_scenario(_scenario("running-instance-exists"), ctx)
    assert result.outcome == "failed"
    assert result.rule == suite.BLOCKING_RULE
    assert result.reason.startswith(
        f"[{suite.BLOCKING_RULE}] InstancesV2.instance_exists held the event loop"
    )
    assert "which caused: [calls-return-in-time]" in result.reason
    assert "called from task 'conformance/running-instance-exists'" in result.reason
    report = suite.Report(provider="fake", results=[result])
    assert "InstancesV2.instance_exists held the event loop" in format_report(report)
    path = tmp_path / "r.xml"
    write_junit_xml(report, path)
    failure = ET.parse(path).getroot().find(".//testcase[@name='running-instance-exists']/failure")
    assert failure is not None
    assert failure.get("type") == suite.BLOCKING_RULE
    assert "InstancesV2.instance_exists" in (failure.get("message") or "")


async def test_a_failure_without_a_hold_keeps_its_own_rule() -> None:
    class Slow(FakeCloud):
        async def instance_exists(self, node: Node) -> bool:
            await asyncio.sleep(2)
            return True

    cloud = Slow()
    ctx = _ctx(cloud, FakeCloudDriver(cloud), call_timeout=0.2)
    result = await suite.play_scenario(_scenario("running-instance-exists"), ctx)
    assert result.rule == "calls-return-in-time"


async def test_minimal_provider_sample_does_not_block_the_loop_without_a_driver() -> None:
    from minimal_provider import factory

    provider = factory(b"machines: {w1: {id: vm-1, ip: 10.0.0.1}}")
    ctx = _ctx(provider, None)
    result = await suite.play_scenario(_scenario("does-not-block-the-event-loop"), ctx)
    assert result.outcome == "passed", result.reason


async def test_checks_the_driver_cannot_make_are_reported_unverified(tmp_path: Path) -> None:
    """A leaky provider passes with a driver blind to load balancers, but the report says which
    checks rest on the provider's word; with a seeing driver it fails."""
    cloud = LeakyDelete()
    blind = await suite.play_scenario(
        _scenario("delete-is-idempotent"), _ctx(cloud, BlindDriver(cloud))
    )
    assert blind.outcome == "passed"
    assert blind.unverified == (
        "no load balancer left after delete (the driver cannot list the cloud's load "
        "balancers; the provider's word was taken)",
    )
    routes = await suite.play_scenario(_scenario("round-trip"), _ctx(cloud, BlindDriver(cloud)))
    assert [u.split(" (")[0] for u in routes.unverified] == [
        "the cloud holds the created route",
        "no route left after delete",
    ]
    report = suite.Report(provider="fake", results=[blind, routes])
    text = format_report(report)
    assert "CONFORMANT (3 checks unverified: delete-is-idempotent: no load balancer left" in text
    assert "\n       unverified: no route left after delete" in text
    path = tmp_path / "r.xml"
    write_junit_xml(report, path)
    root = ET.parse(path).getroot()
    props = root.findall(".//testcase[@name='delete-is-idempotent']/properties/property")
    assert [(p.get("name"), p.get("value")) for p in props] == [("unverified", blind.unverified[0])]
    count = root.find(".//testsuite[@name='routes']/properties/property[@name='unverified-checks']")
    assert count is not None
    assert count.get("value") == "2"
    seeing = await suite.play_scenario(
        _scenario("delete-is-idempotent"), _ctx(cloud, FakeCloudDriver(cloud))
    )
    assert seeing.rule == "delete-leaves-nothing"
    assert seeing.unverified == ()


async def test_a_seeing_driver_leaves_nothing_unverified() -> None:
    cloud = FakeCloud()
    for name in ("delete-is-idempotent", "round-trip", "update-follows-backends"):
        result = await suite.play_scenario(_scenario(name), _ctx(cloud, FakeCloudDriver(cloud)))
        assert (result.outcome, result.unverified) == ("passed", ()), result.reason
    assert "CONFORMANT: 1 passed" in format_report(suite.Report(provider="f", results=[result]))


def test_pytest_plugin_records_and_warns_about_unverified_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ccm.testing.conformance import pytest_plugin

    passed = suite.Result(
        capability="routes",
        scenario="round-trip",
        outcome="passed",
        unverified=("no route left after delete (the driver cannot list the cloud's routes)",),
    )

    async def fake_run_suite(*args: object, **kwargs: object) -> suite.Report:
        return suite.Report(provider="fake", results=[passed])

    monkeypatch.setattr(pytest_plugin, "run_suite", fake_run_suite)

    class Item:
        user_properties: list[tuple[str, object]] = []

    class Request:
        node = Item()

    with pytest.warns(pytest_plugin.UnverifiedChecksWarning, match="round-trip: unverified: no"):
        pytest_plugin.test_conformance(
            _scenario("round-trip"),
            FakeCloud(),
            None,
            "unused",
            suite.SuiteConfig(),
            Request(),  # type: ignore[arg-type]
        )
    assert Item.user_properties == [("unverified", passed.unverified[0])]


async def test_a_coroutine_made_by_a_plain_method_is_watched_too() -> None:
    class Wrapped(FakeCloud):
        def instance_shutdown(self, node: Node) -> Any:  # type: ignore[override]
            async def blocking() -> bool:
                time.sleep(0.3)  # noqa: ASYNC251 - the deliberate bug
                return False

            return blocking()

        def get_load_balancer_name(self, cluster_name: str, service: Any) -> str:
            raise KeyError("no name")

    observer = suite.Observer()
    observed = suite.ObservedProvider(Wrapped(), observer)
    assert await observed.instances_v2().instance_shutdown(suite.node_view("n1")) is False
    assert [h.method for h in observer.holds] == ["InstancesV2.instance_shutdown"]
    with pytest.raises(KeyError):
        observed.load_balancer().get_load_balancer_name("c", suite.service_view("ns", "s"))
    assert observer.foreign_errors == [
        "LoadBalancer.get_load_balancer_name raised KeyError: 'no name'"
    ]
