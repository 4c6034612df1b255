"""Unit tests of the conformance suite: the scenarios that need no apiserver, played directly
against the fake provider (must pass) and the deliberately broken providers of
``tests/conformance_broken`` (must fail naming the broken rule); the driver, the report, JUnit XML,
driver loading and the ``ccm conformance`` dispatch."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from ccm import cli as appmain
from ccm import errors
from ccm.cloudprovider import CloudProvider, Route
from ccm.testing.conformance import cli, driver, scenarios_routes, suite
from ccm.testing.conformance.fake_driver import FakeCloudDriver, fake_driver_factory
from ccm.testing.conformance.report import (
    check_route_table_scoped_run,
    format_report,
    read_junit_xml,
    write_junit_xml,
)
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud, FakeCloudStatus
from tests.conformance_broken.batch_wrong_answers import (
    BatchDropsLastAnswer,
    BatchReportsStoppedGone,
)
from tests.conformance_broken.blocks_event_loop import BlocksEventLoop
from tests.conformance_broken.empty_provider_id import EmptyProviderID
from tests.conformance_broken.leaky_delete import LeakyDelete
from tests.conformance_broken.lookup_by_name_only import LooksUpByNameOnly
from tests.conformance_broken.non_idempotent_ensure import NonIdempotentEnsure
from tests.conformance_broken.raises_foreign_error import RaisesForeignError
from tests.conformance_broken.route_delete_ignores_cluster import RouteDeleteIgnoresCluster
from tests.conformance_broken.stopped_not_exists import StoppedReportedGone
from tests.conformance_broken.swallows_cancellation import SwallowsCancellation
from tests.conformance_route_table import RouteTableScopedDriver

# Scenarios that talk only to the provider and the driver (no Kubernetes objects).
DIRECT = [
    "running-instance-exists",
    "stopped-instance-exists",
    "deleted-instance-does-not-exist",
    "provider-id-wins-over-name",
    "ensure-is-idempotent",
    "update-follows-backends",
    "delete-is-idempotent",
    "names-within-limits",
    "round-trip",
    "idempotent-create-delete",
    "cluster-name-scoping",
    "dual-stack",
    "no-mutation-of-inputs",
    "cancellation-and-timeouts",
    "errors-are-ccm-errors",
    "does-not-block-the-event-loop",
]


def _scenario(name: str) -> suite.Scenario:
    (found,) = [s for s in suite.SCENARIOS if s.name == name]
    return found


def _ctx(provider: CloudProvider, drv: Any = "default") -> suite.Context:
    if drv == "default":
        drv = fake_driver_factory(provider)
    return suite.Context(
        provider,
        drv,
        None,  # type: ignore[arg-type]  # these scenarios never touch the apiserver
        suite.SuiteConfig(call_timeout=5),
        suite.Observer(),
    )


async def _play(provider: CloudProvider, name: str) -> suite.RuleViolation | None:
    ctx = _ctx(provider)
    try:
        await _scenario(name).fn(ctx)
    except suite.RuleViolation as exc:
        return exc
    finally:
        assert ctx.driver is not None
        await ctx.driver.cleanup()
    return None


def test_every_capability_has_scenarios_and_names_are_unique() -> None:
    caps = {s.capability for s in suite.SCENARIOS}
    assert caps == set(suite.CAPABILITIES)
    keys = [(s.capability, s.name) for s in suite.SCENARIOS]
    assert len(keys) == len(set(keys))
    assert all(s.doc for s in suite.SCENARIOS)


@pytest.mark.parametrize("name", DIRECT)
async def test_fake_provider_passes(name: str) -> None:
    assert await _play(FakeCloud(), name) is None


@pytest.mark.parametrize(
    ("provider_class", "scenario_name", "rule", "words"),
    [
        pytest.param(
            StoppedReportedGone,
            "stopped-instance-exists",
            "stopped-instance-exists",
            "stopped machine",
            id="stopped instance reported as non-existent",
        ),
        pytest.param(
            EmptyProviderID,
            "node-initialization",
            "providerID-not-empty",
            "empty provider_id",
            id="empty providerID",
        ),
        pytest.param(
            NonIdempotentEnsure,
            "ensure-is-idempotent",
            "ensure-idempotent",
            "not idempotent",
            id="non-idempotent ensure",
        ),
        pytest.param(
            LeakyDelete,
            "delete-is-idempotent",
            "delete-leaves-nothing",
            "leaked load balancer",
            id="leaked load balancer on delete",
        ),
        pytest.param(
            RouteDeleteIgnoresCluster,
            "cluster-name-scoping",
            "route-cluster-scoping",
            "cluster name",
            id="route delete ignores the cluster name",
        ),
        pytest.param(
            RaisesForeignError,
            "errors-are-ccm-errors",
            "errors-are-ccm-errors",
            "RuntimeError",
            id="error that is not a ccm.errors type",
        ),
        pytest.param(
            SwallowsCancellation,
            "cancellation-and-timeouts",
            "honours-cancellation",
            "swallowed the cancellation",
            id="call that swallows its cancellation",
        ),
        pytest.param(
            LooksUpByNameOnly,
            "provider-id-wins-over-name",
            "lookup-by-provider-id",
            "looked the machine up by the Node's name; spec.providerID must win",
            id="lookup by Node name ignoring the providerID",
        ),
        pytest.param(
            BlocksEventLoop,
            "does-not-block-the-event-loop",
            "does-not-block-event-loop",
            "InstancesV2.instance_exists held the event loop",
            id="time.sleep inside an async def",
        ),
        pytest.param(
            BatchDropsLastAnswer,
            "batch-agrees-with-single-calls",
            "batch-one-answer-per-node",
            "instance_exists_batch returned 3 answers for 4 nodes",
            id="batch answer of the wrong length",
        ),
        pytest.param(
            BatchReportsStoppedGone,
            "batch-agrees-with-single-calls",
            "batch-agrees-with-single",
            "(stopped), but instance_exists answers True",
            id="batch answer disagreeing with the single call",
        ),
    ],
)
async def test_broken_provider_fails_naming_the_rule(
    provider_class: type[FakeCloud], scenario_name: str, rule: str, words: str
) -> None:
    violation = await _play(provider_class(), scenario_name)
    assert violation is not None
    assert violation.rule == rule
    assert f"[{rule}]" in str(violation)
    assert words in str(violation)


async def test_batch_scenario_is_not_offered_without_instances_batch() -> None:
    with pytest.raises(suite.NotOffered, match="does not offer the optional InstancesBatch"):
        await _play(FakeCloud(), "batch-agrees-with-single-calls")


async def test_batch_fake_passes_the_batch_scenario() -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_batch=True), max_batch_size=3)
    assert await _play(cloud, "batch-agrees-with-single-calls") is None
    # 4 Nodes in chunks of 3: two calls of each batch method
    assert cloud.call_count("instance-exists-batch") == 2
    assert cloud.call_count("instance-metadata-batch") == 2


@pytest.mark.parametrize(
    ("capabilities", "name"),
    [
        (FakeCapabilities(instances_v2=False), "stopped-instance-exists"),
        (FakeCapabilities(load_balancer=False), "ensure-is-idempotent"),
        (FakeCapabilities(routes=False), "round-trip"),
    ],
)
async def test_capability_not_offered_is_reported_not_passed(
    capabilities: FakeCapabilities, name: str
) -> None:
    with pytest.raises(suite.NotOffered, match="does not offer"):
        await _scenario(name).fn(_ctx(FakeCloud(capabilities=capabilities)))


class RouteDeleteDoesNothing(FakeCloud):
    """delete_route succeeds and leaves the route in place."""

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        return None


async def test_route_table_scoped_driver_gets_cluster_scoping_not_applicable() -> None:
    cloud = RouteDeleteIgnoresCluster()
    ctx = _ctx(cloud, RouteTableScopedDriver(cloud))
    result = await suite.play_scenario(_scenario("cluster-name-scoping"), ctx)
    assert (result.outcome, result.rule) == ("not applicable", "")
    assert result.reason == (
        "routes are scoped by the route table the provider is configured with; "
        "cluster_name only names them, as upstream"
    )
    assert cloud.call_count("create-route") == 0
    # The same provider with a driver that declares nothing: the full check, which it fails.
    cloud = RouteDeleteIgnoresCluster()
    result = await suite.play_scenario(_scenario("cluster-name-scoping"), _ctx(cloud))
    assert (result.outcome, result.rule) == ("failed", "route-cluster-scoping")


@pytest.mark.parametrize("name", ["round-trip", "idempotent-create-delete", "dual-stack"])
async def test_route_table_scoped_driver_keeps_the_other_route_scenarios(name: str) -> None:
    cloud = FakeCloud()
    result = await suite.play_scenario(_scenario(name), _ctx(cloud, RouteTableScopedDriver(cloud)))
    assert result.outcome == "passed", result.reason
    assert cloud.call_count("create-route") >= 1


async def test_route_table_scoped_driver_still_fails_a_route_left_after_delete() -> None:
    cloud = RouteDeleteDoesNothing()
    ctx = _ctx(cloud, RouteTableScopedDriver(cloud))
    result = await suite.play_scenario(_scenario("round-trip"), ctx)
    assert (result.outcome, result.rule) == ("failed", "route-round-trip")


def test_declared_route_scope() -> None:
    assert driver.declared_route_scope(None) == "cluster-name"
    assert driver.declared_route_scope(object()) == "cluster-name"
    assert driver.declared_route_scope(FakeCloudDriver(FakeCloud())) == "cluster-name"
    assert driver.declared_route_scope(RouteTableScopedDriver(FakeCloud())) == "route-table"

    class Tagged(FakeCloudDriver):
        route_scope = "tags"  # type: ignore[assignment]

    with pytest.raises(errors.ConfigError, match="route_scope 'tags' is not one of"):
        driver.declared_route_scope(Tagged(FakeCloud()))


async def test_run_suite_refuses_an_unknown_route_scope_before_running() -> None:
    class Tagged(FakeCloudDriver):
        route_scope = "tags"  # type: ignore[assignment]

    with pytest.raises(errors.ConfigError, match="route_scope"):
        await suite.run_suite(FakeCloud(), Tagged(FakeCloud()), kubeconfig="unused")


async def test_scenarios_needing_machines_fail_without_a_driver() -> None:
    with pytest.raises(suite.RuleViolation, match=r"\[driver-required\]"):
        await _scenario("stopped-instance-exists").fn(_ctx(FakeCloud(), None))


async def test_observer_records_non_ccm_errors_and_passes_ccm_ones() -> None:
    observer = suite.Observer()
    observed = suite.ObservedProvider(RaisesForeignError(), observer)
    inst = observed.instances_v2()
    with pytest.raises(RuntimeError):
        await inst.instance_exists(suite.node_view("n1"))
    assert observer.foreign_errors == [
        "InstancesV2.instance_exists raised RuntimeError: sdk exploded"
    ]
    plain = suite.ObservedProvider(FakeCloud(), observer)
    with pytest.raises(errors.InstanceNotFoundError):
        await plain.instances_v2().instance_metadata(suite.node_view("gone"))
    assert len(observer.foreign_errors) == 1
    assert plain.load_balancer().get_load_balancer_name("c", suite.service_view("ns", "s"))


async def test_fake_driver_in_process() -> None:
    cloud = FakeCloud()
    drv = FakeCloudDriver(cloud)
    assert isinstance(drv, driver.ConformanceDriver)
    machine = await drv.create_machine("m1")
    view = suite.node_view("m1")
    meta = await cloud.instance_metadata(view)
    assert meta is not None
    assert meta.provider_id == machine.provider_id
    assert machine.addresses == meta.node_addresses
    await drv.stop_machine("m1")
    assert await cloud.instance_shutdown(view)
    assert await cloud.instance_exists(view)
    await drv.start_machine("m1")
    assert not await cloud.instance_shutdown(view)
    new = await drv.change_addresses("m1")
    assert new != machine.addresses
    assert (await cloud.instance_metadata(view)).node_addresses == new  # type: ignore[union-attr]
    await drv.delete_machine("m1")
    assert not await cloud.instance_exists(view)
    await cloud.create_route("c1", "h", Route(target_node="m1", destination_cidr="10.1.0.0/24"))
    assert [(r.cluster_name, r.target_node) for r in await drv.routes("c1") or []] == [("c1", "m1")]
    await drv.cleanup()
    assert "m1" not in cloud.instance_table


async def test_fake_driver_through_state_and_status_files(tmp_path: Path) -> None:
    state, status = tmp_path / "state.json", tmp_path / "status.json"
    cloud = FakeCloud.from_config(
        f"stateFile: {state}\nstatusFile: {status}\nstatusInterval: 0\n".encode()
    )
    drv = FakeCloudDriver.for_files(state, status)
    machine = await drv.create_machine("m2")
    view = suite.node_view("m2")
    meta = await cloud.instance_metadata(view)
    assert meta is not None
    assert meta.provider_id == machine.provider_id
    await drv.stop_machine("m2")
    assert await cloud.instance_shutdown(view)
    await drv.delete_machine("m2")
    assert not await cloud.instance_exists(view)
    svc = suite.service_view("default", "web")
    await cloud.ensure_load_balancer("kubernetes", svc, [view])
    cloud._flush_status()
    assert FakeCloudStatus.read(status) is not None
    lbs = await drv.load_balancers()
    assert lbs is not None
    assert [lb.service for lb in lbs] == ["default/web"]


def test_fake_driver_factory_refuses_other_providers() -> None:
    class Other(CloudProvider):
        name = "other"

    with pytest.raises(TypeError, match="not a FakeCloud"):
        fake_driver_factory(Other())


class _Module:
    instance = FakeCloudDriver(FakeCloud())

    @staticmethod
    async def async_factory(provider: CloudProvider) -> FakeCloudDriver:
        return fake_driver_factory(provider)


async def test_build_driver_accepts_instances_and_sync_or_async_factories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    mod = types.ModuleType("cf_test_drivers")
    mod.instance = _Module.instance  # type: ignore[attr-defined]
    mod.async_factory = _Module.async_factory  # type: ignore[attr-defined]
    mod.sync_factory = fake_driver_factory  # type: ignore[attr-defined]
    mod.not_a_driver = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cf_test_drivers", mod)
    cloud = FakeCloud()
    assert await cli.build_driver("cf_test_drivers:instance", cloud) is _Module.instance
    for attr in ("async_factory", "sync_factory"):
        built = await cli.build_driver(f"cf_test_drivers:{attr}", cloud)
        assert isinstance(built, FakeCloudDriver)
        assert built.cloud is cloud
    for bad in ("cf_test_drivers:not_a_driver", "cf_test_drivers:missing", "nocolon", "nope.x:y"):
        with pytest.raises(errors.ConfigError, match="--driver"):
            await cli.build_driver(bad, cloud)


def _report() -> suite.Report:
    return suite.Report(
        provider="demo",
        results=[
            suite.Result(capability="instances-v2", scenario="a", outcome="passed", seconds=0.5),
            suite.Result(
                capability="load-balancer",
                scenario="b",
                outcome="failed",
                rule="ensure-idempotent",
                reason="[ensure-idempotent] two load balancers",
            ),
            suite.Result(
                capability="routes", scenario="c", outcome="not offered", reason="no routes"
            ),
        ],
    )


def test_report_text_per_capability() -> None:
    report = _report()
    assert not report.passed
    text = format_report(report)
    assert "instances-v2: passed" in text
    assert "load-balancer: FAILED" in text
    assert "[ensure-idempotent] two load balancers" in text
    assert "routes: not offered" in text
    assert "NOT CONFORMANT: 1 passed, 1 failed, 1 not offered" in text


def test_not_offered_alone_is_still_conformant() -> None:
    report = suite.Report(
        provider="p",
        results=[suite.Result(capability="routes", scenario="c", outcome="not offered")],
    )
    assert report.passed


def _not_applicable_report() -> suite.Report:
    return suite.Report(
        provider="demo",
        results=[
            suite.Result(capability="routes", scenario="round-trip", outcome="passed"),
            suite.Result(
                capability="routes",
                scenario="cluster-name-scoping",
                outcome="not applicable",
                reason=scenarios_routes.ROUTE_TABLE_SCOPE,
            ),
        ],
    )


def test_report_text_counts_not_applicable_apart_and_passes() -> None:
    report = _not_applicable_report()
    assert report.passed
    text = format_report(report)
    assert "routes: passed" in text
    assert (
        f"N/A  cluster-name-scoping (0.0s) — not applicable: {scenarios_routes.ROUTE_TABLE_SCOPE}"
        in text
    )
    assert text.endswith("CONFORMANT: 1 passed, 0 failed, 0 not offered, 1 not applicable")
    # A run without one keeps its summary line.
    assert format_report(_report()).endswith("NOT CONFORMANT: 1 passed, 1 failed, 1 not offered")


def test_junit_xml_skips_not_applicable_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    write_junit_xml(_not_applicable_report(), path)
    root = ET.parse(path).getroot()
    (routes,) = root.iter("testsuite")
    assert (routes.get("skipped"), routes.get("failures")) == ("1", "0")
    skipped = root.find(".//testcase[@name='cluster-name-scoping']/skipped")
    assert skipped is not None
    assert skipped.get("message") == f"not applicable: {scenarios_routes.ROUTE_TABLE_SCOPE}"
    assert root.find(".//testcase[@name='round-trip']/skipped") is None


def test_a_route_table_scoped_run_is_checked_from_its_output_and_junit(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    report = _not_applicable_report()
    write_junit_xml(report, path)
    out = format_report(report)
    cases = check_route_table_scoped_run(out, path)
    assert cases.passed == {"round-trip"}
    # A failed scenario, or a summary that does not match the file, is an AssertionError.
    with pytest.raises(AssertionError):
        check_route_table_scoped_run(out.replace("0 failed", "1 failed"), path)
    with pytest.raises(AssertionError):
        check_route_table_scoped_run(out.replace("1 passed", "2 passed"), path)
    write_junit_xml(_report(), path)
    with pytest.raises(AssertionError):
        check_route_table_scoped_run(out, path)


def test_junit_xml_reads_back_each_scenarios_outcome(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    write_junit_xml(_report(), path)
    got = read_junit_xml(path)
    assert got.passed == {"a"}
    assert got.failed == {"b": "[ensure-idempotent] two load balancers"}
    assert got.skipped == {"c": "not offered: no routes"}


def test_junit_xml(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    write_junit_xml(_report(), path)
    root = ET.parse(path).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"instances-v2", "load-balancer", "routes"}
    assert suites["load-balancer"].get("failures") == "1"
    failure = root.find(".//testcase[@name='b']/failure")
    assert failure is not None
    assert failure.get("type") == "ensure-idempotent"
    assert root.find(".//testcase[@name='c']/skipped") is not None
    assert root.find(".//testcase[@name='a']/failure") is None


async def test_only_rejects_unknown_capability() -> None:
    with pytest.raises(errors.ConfigError, match="--only"):
        await suite.run_suite(FakeCloud(), None, kubeconfig="unused", only=["disks"])


def test_ccm_conformance_dispatch_reports_bad_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert appmain.run(["conformance", "--cloud-provider", "no-such-cloud"]) == 2
    assert "no-such-cloud" in capsys.readouterr().err
