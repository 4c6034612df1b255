"""The Azure provider against ccm's conformance suite on the fake ARM server: ``ccm conformance``
with the provider's driver, in a subprocess reaching the fake over HTTPS like the daemon would reach
Azure.

The run passes: every instance, load-balancer, route and hygiene scenario passes but routes'
cluster-name-scoping, which is not applicable (as upstream): Azure routes carry no tags, the route
table is the cluster's, and ``cluster_name`` does not scope its routes; the driver declares it
(``route_scope = "route-table"``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ccm_azure.testing.arm import serve_in_thread
from ccm_azure.testing.world import AzureWorld, azure_json

from ccm.testing.conformance.report import check_route_table_scoped_run
from ccm.testing.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

INSTANCE_SCENARIOS = {
    "node-initialization",
    "address-refresh",
    "running-instance-exists",
    "stopped-instance-exists",
    "deleted-instance-does-not-exist",
    "provider-id-wins-over-name",
    "stale-node-of-recreated-machine",
    "lifecycle-deletion",
    "batch-agrees-with-single-calls",
}
LB_SCENARIOS = {
    "ensure-is-idempotent",
    "update-follows-backends",
    "delete-is-idempotent",
    "names-within-limits",
    "status-round-trips",
}
ROUTE_SCENARIOS = {"round-trip", "idempotent-create-delete", "dual-stack"}  # fully checked
HYGIENE_SCENARIOS = {
    "no-mutation-of-inputs",
    "cancellation-and-timeouts",
    "errors-are-ccm-errors",
    "does-not-block-the-event-loop",
}


def test_ccm_conformance_passes_the_azure_provider_route_scoping_not_applicable(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with serve_in_thread() as arm:
        AzureWorld(arm).create_security_group()  # the cluster's, named by securityGroupName
        config = tmp_path / "azure.json"
        config.write_text(azure_json(arm))
        junit = tmp_path / "junit.xml"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ccm",
                "conformance",
                "--cloud-provider",
                "azure",
                "--cloud-config",
                str(config),
                "--driver",
                "ccm_azure.driver:driver_factory",
                "--kubeconfig",
                str(control_plane.kubeconfig_path),
                "--only",
                "instances-v2",
                "--only",
                "routes",
                "--only",
                "load-balancer",
                "--only",
                "hygiene",
                "--junit-xml",
                str(junit),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "SSL_CERT_FILE": str(arm.ca_path)},
        )
        out = result.stdout
        assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
        cases = check_route_table_scoped_run(out, junit)
        assert cases.passed == (
            INSTANCE_SCENARIOS | LB_SCENARIOS | ROUTE_SCENARIOS | HYGIENE_SCENARIOS
        ), cases
        assert arm.tokens_issued >= 1
