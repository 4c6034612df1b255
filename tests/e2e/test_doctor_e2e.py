"""End to end: ``ccm doctor`` (the real command, as a subprocess) against a deliberately broken
cluster and against a healthy one where the real daemon with the fake provider initializes the
Nodes and provisions the load balancer, on the session's real kube-apiserver.

Each test scopes the doctor to its own objects: Nodes by a unique label (``--node-selector``),
Services and ccm Pods by a unique namespace, its own Lease name, and a unique ServiceAccount for the
RBAC check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane

from .conftest import FakeCloudFiles, Nodes

pytestmark = pytest.mark.e2e

RBAC_YAML = Path(__file__).parents[2] / "manifests" / "base" / "rbac.yaml"
CCM_LABEL = "ccm-doctor-e2e"


def doctor(cp: ControlPlane, *args: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Run ``ccm doctor -o json``; returns (exit code, verdict by check, finding by check)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccm",
            "doctor",
            f"--kubeconfig={cp.kubeconfig_path}",
            "-o",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1, 2), proc.stderr
    doc = json.loads(proc.stdout)
    by_check = {c["check"]: c for c in doc["checks"]}
    return proc.returncode, {k: v["verdict"] for k, v in by_check.items()}, by_check


@pytest.fixture
def namespace(kube_namespace: str) -> str:
    """The test's namespace, purged afterwards with everything in it (its Services too, so the
    daemons of later tests on the shared control plane never see them)."""
    return kube_namespace


def _register(nodes: Nodes, name: str, label: str, **body: Any) -> None:
    """A Node as a kubelet registers it, carrying the test's label, then changed by ``body``."""
    nodes.create(name)
    patch: dict[str, Any] = {"metadata": {"labels": {CCM_LABEL: label}}, **body}
    nodes.core.patch_node(name, patch)


