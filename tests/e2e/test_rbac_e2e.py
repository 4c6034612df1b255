"""Least privilege, proven: the daemon runs as the manifests' ServiceAccount under exactly the
shipped RBAC, every loop is exercised, and the apiserver's audit log shows no forbidden request
and a use of every shipped rule.

Phase 1 runs without ``--use-service-account-credentials`` so the ClusterRole's controller rules
are used by the daemon's own identity; phase 2 runs as shipped (per-controller ServiceAccounts with
the bootstrapped ``system:controller:*`` roles) and uses the Role's ServiceAccount rules.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import wellknown
from ccm.testing import assets
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from devtools import helm, manifests

from .conftest import FakeCloudFiles, Nodes, is_tainted

CCM_USER = "system:serviceaccount:kube-system:cloud-controller-manager"
CONTROLLER_USERS = {
    f"system:serviceaccount:kube-system:{n}"
    for n in ("node-controller", "service-controller", "route-controller")
}
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# Flags of the shipped DaemonSet that this test replaces with local equivalents.
REPLACED = (
    "--cloud-config=",
    "--bind-address=",
    "--secure-port=",
    "--configure-cloud-routes=",
    "--use-service-account-credentials",
)


@pytest.fixture(scope="module", params=["kustomize", "helm"])
def shipped(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The fake overlay of the kustomize base, or the Helm chart's default rendering."""
    if request.param == "helm":
        return helm.render()
    assets.find_kustomize()
    return manifests.render("fake")


@pytest.fixture
def applied_rbac(k8s_admin: Any, shipped: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Apply (for real) the shipped ServiceAccount, roles and bindings; remove them afterwards."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import NotFoundError

    dynamic = DynamicClient(k8s_admin)
    # A Lease left by an earlier run (the other rendering) would spare the daemon its `create`.
    leases = dynamic.resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
    with contextlib.suppress(NotFoundError):
        leases.delete(
            name=wellknown.DEFAULT_LEADER_ELECTION_NAME,
            namespace=wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE,
        )
    objects = [o for o in shipped if o["kind"] in RBAC_KINDS]
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dynamic.server_side_apply(
            resource,
            body=obj,
            namespace=obj["metadata"].get("namespace"),
            field_manager="ccm-rbac-e2e",
            force_conflicts=True,
        )
    try:
        yield objects
    finally:
        for obj in objects:
            if obj["kind"] == "ServiceAccount":
                continue  # tokens minted for it may still be in use by a stopping daemon
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            resource.delete(
                name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace")
            )


def _kubeconfig(cp: ControlPlane, token: str, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "ccm",
                "clusters": [
                    {
                        "name": "e2e",
                        "cluster": {
                            "server": cp.url,
                            "certificate-authority": str(cp.ca_cert_path),
                        },
                    }
                ],
                "users": [{"name": "ccm", "user": {"token": token}}],
                "contexts": [{"name": "ccm", "context": {"cluster": "e2e", "user": "ccm"}}],
            }
        )
    )
    return path


def _audit(cp: ControlPlane) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cp.audit_log_path.read_text().splitlines() if line]


def _lease_verbs(cp: ControlPlane) -> set[str]:
    """Verbs the daemon's own identity has used on Leases so far (audit log)."""
    return {
        e["verb"]
        for e in _audit(cp)
        if e["user"]["username"] == CCM_USER
        and (e.get("objectRef") or {}).get("resource") == "leases"
    }


def _key(event: dict[str, Any]) -> tuple[str, str, str]:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return ref.get("apiGroup", ""), resource, event["verb"]


