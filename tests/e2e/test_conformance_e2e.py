"""End to end: the conformance suite on the real kube-apiserver with the real controllers.

The fake provider passes every scenario (through ``ccm conformance`` with ``--junit-xml``, and
through the pytest plugin); each deliberately broken provider of ``tests/conformance_broken`` fails
its capability with a message naming the broken rule. Broken-provider runs are limited to the
relevant capability (``only=``) to stay fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ccm.testing.conformance import scenarios_routes, suite
from ccm.testing.conformance.fake_driver import fake_driver_factory
from ccm.testing.controlplane import ControlPlane
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud
from tests.conformance_broken.blocks_event_loop import BlocksEventLoop
from tests.conformance_broken.drops_addresses import DropsAddresses
from tests.conformance_broken.empty_provider_id import EmptyProviderID
from tests.conformance_broken.leaky_delete import LeakyDelete
from tests.conformance_broken.lookup_by_name_only import LooksUpByNameOnly
from tests.conformance_broken.non_idempotent_ensure import NonIdempotentEnsure
from tests.conformance_broken.raises_foreign_error import RaisesForeignError
from tests.conformance_broken.route_delete_ignores_cluster import RouteDeleteIgnoresCluster
from tests.conformance_broken.stopped_not_exists import StoppedReportedGone
from tests.conformance_route_table import RouteTableScopedDriver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

CONFIG = suite.SuiteConfig(wait_timeout=15.0)


def _ccm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_fake_provider_passes_everything_through_the_cli(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    junit = tmp_path / "conformance.xml"
    proc = _ccm(
        "conformance",
        "--cloud-provider",
        "fake",
        "--kubeconfig",
        str(control_plane.kubeconfig_path),
        "--junit-xml",
        str(junit),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for cap in suite.CAPABILITIES:
        assert f"{cap}: passed" in proc.stdout
    # The fake offers InstancesBatch only when its config asks for it: that scenario alone is
    # "not offered", and routes, checked by direct calls, are never reported as skipped.
    passed = len(suite.SCENARIOS) - 1
    assert f"CONFORMANT: {passed} passed, 0 failed, 1 not offered" in proc.stdout
    assert "N/A  batch-agrees-with-single-calls" in proc.stdout
    assert "not offered: the provider does not offer the optional InstancesBatch" in proc.stdout
    assert "unverified" not in proc.stdout
    assert "Skipping" not in proc.stdout + proc.stderr
    assert "node-route-controller" not in proc.stdout + proc.stderr
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    assert len(cases) == len(suite.SCENARIOS)
    assert not root.findall(".//failure")
    assert [c.get("name") for c in root.iter("testcase") if c.find("skipped") is not None] == [
        "batch-agrees-with-single-calls"
    ]
    assert not root.findall(".//property")


def test_cli_fails_a_provider_raising_foreign_errors_and_reports_not_offered(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    config = tmp_path / "fake.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            capabilities: {loadBalancer: false}
            errors:
              - {method: instance-shutdown, kind: generic, message: sdk exploded}
            """
        )
    )
    junit = tmp_path / "conformance.xml"
    proc = _ccm(
        "conformance",
        "--cloud-provider=fake",
        f"--cloud-config={config}",
        f"--kubeconfig={control_plane.kubeconfig_path}",
        f"--junit-xml={junit}",
        "--only=load-balancer",
        "--only=hygiene",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "load-balancer: not offered" in proc.stdout
    assert "[errors-are-ccm-errors]" in proc.stdout
    assert "RuntimeError" in proc.stdout
    root = ET.parse(junit).getroot()
    assert root.findall(".//testsuite[@name='load-balancer']/testcase/skipped")
    assert root.findall(".//testsuite[@name='hygiene']/testcase/failure")


def test_cli_reports_route_scoping_not_applicable_for_a_route_table_driver(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    junit = tmp_path / "conformance.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccm",
            "conformance",
            "--cloud-provider=fake",
            "--driver=tests.conformance_route_table:driver_factory",
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--junit-xml={junit}",
            "--only=routes",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reason = scenarios_routes.ROUTE_TABLE_SCOPE
    assert "routes: passed" in proc.stdout
    assert "N/A  cluster-name-scoping" in proc.stdout
    assert f"— not applicable: {reason}" in proc.stdout
    assert "CONFORMANT: 3 passed, 0 failed, 0 not offered, 1 not applicable" in proc.stdout
    root = ET.parse(junit).getroot()
    assert not root.findall(".//failure")
    cases = {c.get("name"): c.find("skipped") for c in root.iter("testcase")}
    assert set(cases) == {
        "round-trip",
        "idempotent-create-delete",
        "cluster-name-scoping",
        "dual-stack",
    }
    skipped = {name: s.get("message") for name, s in cases.items() if s is not None}
    assert skipped == {"cluster-name-scoping": f"not applicable: {reason}"}


async def test_route_scope_decides_whether_routes_ignoring_the_cluster_fail(
    control_plane: ControlPlane,
) -> None:
    kubeconfig = str(control_plane.kubeconfig_path)
    # The default declaration ("cluster-name"): the provider fails the scoping rule.
    report = await _run(RouteDeleteIgnoresCluster(), "routes", kubeconfig=kubeconfig)
    assert [(r.scenario, r.rule) for r in report.failures()] == [
        ("cluster-name-scoping", "route-cluster-scoping")
    ]
    # A driver declaring "route-table": that scenario alone is not applicable, the run passes.
    cloud = RouteDeleteIgnoresCluster()
    report = await suite.run_suite(
        cloud, RouteTableScopedDriver(cloud), kubeconfig=kubeconfig, only=["routes"], config=CONFIG
    )
    assert report.passed
    outcomes = {r.scenario: (r.outcome, r.reason) for r in report.results}
    assert outcomes.pop("cluster-name-scoping") == (
        "not applicable",
        scenarios_routes.ROUTE_TABLE_SCOPE,
    )
    assert outcomes == dict.fromkeys(
        ("round-trip", "idempotent-create-delete", "dual-stack"), ("passed", "")
    )


async def _run(provider: FakeCloud, *only: str, kubeconfig: str) -> suite.Report:
    return await suite.run_suite(
        provider, fake_driver_factory(provider), kubeconfig=kubeconfig, only=only, config=CONFIG
    )


@pytest.mark.parametrize(
    ("provider_class", "capability", "failures"),
    [
        pytest.param(
            StoppedReportedGone,
            "instances-v2",
            {
                "stopped-instance-exists": "stopped-instance-exists",
                "lifecycle-deletion": "stopped-instance-exists",
            },
            id="stopped instance reported as non-existent",
        ),
        pytest.param(
            EmptyProviderID,
            "instances-v2",
            {"node-initialization": "providerID-not-empty"},
            id="empty providerID",
        ),
        pytest.param(
            DropsAddresses,
            "instances-v2",
            {"node-initialization": "addresses-set"},
            id="no addresses",
        ),
        pytest.param(
            LooksUpByNameOnly,
            "instances-v2",
            {
                "provider-id-wins-over-name": "lookup-by-provider-id",
                "stale-node-of-recreated-machine": "lookup-by-provider-id",
            },
            id="lookup by Node name ignoring the providerID",
        ),
        pytest.param(
            BlocksEventLoop,
            "hygiene",
            {"does-not-block-the-event-loop": "does-not-block-event-loop"},
            id="time.sleep inside an async def",
        ),
        pytest.param(
            NonIdempotentEnsure,
            "load-balancer",
            {"ensure-is-idempotent": "ensure-idempotent"},
            id="non-idempotent ensure",
        ),
        pytest.param(
            LeakyDelete,
            "load-balancer",
            {
                "delete-is-idempotent": "delete-leaves-nothing",
                "status-round-trips": "delete-leaves-nothing",
            },
            id="leaked load balancer on delete",
        ),
        pytest.param(
            RouteDeleteIgnoresCluster,
            "routes",
            {"cluster-name-scoping": "route-cluster-scoping"},
            id="route delete ignores the cluster name",
        ),
        pytest.param(
            RaisesForeignError,
            "hygiene",
            {"errors-are-ccm-errors": "errors-are-ccm-errors"},
            id="error that is not a ccm.errors type",
        ),
    ],
)
async def test_suite_fails_broken_provider_naming_the_rule(
    control_plane: ControlPlane,
    provider_class: type[FakeCloud],
    capability: str,
    failures: dict[str, str],
) -> None:
    report = await _run(provider_class(), capability, kubeconfig=str(control_plane.kubeconfig_path))
    assert not report.passed
    failed = {r.scenario: r for r in report.failures()}
    for scenario_name, rule in failures.items():
        assert scenario_name in failed, [(r.scenario, r.outcome) for r in report.results]
        assert failed[scenario_name].rule == rule
        assert f"[{rule}]" in failed[scenario_name].reason
    # nothing the run created is left behind
    assert all(r.capability == capability for r in report.results)


async def test_capabilities_not_offered_are_never_passed(control_plane: ControlPlane) -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(load_balancer=False, routes=False))
    report = await _run(
        cloud, "load-balancer", "routes", kubeconfig=str(control_plane.kubeconfig_path)
    )
    assert report.results
    assert {r.outcome for r in report.results} == {"not offered"}
    assert report.passed


def _run_plugin(
    control_plane: ControlPlane,
    tmp_path: Path,
    *,
    imports: str = "",
    fixtures: str = "",
    args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """A provider's own test session: a conftest with the plugin and the fake cloud (plus
    ``imports`` and ``fixtures``), one test module re-exporting ``test_conformance``, run by pytest
    in a child process against the shared control plane."""
    conftest = (
        "import os\nimport pytest\nfrom ccm.testing.fake_cloud import FakeCloud\n"
        + imports
        + '\npytest_plugins = ["ccm.testing.conformance.pytest_plugin"]\n\n'
        + "@pytest.fixture\ndef conformance_provider():\n    return FakeCloud()\n\n"
        + fixtures
        + '@pytest.fixture\ndef conformance_kubeconfig():\n    return os.environ["CF_KUBECONFIG"]\n'
    )
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_my_cloud.py").write_text(
        "from ccm.testing.conformance.pytest_plugin import test_conformance  # noqa: F401\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={
            **os.environ,
            "CF_KUBECONFIG": str(control_plane.kubeconfig_path),
            "PYTHONPATH": str(REPO),
        },
        check=False,
    )


def test_pytest_plugin_turns_scenarios_into_test_items(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    proc = _run_plugin(control_plane, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(suite.SCENARIOS) - 1} passed, 1 skipped" in proc.stdout


def test_pytest_plugin_skips_a_not_applicable_scenario_with_the_reason(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    proc = _run_plugin(
        control_plane,
        tmp_path,
        imports="from tests.conformance_route_table import RouteTableScopedDriver\n",
        fixtures=(
            "@pytest.fixture\ndef conformance_driver(conformance_provider):\n"
            "    return RouteTableScopedDriver(conformance_provider)\n\n"
        ),
        args=("-rs", "-k", "routes"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed, 1 skipped" in proc.stdout, proc.stdout
    assert f"not applicable: {scenarios_routes.ROUTE_TABLE_SCOPE}" in proc.stdout, proc.stdout
