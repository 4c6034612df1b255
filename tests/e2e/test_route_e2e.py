"""End to end: the route controller of the real ``ccm`` daemon with the fake provider, on the real
kube-apiserver. Pod CIDRs are set on Nodes with the official client (nothing allocates them here);
the cloud's route table is observed through the fake's status file.

Every daemon of the e2e suite sees every Node: the Nodes here are uniquely named, get pod CIDRs
from ranges no other test uses, and are deleted at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes

pytestmark = pytest.mark.e2e

CLUSTER = "kubernetes"  # --cluster-name default
FAST = "--route-reconciliation-period=1s"


def _set_pod_cidrs(k8s_admin: Any, name: str, cidrs: list[str]) -> None:
    from kubernetes import client

    client.CoreV1Api(k8s_admin).patch_node(name, {"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}})


def _routes(cloud: FakeCloudFiles) -> dict[str, tuple[str, bool]]:
    """destination CIDR → (target node, blackhole) in the fake's route table."""
    status = cloud.status()
    if status is None:
        return {}
    return {
        r.destination_cidr: (r.target_node, r.blackhole) for r in status.routes.get(CLUSTER, [])
    }


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout}s")


def _network(node: Any) -> tuple[str, str, str] | None:
    for c in node.status.conditions or []:
        if c.type == wellknown.CONDITION_NETWORK_UNAVAILABLE:
            return (c.status, c.reason, c.message)
    return None


CREATED = (
    "False",
    wellknown.ROUTE_CONDITION_REASON_CREATED,
    wellknown.ROUTE_CONDITION_MESSAGE_CREATED,
)
NOT_CREATED = (
    "True",
    wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
    wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
)


def _events(k8s_admin: Any, node: str, reason: str) -> list[Any]:
    from kubernetes import client

    items = (
        client.CoreV1Api(k8s_admin)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={node}")
        .items
    )
    return [e for e in items if e.reason == reason]


def test_nodes_get_routes_dual_stack_stale_routes_go_foreign_routes_stay(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
    metrics_token: str,
) -> None:
    cloud = fake_cloud_files()
    # A route of someone else (outside --cluster-cidr), even blackholed, must never be touched.
    cloud.state.add_route("elsewhere", "172.16.5.0/24", name="foreign-1")
    cloud.state.add_route("gone-node", "172.16.6.0/24", name="foreign-2", blackhole=True)
    # A stale route inside the cluster CIDR, for a Node that does not exist: deleted.
    cloud.state.add_route("gone-node", "10.244.203.0/24", name="stale-1")
    cloud.write_state()
    v4, dual = unique_name("node"), unique_name("node")
    nodes.create(v4, internal_ip="10.0.201.1")
    nodes.create(dual, internal_ip="10.0.202.1")
    _set_pod_cidrs(k8s_admin, v4, ["10.244.201.0/24"])
    _set_pod_cidrs(k8s_admin, dual, ["10.244.202.0/24", "fd00:10:244:202::/64"])

    daemon = daemon_factory(cloud, FAST, "--cluster-cidr=10.244.0.0/16,fd00:10:244::/48")

    want = {
        "10.244.201.0/24": (v4, False),
        "10.244.202.0/24": (dual, False),
        "fd00:10:244:202::/64": (dual, False),
        "172.16.5.0/24": ("elsewhere", False),
        "172.16.6.0/24": ("gone-node", True),
    }
    _wait(lambda: _routes(cloud) == want, f"routes {want} (have {_routes(cloud)})")
    for name in (v4, dual):
        nodes.wait(name, lambda n: _network(n) == CREATED, what="NetworkUnavailable=False")
    status = cloud.status()
    assert status is not None
    by_cidr = {r.destination_cidr: r for r in status.routes[CLUSTER]}
    assert next((a.type, a.address) for a in by_cidr["10.244.201.0/24"].target_node_addresses) == (
        "InternalIP",
        "10.0.201.1",
    )
    uid = nodes.get(v4).metadata.uid
    assert uid in by_cidr["10.244.201.0/24"].name  # the fake names routes after the name hint

    # A deleted Node's routes go; the others and the foreign ones stay.
    from kubernetes import client

    client.CoreV1Api(k8s_admin).delete_node(dual)
    for cidr in ("10.244.202.0/24", "fd00:10:244:202::/64"):
        del want[cidr]
    _wait(lambda: _routes(cloud) == want, f"routes {want} (have {_routes(cloud)})")

    code, body = daemon.get("/metrics", token=metrics_token)
    assert code == 200
    line = next(
        ln for ln in body.splitlines() if ln.startswith("route_controller_route_sync_total")
    )
    assert float(line.split()[-1]) >= 2
    assert (
        'running_managed_controllers{manager="cloud-controller-manager",name="route"} 1.0' in body
    )