def _rules(objects: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(kind, apiGroup, resource, verb, resourceNames) for every rule of the shipped roles."""
    out = []
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in obj["rules"]:
            for group in rule.get("apiGroups", [""]):
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.append(
                            (
                                obj["kind"],
                                group,
                                resource,
                                verb,
                                ",".join(rule.get("resourceNames", [])),
                            )
                        )
    return out


def _daemon(
    cp: ControlPlane,
    shipped: list[dict[str, Any]],
    kubeconfig: Path,
    cloud: FakeCloudFiles,
    tmp_path: Path,
    *extra: str,
    name: str,
) -> Daemon:
    base = [a for a in manifests.container_args(shipped) if not a.startswith(REPLACED)]
    assert "--cloud-provider=fake" in base
    return Daemon(
        [
            *base,
            f"--kubeconfig={kubeconfig}",
            f"--cloud-config={cloud.config}",
            "--configure-cloud-routes=true",
            "--cluster-cidr=10.244.0.0/16",
            "--node-monitor-period=1s",
            "--route-reconciliation-period=1s",
            "-v",
            "2",
            *extra,
        ],
        log_dir=tmp_path,
        name=name,
    )


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_runs_every_loop_under_the_shipped_rbac_with_no_forbidden_request(
    control_plane: ControlPlane,
    k8s_admin: Any,
    nodes: Nodes,
    kube_namespace: str,
    unique_name: Callable[..., str],
    fake_cloud_files: Callable[..., FakeCloudFiles],
    shipped: list[dict[str, Any]],
    applied_rbac: list[dict[str, Any]],
    metrics_token: str,
    tmp_path: Path,
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    token = control_plane.service_account_token("kube-system", "cloud-controller-manager")
    kubeconfig = _kubeconfig(control_plane, token, tmp_path / "ccm.kubeconfig")
    started = time.time()

    running, gone, stopped = unique_name("running"), unique_name("gone"), unique_name("stopped")
    cloud = fake_cloud_files()
    cloud.state.add_instance(
        running,
        zone="z1",
        region="r1",
        instance_type="t1",
        addresses=[{"type": "InternalIP", "address": "10.0.0.5"}],
    )
    cloud.state.add_instance(stopped, zone="z1", region="r1", shutdown=True)
    # A slow metadata call leaves time for a concurrent write: the initialization patch then
    # conflicts and the controller re-reads the Node (nodes get).
    cloud.state.set_latency("instance-metadata", 1.5)
    cloud.state.inject_error("create-route", "cloud", key=running, message="route API down")
    cloud.write_state()

    # ---- phase 1: the daemon's own identity does everything -----------------------------------
    d1 = _daemon(control_plane, shipped, kubeconfig, cloud, tmp_path, name="phase1")
    d1.start()
    nodes.create(running)
    core.patch_node(running, {"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}})
    time.sleep(0.5)
    core.patch_node(running, {"metadata": {"labels": {"example.com/touched": "yes"}}})
    nodes.create(gone, ready=False)
    nodes.create(stopped, ready=False)

    _wait("initialization", lambda: not is_tainted(nodes.get(running)))
    _wait(
        "deletion of the node whose instance is gone",
        lambda: gone not in {n.metadata.name for n in core.list_node().items},
    )
    nodes.created.remove(gone)
    _wait(
        "shutdown taint",
        lambda: any(
            t.key == wellknown.TAINT_SHUTDOWN for t in nodes.get(stopped).spec.taints or []
        ),
    )
    # Repeated FailedToCreateRoute events are aggregated (events patch); then routes recover.
    _wait(
        "an aggregated event",
        lambda: any(
            (e.count or 0) > 1
            for e in core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={running}"
            ).items
            if e.reason == wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE
        ),
    )
    cloud.state.clear_errors()
    cloud.write_state()

    def network_available() -> bool:
        conds = nodes.get(running).status.conditions or []
        return any(c.type == "NetworkUnavailable" and c.status == "False" for c in conds)

    _wait("route", network_available)

    svc = unique_name("svc")
    core.create_namespaced_service(
        kube_namespace,
        {
            "metadata": {"name": svc},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    _wait(
        "ingress",
        lambda: bool(
            core.read_namespaced_service(svc, kube_namespace).status.load_balancer.ingress
        ),
    )
    core.delete_namespaced_service(svc, kube_namespace)

    def service_gone() -> bool:
        return svc not in {
            s.metadata.name for s in core.list_namespaced_service(kube_namespace).items
        }

    _wait("service cleanup", service_gone)
    assert d1.get("/metrics", token=metrics_token)[0] == 200

    # ---- phase 2: as shipped, each controller with its own ServiceAccount ----------------------
    # The second daemon starts as a standby (it watches the Lease) and takes over when the first
    # one stops.
    fresh = unique_name("fresh")
    from kubernetes.client.rest import ApiException

    try:  # so the daemon has to create it (serviceaccounts create), whatever ran before
        core.delete_namespaced_service_account("route-controller", "kube-system")
    except ApiException as exc:
        if exc.status != 404:
            raise
    d2 = _daemon(
        control_plane,
        shipped,
        kubeconfig,
        cloud,
        tmp_path,
        "--use-service-account-credentials",
        name="phase2",
    )
    d2.start()
    _wait("the standby's watch of the Lease", lambda: "watch" in _lease_verbs(control_plane))
    assert d1.stop() == 0
    nodes.create(fresh)
    cloud.state.add_instance(fresh, zone="z2", region="r1")
    cloud.write_state()
    _wait("initialization as node-controller", lambda: not is_tainted(nodes.get(fresh)))
    assert d2.stop() == 0

    # ---- the audit log -------------------------------------------------------------------------
    time.sleep(1)  # let the last audit lines land
    events = [
        e
        for e in _audit(control_plane)
        if e["user"]["username"] in CONTROLLER_USERS | {CCM_USER} and _ts(e) >= started - 1
    ]
    forbidden = [
        (e["user"]["username"], e["verb"], e["requestURI"])
        for e in events
        if (e.get("responseStatus") or {}).get("code") == 403
    ]
    assert forbidden == [], f"forbidden requests: {forbidden}"

    used = {
        _key(e)
        for e in events
        if e["user"]["username"] == CCM_USER
        and (e.get("responseStatus") or {}).get("code") not in (401, 403)
    }
    unused = [r for r in _rules(applied_rbac) if (r[1], r[2], r[3]) not in used]
    assert unused == [], f"shipped rules never used: {unused}"
    writers = {
        e["user"]["username"]
        for e in events
        if _key(e) == ("", "nodes", "patch") and e["objectRef"].get("name") == fresh
    }
    assert writers == {"system:serviceaccount:kube-system:node-controller"}
    for d in (d1, d2):
        assert "Traceback" not in d.log()


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    stamp = event.get("requestReceivedTimestamp", "")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0
