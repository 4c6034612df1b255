"""The private-cloud sample passes the conformance suite, through both front doors: the
``ccm conformance`` command with the sample's driver, and the pytest plugin as a provider author
would use it in their own test suite (every scenario a test item below)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The conformance scenarios as test items of this module, as in a provider author's own suite.
from ccm.testing.conformance.pytest_plugin import (  # noqa: F401
    conformance_config,
    conformance_kubeconfig,
    test_conformance,
)
from ccm.testing.conformance.suite import SCENARIOS
from ccm.testing.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conformance_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One private cloud API for the module (each scenario names its own machines)."""
    from private_cloud.testing import ApiProcess

    with ApiProcess(
        tmp_path_factory.mktemp("private-cloud") / "cloud.db", vip_pool="192.0.2.0/26"
    ) as api:
        yield api


@pytest.fixture
def cloud_config(conformance_cloud: Any, tmp_path: Path) -> Path:
    from private_cloud.testing import write_cloud_config

    return write_cloud_config(tmp_path / "cloud.yaml", conformance_cloud.url)


@pytest.fixture
def conformance_provider(cloud_config: Path) -> Any:
    from private_cloud.provider import factory

    return factory(cloud_config.read_bytes())


@pytest.fixture
def conformance_driver(conformance_provider: Any) -> Any:
    from private_cloud.driver import driver_factory

    return driver_factory(conformance_provider)


def test_ccm_conformance_certifies_the_private_cloud_provider(
    control_plane: ControlPlane, cloud_config: Path, tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccm",
            "conformance",
            "--cloud-provider",
            "private-cloud",
            "--cloud-config",
            str(cloud_config),
            "--driver",
            "private_cloud.driver:driver_factory",
            "--kubeconfig",
            str(control_plane.kubeconfig_path),
            "--junit-xml",
            str(junit),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # Everything offered passes; the sample does not offer the optional InstancesBatch, whose
    # scenario alone is "not offered".
    assert "0 failed, 1 not offered" in result.stdout
    assert "N/A  batch-agrees-with-single-calls" in result.stdout
    cases = ET.parse(junit).getroot().iter("testcase")
    outcomes = {c.get("name"): [child.tag for child in c] for c in cases}
    assert len(outcomes) == len(SCENARIOS)
    assert "skipped" in outcomes.pop("batch-agrees-with-single-calls")
    assert all(tags == [] or set(tags) <= {"system-out"} for tags in outcomes.values()), outcomes