def test_failing_create_route_warns_sets_no_route_created_then_recovers(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    cloud = fake_cloud_files()
    bad, good = unique_name("node"), unique_name("node")
    cloud.state.inject_error("create-route", "cloud", key=bad, message="route quota exceeded")
    cloud.write_state()
    nodes.create(bad, internal_ip="10.0.211.1")
    nodes.create(good, internal_ip="10.0.212.1")
    _set_pod_cidrs(k8s_admin, bad, ["10.244.211.0/24"])
    _set_pod_cidrs(k8s_admin, good, ["10.244.212.0/24"])
    daemon_factory(cloud, FAST)

    nodes.wait(good, lambda n: _network(n) == CREATED, what="good node RouteCreated")
    nodes.wait(bad, lambda n: _network(n) == NOT_CREATED, what="bad node NoRouteCreated")
    _wait(
        lambda: bool(_events(k8s_admin, bad, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE)),
        "FailedToCreateRoute event",
    )
    (event,) = _events(k8s_admin, bad, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE)
    assert event.type == "Warning"
    assert event.source.component == "route_controller"
    assert event.message.startswith("Could not create route ")
    assert "10.244.211.0/24" in event.message
    assert "route quota exceeded" in event.message
    assert "10.244.211.0/24" not in _routes(cloud)

    cloud.state.clear_errors()
    cloud.write_state()
    _wait(lambda: "10.244.211.0/24" in _routes(cloud), "route created after recovery")
    nodes.wait(bad, lambda n: _network(n) == CREATED, what="bad node recovered")


def test_conflicting_pod_cidr_is_reported_and_the_rest_converges(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """Bad input the real apiserver accepts: two Nodes claiming the same pod CIDR.

    (A syntactically malformed pod CIDR cannot reach a Node here: the apiserver rejects host bits,
    leading zeros and garbage in ``spec.podCIDRs`` with 422. ccm's own check of that case, never
    sending such a CIDR to the cloud, is covered by the unit tests.)
    """
    cloud = fake_cloud_files()
    twin_a, twin_b, good = unique_name("node"), unique_name("node"), unique_name("node")
    for i, name in enumerate((twin_a, twin_b, good)):
        nodes.create(name, internal_ip=f"10.0.22{i}.1")
    _set_pod_cidrs(k8s_admin, twin_a, ["10.244.221.0/24"])
    _set_pod_cidrs(k8s_admin, twin_b, ["10.244.221.0/24"])
    _set_pod_cidrs(k8s_admin, good, ["10.244.222.0/24"])
    daemon = daemon_factory(cloud, FAST)

    nodes.wait(good, lambda n: _network(n) == CREATED, what="good node RouteCreated")
    _wait(lambda: "10.244.221.0/24" in _routes(cloud), "one twin got the route")
    winner = _routes(cloud)["10.244.221.0/24"][0]
    loser = twin_b if winner == twin_a else twin_a
    assert winner in (twin_a, twin_b)
    nodes.wait(winner, lambda n: _network(n) == CREATED, what="winner RouteCreated")
    nodes.wait(loser, lambda n: _network(n) == NOT_CREATED, what="loser NoRouteCreated")
    _wait(
        lambda: bool(_events(k8s_admin, loser, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE)),
        "FailedToCreateRoute event",
    )
    (event,) = _events(k8s_admin, loser, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE)
    assert event.type == "Warning"
    assert "10.244.221.0/24" in event.message and winner in event.message
    line = daemon.wait_for_log(f"Could not create route {nodes.get(loser).metadata.uid}")
    assert f"for node {loser}" in line and "already exists" in line
    # Steady state: the winner's route is kept, the loser keeps failing without churn.
    time.sleep(2.5)
    assert _routes(cloud) == {"10.244.221.0/24": (winner, False), "10.244.222.0/24": (good, False)}
    status = cloud.status()
    assert status is not None
    assert status.calls.get("delete-route", 0) == 0


def test_pod_cidrs_outside_the_cluster_cidr_get_no_route_and_the_rest_converges(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    """A Node with 10.99.0.0/24 in the 10.244.0.0/16 cluster, and one with an IPv6 pod CIDR in
    this IPv4-only cluster: no route is created for those CIDRs (it could never be deleted again),
    each Node gets a Warning and NetworkUnavailable=True, the other Nodes converge."""
    cloud = fake_cloud_files()
    stray, dual, good = unique_name("node"), unique_name("node"), unique_name("node")
    for i, name in enumerate((stray, dual, good)):
        nodes.create(name, internal_ip=f"10.0.23{i}.1")
    _set_pod_cidrs(k8s_admin, stray, ["10.99.0.0/24"])
    _set_pod_cidrs(k8s_admin, dual, ["10.244.231.0/24", "fd00:231::/64"])
    _set_pod_cidrs(k8s_admin, good, ["10.244.232.0/24"])
    daemon = daemon_factory(cloud, FAST)

    nodes.wait(good, lambda n: _network(n) == CREATED, what="good node RouteCreated")
    _wait(lambda: "10.244.231.0/24" in _routes(cloud), "the in-cluster CIDR of the dual node")
    for name, cidr in ((stray, "10.99.0.0/24"), (dual, "fd00:231::/64")):
        nodes.wait(name, lambda n: _network(n) == NOT_CREATED, what=f"{name} NoRouteCreated")
        _wait(
            lambda name=name: bool(
                _events(k8s_admin, name, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE)
            ),
            f"FailedToCreateRoute event on {name}",
        )
        (event,) = _events(k8s_admin, name, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE)
        assert event.type == "Warning"
        assert cidr in event.message and "outside the cluster CIDRs 10.244.0.0/16" in event.message
        daemon.wait_for_log(f"Node {name} has an invalid pod CIDR '{cidr}'")

    # Later passes never create them either.
    status = cloud.status()
    assert status is not None
    passes = status.calls.get("list-routes", 0)
    _wait(
        lambda: (cloud.status() or status).calls.get("list-routes", 0) >= passes + 3,
        "three more passes",
    )
    routes = _routes(cloud)
    assert "10.99.0.0/24" not in routes and "fd00:231::/64" not in routes
    assert routes["10.244.231.0/24"] == (dual, False)
    assert routes["10.244.232.0/24"] == (good, False)


@pytest.mark.parametrize(
    "flag",
    [
        pytest.param("--cluster-cidr=", id="empty"),
        pytest.param("--cluster-cidr=banana", id="unparsable"),
        pytest.param("--cluster-cidr=10.0.0.0/16,10.1.0.0/16", id="two of one family"),
    ],
)
def test_routes_with_a_bad_cluster_cidr_refuse_to_start(
    flag: str, control_plane: ControlPlane
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccm",
            "--cloud-provider=fake",
            f"--kubeconfig={control_plane.kubeconfig_path}",
            "--secure-port=0",
            flag,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ccm: error: ")]
    assert len(errors) == 1, result.stderr
    assert "--cluster-cidr" in errors[0]


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        pytest.param(
            {"capabilities": {"routes": False}},
            (),
            'Skipping "node-route-controller": --configure-cloud-routes is set, but cloud '
            "provider does not support routes. Will not configure cloud provider routes.",
            id="provider without Routes",
        ),
        pytest.param(
            {},
            ("--configure-cloud-routes=false", "--cluster-cidr="),
            'Skipping "node-route-controller": Will not configure cloud provider routes, '
            "--configure-cloud-routes: false",
            id="--configure-cloud-routes=false",
        ),
    ],
)
def test_route_controller_is_skipped_with_a_log_line(
    config: dict[str, Any],
    args: tuple[str, ...],
    expected: str,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    daemon = daemon_factory(fake_cloud_files(**config), *args)
    daemon.wait_for_log(expected)
    assert 'Started "node-route-controller"' not in daemon.log()


def test_watch_based_mode_reconciles_on_node_changes(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    cloud = fake_cloud_files()
    daemon = daemon_factory(
        cloud,
        "--feature-gates=CloudControllerManagerWatchBasedRoutesReconciliation=true",
        "--route-reconciliation-period=1h",  # unused in this mode
    )
    daemon.wait_for_log("Reconciling routes on Node changes")
    name = unique_name("node")
    nodes.create(name, internal_ip="10.0.231.1")
    _set_pod_cidrs(k8s_admin, name, ["10.244.231.0/24"])
    _wait(lambda: "10.244.231.0/24" in _routes(cloud), "route created on the Node event", 40)
    nodes.wait(name, lambda n: _network(n) == CREATED, what="RouteCreated")

    from kubernetes import client

    client.CoreV1Api(k8s_admin).delete_node(name)
    _wait(lambda: "10.244.231.0/24" not in _routes(cloud), "route deleted on the Node delete", 40)
