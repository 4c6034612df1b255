"""The AWS provider passes ccm's conformance suite against moto: ``ccm conformance`` with the
provider's driver, in a subprocess reaching moto over HTTP like the daemon would reach AWS."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ccm.testing.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

INSTANCE_SCENARIOS = {
    "node-initialization",
    "address-refresh",
    "running-instance-exists",
    "stopped-instance-exists",
    "deleted-instance-does-not-exist",
    "lifecycle-deletion",
    "batch-agrees-with-single-calls",
}


def test_ccm_conformance_certifies_the_aws_provider(
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
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "0 failed" in result.stdout
    cases = {c.get("name"): [child.tag for child in c] for c in ET.parse(junit).iter("testcase")}
    passed = {name for name, tags in cases.items() if set(tags) <= {"system-out"}}
    assert {name.rsplit(".", 1)[-1].split("/")[-1] for name in passed} >= INSTANCE_SCENARIOS, cases
