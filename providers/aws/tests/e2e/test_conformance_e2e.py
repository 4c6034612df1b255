"""The AWS provider against ccm's conformance suite on moto: ``ccm conformance`` with the
provider's driver, in a subprocess reaching moto over HTTP like the daemon would reach AWS.

The run passes: every scenario passes but routes' cluster-name-scoping, which is not applicable.
EC2 routes carry no tags, so the cluster's route table (``RouteTableID`` or the cluster-tagged one)
is the scope and the ``cluster_name`` argument only names routes, as upstream; the driver declares
it (``route_scope = "route-table"``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ccm.testing.conformance.report import check_route_table_scoped_run
from ccm.testing.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

PASSING = {
    "ensure-is-idempotent",
    "update-follows-backends",
    "delete-is-idempotent",
    "names-within-limits",
    "status-round-trips",
    "round-trip",
    "idempotent-create-delete",
    "dual-stack",
    "no-mutation-of-inputs",
    "cancellation-and-timeouts",
    "errors-are-ccm-errors",
    "node-initialization",
    "address-refresh",
    "running-instance-exists",
    "stopped-instance-exists",
    "deleted-instance-does-not-exist",
    "lifecycle-deletion",
    "batch-agrees-with-single-calls",
}


def test_ccm_conformance_passes_the_aws_provider_route_scoping_not_applicable(
    control_plane: ControlPlane, config_text: str, tmp_path: Path
) -> None:
    config = tmp_path / "cloud.conf"
    config.write_text(config_text)
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccm",
            "conformance",
            "--cloud-provider",
            "aws",
            "--cloud-config",
            str(config),
            "--driver",
            "ccm_aws.driver:driver_factory",
            "--kubeconfig",
            str(control_plane.kubeconfig_path),
            "--junit-xml",
            str(junit),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    cases = check_route_table_scoped_run(out, junit)
    assert cases.passed >= PASSING, cases
