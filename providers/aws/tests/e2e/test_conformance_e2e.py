"""The AWS provider against ccm's conformance suite on moto: ``ccm conformance`` with the
provider's driver, in a subprocess reaching moto over HTTP like the daemon would reach AWS.

Every scenario passes but routes' cluster-name-scoping, by design: EC2 routes carry no tags, so
the cluster's route table (``RouteTableID`` or the cluster-tagged one) is the scope, and the
``cluster_name`` argument only names routes, as upstream."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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


def test_ccm_conformance_passes_the_aws_provider_but_route_cluster_scoping(
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
    assert result.returncode == 1, out[-4000:] + result.stderr[-4000:]
    assert ", 1 failed, 0 not offered" in out, out[-4000:]
    assert "[route-cluster-scoping]" in out
    cases = {c.get("name"): [child.tag for child in c] for c in ET.parse(junit).iter("testcase")}
    passed = {name for name, tags in cases.items() if not tags or set(tags) <= {"system-out"}}
    failed = {name for name, tags in cases.items() if "failure" in tags}
    assert {str(n).rsplit("/", 1)[-1].rsplit(".", 1)[-1] for n in passed} >= PASSING, cases
    assert {str(n).rsplit("/", 1)[-1].rsplit(".", 1)[-1] for n in failed} == {
        "cluster-name-scoping"
    }, cases
