"""End to end: ``--dry-run`` beside a controller manager that holds the Lease.

The dry-run daemon runs every loop against the real kube-apiserver and the fake cloud; the
apiserver's audit log shows it sent no write (no create, update, patch or delete, Events and the
Lease included), the objects keep their resourceVersions, the cloud has no load balancer, and the
writes it logged are the ones a normal run then makes.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from ccm import names, wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes, is_tainted

pytestmark = pytest.mark.e2e

_WRITES = {"create", "update", "patch", "delete", "deletecollection"}
_REVIEWS = {"tokenreviews", "subjectaccessreviews"}


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout}s")


def _would(daemon: Daemon) -> list[dict[str, Any]]:
    """The dry-run lines of the daemon's JSON log."""
    out = []
    for line in daemon.log_lines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("dry_run"):
                out.append(record)
    return out


def _ccm_writes(control_plane: ControlPlane, offset: int) -> list[dict[str, Any]]:
    """Writes sent by a ccm client (its User-Agent starts ``ccm/``) since ``offset`` of the audit
    log, except the reviews that authorize a /metrics scrape (they persist nothing)."""
    with control_plane.audit_log_path.open("rb") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [
        e
        for e in events
        if e.get("userAgent", "").startswith("ccm/")
        and e["verb"] in _WRITES
        and e.get("objectRef", {}).get("resource") not in _REVIEWS
    ]


def test_dry_run_writes_nothing_and_would_write_what_a_normal_run_writes(
    k8s_admin: Any,
    control_plane: ControlPlane,
    nodes: Nodes,
    kube_namespace: str,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
    metrics_token: str,
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    coordination = client.CoordinationV1Api(k8s_admin)
    node_names = [unique_name("node"), unique_name("node")]
    cloud = fake_cloud_files(defaultInstance={"instanceType": "fake.medium", "region": "r-1"})
    for i, name in enumerate(node_names):
        cloud.state.add_instance(name, provider_id=f"fake://i-{i}", zone="z-1", region="r-1")
    cloud.write_state()
    for name in node_names:
        nodes.create(name, internal_ip="10.0.0.9")
    svc = unique_name("svc")
    core.create_namespaced_service(
        kube_namespace,
        {
            "metadata": {"name": svc},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": svc},
                "ports": [{"name": "p", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )
    svc_key = f"{kube_namespace}/{svc}"
    # Another controller manager holds the Lease (and keeps holding it: nobody renews it here,
    # but a dry run must not even look at it).
    lease_name = unique_name("lease")
    lease_ns = wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    now = datetime.datetime.now(datetime.UTC)
    lease = coordination.create_namespaced_lease(
        lease_ns,
        {
            "metadata": {"name": lease_name},
            "spec": {
                "holderIdentity": "the-other-ccm",
                "leaseDurationSeconds": 3600,
                "acquireTime": now,
                "renewTime": now,
            },
        },
    )
    before = {n: nodes.get(n).metadata.resource_version for n in node_names}
    svc_rv = core.read_namespaced_service(svc, kube_namespace).metadata.resource_version
    audit_offset = control_plane.audit_log_path.stat().st_size

    dry = daemon_factory(
        cloud,
        "--controllers=cloud-node,service,cloud-node-lifecycle",
        "--logging-format=json",
        "--dry-run",
        lease_name=lease_name,
        name="ccm-dry",
    )

    def planned() -> list[dict[str, Any]] | None:
        lines = _would(dry)
        patched = {r["target"] for r in lines if r["verb"] == "patch"}
        ensured = {r["target"] for r in lines if r["verb"] == "ensure_load_balancer"}
        if {f"nodes/{n}" for n in node_names} <= patched and svc_key in ensured:
            return lines
        return None

    lines = _wait(planned, "the dry run's would-be Node patches and load balancer")
    status, body = dry.get("/metrics", token=metrics_token)
    assert status == 200
    counted = [
        line
        for line in body.splitlines()
        if line.startswith("ccm_dry_run_writes_total{")
        and f'controller="{names.SERVICE_LB_CONTROLLER}"' in line
        and 'verb="ensure_load_balancer"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1
    dry.stop()

    # Nothing reached the apiserver or the cloud.
    sent = _ccm_writes(control_plane, audit_offset)
    assert sent == [], [(e["verb"], e["requestURI"], e["userAgent"]) for e in sent]
    assert {n: nodes.get(n).metadata.resource_version for n in node_names} == before
    assert all(is_tainted(nodes.get(n)) for n in node_names)
    assert core.read_namespaced_service(svc, kube_namespace).metadata.resource_version == svc_rv
    held = coordination.read_namespaced_lease(lease_name, lease_ns)
    assert held.metadata.resource_version == lease.metadata.resource_version
    status_file = cloud.status()
    assert status_file is None or status_file.load_balancer_for(svc_key) is None
    assert "Leader election is off" in dry.log()
    coordination.delete_namespaced_lease(lease_name, lease_ns)

    # A normal run then makes the writes the dry run announced.
    dry_patched = {
        r["target"].removeprefix("nodes/")
        for r in lines
        if r["verb"] == "patch" and r["controller"] == names.CLOUD_NODE_CONTROLLER
    }
    dry_ensured = {r["target"] for r in lines if r["verb"] == "ensure_load_balancer"}
    normal = daemon_factory(cloud, "--controllers=cloud-node,service,cloud-node-lifecycle")
    for name in node_names:
        nodes.wait(name, lambda n: not is_tainted(n), what="initialized")

    def ensured() -> set[str]:
        status = cloud.status()
        if status is None:
            return set()
        return {k for k in (svc_key,) if status.load_balancer_for(k) is not None}

    _wait(ensured, "the load balancer")
    normal.stop()
    assert dry_patched & set(node_names) == set(node_names)
    assert dry_ensured == ensured()
    normal_writes = _ccm_writes(control_plane, audit_offset)
    patched_nodes = {
        e["objectRef"]["name"]
        for e in normal_writes
        if e["verb"] == "patch" and e["objectRef"].get("resource") == "nodes"
    }
    assert patched_nodes & set(node_names) == dry_patched & set(node_names)