def _ccm_pod(k8s_admin: Any, ns: str, label: str, *, restarts: int, waiting: str) -> None:
    """A ccm Pod whose status says what a kubelet would report (no kubelet runs here)."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "ccm", "labels": {"app": label}},
            "spec": {"containers": [{"name": "ccm", "image": "ccm:test"}]},
        },
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": started}}
    status = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "ccm",
                "image": "ccm:test",
                "imageID": "",
                "ready": not waiting,
                "restartCount": restarts,
                "state": state,
            }
        ],
    }
    core.patch_namespaced_pod_status("ccm", ns, {"status": status})


def _lb_service(k8s_admin: Any, ns: str, name: str, **meta: Any) -> None:
    from kubernetes import client

    client.CoreV1Api(k8s_admin).create_namespaced_service(
        ns,
        {
            "metadata": {"name": name, **meta},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )


def _scope(ns: str, label: str, lease: str, user: str) -> list[str]:
    return [
        f"--node-selector={CCM_LABEL}={label}",
        f"--namespace={ns}",
        f"--leader-elect-resource-name={lease}",
        f"--ccm-namespace={ns}",
        f"--ccm-pod-selector=app={label}",
        f"--as={user}",
    ]


def test_doctor_names_every_fault_of_a_broken_cluster(
    control_plane: ControlPlane,
    k8s_admin: Any,
    nodes: Nodes,
    namespace: str,
    unique_name: Callable[..., str],
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    label = unique_name("broken")
    tainted, plain, bare, noroute = (
        unique_name(p) for p in ("tainted", "plain", "bare", "noroute")
    )
    _register(nodes, tainted, label)  # waits for a ccm that never comes
    # A kubelet without --cloud-provider=external: no taint, and no ccm ever set a providerID.
    _register(nodes, plain, label, spec={"taints": None})
    _register(nodes, bare, label, spec={"taints": None, "providerID": f"fake://{bare}"})
    _register(nodes, noroute, label, spec={"taints": None, "providerID": f"fake://{noroute}"})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_node_status(
        noroute,
        {
            "status": {
                "conditions": [
                    {
                        "type": wellknown.CONDITION_NETWORK_UNAVAILABLE,
                        "status": "True",
                        "reason": wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
                        "message": wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
                        "lastTransitionTime": now,
                        "lastHeartbeatTime": now,
                    }
                ]
            }
        },
    )
    _ccm_pod(k8s_admin, namespace, label, restarts=4, waiting="CrashLoopBackOff")
    _lb_service(k8s_admin, namespace, "pending")
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"name": "pending.1"},
            "involvedObject": {"kind": "Service", "name": "pending", "namespace": namespace},
            "type": wellknown.EVENT_WARNING,
            "reason": wellknown.EVENT_REASON_SYNC_LB_FAILED,
            "message": "quota exceeded",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "service-controller"},
        },
    )
    finalizers = [wellknown.FINALIZER_LOAD_BALANCER_CLEANUP]
    _lb_service(k8s_admin, namespace, "deleting", finalizers=finalizers)
    core.delete_namespaced_service("deleting", namespace)

    nobody = f"system:serviceaccount:{namespace}:nobody"
    code, verdicts, found = doctor(
        control_plane, *_scope(namespace, label, unique_name("lease"), nobody), "--grace=0s"
    )

    assert code == 2
    assert verdicts == {
        "leader": "fail",
        "ccm-pods": "fail",
        "taint-without-ccm": "fail",
        "uninitialized-taint": "fail",
        "kubelet-external": "fail",
        "node-cloud-data": "warn",
        "routes": "fail",
        "lb-pending": "fail",
        "lb-finalizer": "fail",
        "rbac": "fail",
    }
    assert found["uninitialized-taint"]["objects"][0].startswith(f"{tainted} (tainted since ")
    assert found["taint-without-ccm"]["objects"] == [tainted]
    assert found["kubelet-external"]["objects"] == [f"{plain} (no taint, no providerID)"]
    assert sorted(found["node-cloud-data"]["objects"]) == sorted(
        [f"{bare} (no zone or region)", f"{noroute} (no zone or region)"]
    )
    assert found["routes"]["objects"][0].startswith(f"{noroute} (NoRouteCreated, since ")
    assert found["ccm-pods"]["objects"] == ["ccm (CrashLoopBackOff, 4 restart(s))"]
    (pending,) = found["lb-pending"]["objects"]
    assert pending.startswith(f"{namespace}/pending (pending ")
    assert "SyncLoadBalancerFailed: quota exceeded" in pending
    (deleting,) = found["lb-finalizer"]["objects"]
    assert deleting.startswith(f"{namespace}/deleting (deleting for ")
    assert found["rbac"]["count"] > 10 and "list nodes" in found["rbac"]["objects"]
    for check in found.values():
        assert check["fix"], check


@pytest.fixture
def rbac_user(k8s_admin: Any, namespace: str, unique_name: Callable[..., str]) -> Iterator[Any]:
    """Bind a new ServiceAccount to copies of the shipped ClusterRole and Role; yields a function
    taking the Lease name (the Role's resourceNames follow it, as the manifest says to)."""
    from kubernetes import client

    rbac_api = client.RbacAuthorizationV1Api(k8s_admin)
    docs = {d["kind"]: d for d in yaml.safe_load_all(RBAC_YAML.read_text())}
    name = unique_name("doctor-rbac")
    user = f"system:serviceaccount:{namespace}:ccm"
    subject = [{"kind": "ServiceAccount", "name": "ccm", "namespace": namespace}]
    made: list[tuple[str, str | None]] = []

    def grant(lease: str) -> str:
        cluster_role = {**docs["ClusterRole"], "metadata": {"name": name}}
        rbac_api.create_cluster_role(cluster_role)
        made.append(("ClusterRole", None))
        role = json.loads(json.dumps(docs["Role"]))
        role["metadata"] = {"name": name, "namespace": "kube-system"}
        for rule in role["rules"]:
            if rule.get("resourceNames") == [wellknown.DEFAULT_LEADER_ELECTION_NAME]:
                rule["resourceNames"] = [lease]
        rbac_api.create_namespaced_role("kube-system", role)
        made.append(("Role", "kube-system"))
        ref = {"apiGroup": "rbac.authorization.k8s.io", "name": name}
        rbac_api.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {**ref, "kind": "ClusterRole"},
                "subjects": subject,
            }
        )
        made.append(("ClusterRoleBinding", None))
        rbac_api.create_namespaced_role_binding(
            "kube-system",
            {"metadata": {"name": name}, "roleRef": {**ref, "kind": "Role"}, "subjects": subject},
        )
        made.append(("RoleBinding", "kube-system"))
        return user

    try:
        yield grant
    finally:
        for kind, ns in reversed(made):
            if kind == "ClusterRole":
                rbac_api.delete_cluster_role(name)
            elif kind == "Role":
                rbac_api.delete_namespaced_role(name, ns)
            elif kind == "ClusterRoleBinding":
                rbac_api.delete_cluster_role_binding(name)
            else:
                rbac_api.delete_namespaced_role_binding(name, ns)


def test_doctor_is_all_ok_when_a_ccm_initialized_the_cluster(
    control_plane: ControlPlane,
    k8s_admin: Any,
    nodes: Nodes,
    namespace: str,
    rbac_user: Callable[[str], str],
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Any],
    unique_name: Callable[..., str],
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    label = unique_name("healthy")
    lease = unique_name("lease")
    cloud = fake_cloud_files(defaultInstance={"zones": ["zone-a"], "region": "region-1"})
    daemon_factory(cloud, lease_name=lease)
    names = [unique_name("node") for _ in range(2)]
    for i, name in enumerate(names):
        # Pod CIDRs from ranges no other e2e test uses, so the route controller manages them.
        cidr = f"10.244.{241 + i}.0/24"
        _register(nodes, name, label, spec={"podCIDR": cidr, "podCIDRs": [cidr]})
    _ccm_pod(k8s_admin, namespace, label, restarts=0, waiting="")
    _lb_service(k8s_admin, namespace, "web")
    user = rbac_user(lease)
    scope = _scope(namespace, label, lease, user)

    routed = "2 Node(s) with routes, none NetworkUnavailable"
    deadline = time.monotonic() + 60
    while True:
        code, verdicts, found = doctor(control_plane, *scope)
        if (code == 0 and found["routes"]["summary"] == routed) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert code == 0, found
    assert set(verdicts.values()) == {"ok"}
    assert len(verdicts) == 10
    assert "held by" in found["leader"]["summary"]
    assert found["routes"]["summary"] == routed
    assert found["uninitialized-taint"]["summary"].startswith("2 Node(s), none tainted")
    svc = core.read_namespaced_service("web", namespace)
    assert svc.status.load_balancer.ingress
