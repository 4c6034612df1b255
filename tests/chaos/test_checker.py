"""The chaos invariant checker on hand-made audit logs, cloud status documents and objects."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from ccm import wellknown
from ccm.testing.fake_cloud import FakeCloudStatus
from chaos import checker

LEASE = ("kube-system", "cloud-controller-manager")
USERS = ("ccm-replica-0", "ccm-replica-1")
T0 = 1_800_000_000.0


def stamp(offset: float) -> str:
    moment = datetime.datetime.fromtimestamp(T0 + offset, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(
    offset: float,
    user: str,
    verb: str,
    resource: str,
    name: str,
    *,
    code: int = 200,
    namespace: str = "",
    subresource: str = "",
    took: float = 0.01,
) -> dict[str, Any]:
    ref = {"resource": resource, "name": name, "namespace": namespace}
    if subresource:
        ref["subresource"] = subresource
    return {
        "requestReceivedTimestamp": stamp(offset),
        "stageTimestamp": stamp(offset + took),
        "user": {"username": user},
        "verb": verb,
        "objectRef": ref,
        "responseStatus": {"code": code},
    }


def lease_write(offset: float, user: str, code: int = 200) -> dict[str, Any]:
    return audit(offset, user, "update", "leases", LEASE[1], namespace=LEASE[0], code=code)


def write_log(tmp_path: Path, docs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "audit.log"
    lines = [json.dumps(d) for d in docs]
    path.write_text("\n".join(lines) + '\n{"torn": ')  # a SIGKILLed apiserver's last line
    return path


def test_a_write_by_the_deposed_leader_after_the_take_over_is_found(tmp_path: Path) -> None:
    docs = [
        lease_write(0, "ccm-replica-0"),
        audit(1, "ccm-replica-0", "patch", "nodes", "node-1"),  # the leader: fine
        lease_write(2, "ccm-replica-0"),  # renewal
        lease_write(3, "ccm-replica-1", code=409),  # the standby's failed attempt
        audit(5, "ccm-replica-1", "get", "nodes", "node-1"),  # a read: fine
        lease_write(10, "ccm-replica-1"),  # take-over
        audit(11, "ccm-replica-0", "patch", "nodes", "node-2", subresource="status"),  # wrong
        audit(12, "ccm-replica-0", "update", "services", "web", namespace="default", code=409),
        audit(12.5, "ccm-replica-0", "create", "events", "e1", namespace="default", code=201),
        audit(12.6, "ccm-replica-1", "create", "events", "e2", namespace="default", code=201),
        lease_write(13, "ccm-replica-0", code=409),  # its renewal fails
        audit(14, "ccm-replica-1", "delete", "nodes", "node-3"),
        audit(15, "admin", "delete", "nodes", "node-4"),  # not a replica
    ]
    events = checker.read_audit_log(write_log(tmp_path, docs), USERS)
    assert all(e.user in USERS for e in events)
    timeline = checker.lease_timeline(events, LEASE, USERS)
    assert [user for _, user in timeline] == ["ccm-replica-0", "ccm-replica-1"]
    wrong, rejected = checker.non_leader_writes(events, timeline, USERS)
    assert [f.detail for f in wrong] == [
        "ccm-replica-0: patch nodes/status node-2 → 200 (ccm-replica-1 led)",
        "ccm-replica-0: create events default/e1 → 201 (ccm-replica-1 led)",
    ]
    assert len(rejected) == 1
    assert "services" in rejected[0].detail


def test_node_deleted_while_its_machine_existed_or_while_ready_is_found() -> None:
    def delete(offset: float, name: str) -> checker.AuditEvent:
        return checker.AuditEvent(
            T0 + offset, T0 + offset, "ccm-replica-0", "delete", "nodes", "", "", name, 200
        )

    machines = {
        "gone": [(T0, "running"), (T0 + 5, "gone")],
        "early": [(T0, "running"), (T0 + 5, "gone")],
        "stopped": [(T0, "running"), (T0 + 2, "stopped")],
    }
    ready = {
        "gone": [(T0, True), (T0 + 5, False)],
        "early": [(T0, True)],
        "stopped": [(T0, True), (T0 + 2, False), (T0 + 7, True)],
    }
    events = [delete(6, "gone"), delete(4, "early"), delete(8, "stopped")]
    wrongful, ready_deleted, total = checker.node_deletion_findings(events, machines, ready)
    assert total == 3
    assert sorted(f.detail.split()[0] for f in wrongful) == ["early", "stopped"]
    assert sorted(f.detail.split()[0] for f in ready_deleted) == ["early", "stopped"]


def service(name: str, uid: str, ports: list[tuple[int, int]], **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "default", "uid": uid, **extra}
    return {
        "metadata": meta,
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"port": p, "nodePort": n, "protocol": "TCP"} for p, n in ports],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": f"192.0.2.{len(uid)}"}]}},
    }


def node(name: str, cidr: str, *taints: str, provider_id: str = "fake://x") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "podCIDR": cidr,
            "providerID": provider_id,
            "taints": [{"key": t, "effect": "NoSchedule"} for t in taints],
        },
    }


def status(lbs: list[tuple[str, str, str, list[tuple[int, int]]]], routes: list[Any]) -> Any:
    return FakeCloudStatus.model_validate(
        {
            "loadBalancers": {
                name: {
                    "name": name,
                    "service": svc,
                    "serviceUID": uid,
                    "ports": [{"port": p, "nodePort": n} for p, n in ports],
                    "ip": f"192.0.2.{len(uid)}",
                }
                for name, svc, uid, ports in lbs
            },
            "routes": {
                "kubernetes": [
                    {"name": f"r-{n}", "targetNode": n, "destinationCIDR": c} for n, c in routes
                ]
            },
        }
    )


def test_leaked_duplicated_load_balancers_and_leaked_routes_are_found() -> None:
    services = [
        service("web", "u1", [(80, 30080)]),
        service("old", "u22", [(80, 30081)], deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    nodes = [node("n1", "10.244.1.0/24"), node("n2", "10.244.2.0/24")]
    cloud = status(
        [
            ("a1", "default/web", "u1", [(80, 30080)]),
            ("a1-copy", "default/web", "u1", [(80, 30080)]),
            ("a2", "default/old", "u22", [(80, 30081)]),  # its Service is being deleted
            ("a3", "default/web", "u333", [(80, 30080)]),  # an earlier Service of that name
        ],
        [
            ("n1", "10.244.1.0/24"),
            ("n2", "10.244.9.0/24"),  # not the podCIDR
            ("gone", "10.244.3.0/24"),
            ("n1", "10.99.0.0/24"),  # outside the cluster CIDR
        ],
    )
    leaked, duplicated, routes = checker.cloud_findings(
        cloud, services, nodes, cluster="kubernetes", cluster_cidr="10.244.0.0/16", at=T0
    )
    assert sorted(f.detail.split()[0] for f in leaked) == ["a2", "a3"]
    assert len(duplicated) == 1
    assert "a1-copy" in duplicated[0].detail
    reasons = sorted(f.detail.split(": ")[-1] for f in routes)
    assert reasons == ["Node gone", "not the Node's podCIDR", "not the Node's podCIDR"]
    assert "(outside 10.244.0.0/16)" in " ".join(f.detail for f in routes)


def test_a_route_outside_the_cluster_cidr_leaks_only_when_its_node_is_gone() -> None:
    nodes = [node("misfit", "10.99.1.0/24")]
    cloud = status([], [("misfit", "10.99.1.0/24"), ("left", "10.99.2.0/24")])
    _, _, routes = checker.cloud_findings(
        cloud, [], nodes, cluster="kubernetes", cluster_cidr="10.244.0.0/16", at=T0
    )
    assert [f.detail for f in routes] == [
        "r-left → left 10.99.2.0/24 (outside 10.244.0.0/16): Node gone"
    ]
    problems = checker.convergence_problems(
        nodes, [], cloud, {"misfit": "running"}, cluster="kubernetes", cluster_cidr="10.244.0.0/16"
    )
    assert problems == []


def test_convergence_requires_the_steady_state_the_workload_asked_for() -> None:
    services = [service("web", "u1", [(80, 30080)])]
    nodes = [node("n1", "10.244.1.0/24"), node("n2", "10.244.2.0/24", wellknown.TAINT_SHUTDOWN)]
    machines = {"n1": "running", "n2": "stopped", "n3": "gone"}
    cloud = status(
        [("a1", "default/web", "u1", [(80, 30080)])],
        [("n1", "10.244.1.0/24"), ("n2", "10.244.2.0/24")],
    )
    args = {"cluster": "kubernetes", "cluster_cidr": "10.244.0.0/16"}
    assert checker.convergence_problems(nodes, services, cloud, machines, **args) == []

    machines["n4"] = "running"
    nodes_then = [
        *nodes,
        node("n3", "10.244.3.0/24"),
        node("n5", "", wellknown.TAINT_UNINITIALIZED),
    ]
    machines["n5"] = "running"
    changed = [service("web", "u1", [(443, 30443)])]
    problems = checker.convergence_problems(nodes_then, changed, cloud, machines, **args)
    text = "\n".join(problems)
    assert "Node n3: machine gone, Node not deleted" in text
    assert "Node n4: not registered yet" in text
    assert "Node n5: not initialised" in text
    assert "load balancer ports" in text
    assert "routes: missing" in text


def test_finalizer_watch_measures_how_long_deleted_services_stay() -> None:
    watch = checker.FinalizerWatch()
    deleting = service("old", "u2", [(80, 1)], deletionTimestamp="x")
    watch.observe([deleting, service("web", "u1", [(80, 2)])], T0)
    watch.observe([deleting], T0 + 50)
    watch.observe([], T0 + 60)
    assert watch.longest(T0 + 500) == 60
    assert watch.stuck(120, T0 + 500) == []
    assert len(watch.stuck(30, T0 + 500)) == 1
    watch.observe([service("slow", "u3", [(80, 3)], deletionTimestamp="x")], T0 + 100)
    assert [f.detail for f in watch.stuck(120, T0 + 300)] == ["default/slow held 200s"]


def test_report_fails_on_any_count_or_without_convergence() -> None:
    report = checker.Report(counts={"leaked routes": 0}, converged=True, converge_seconds=3.0)
    assert report.ok
    assert "| leaked routes | 0 |" in report.table()
    report.counts["leaked routes"] = 1
    assert not report.ok
    assert not checker.Report(counts={"x": 0}, converged=False).ok


def test_peak_rate_finds_the_busiest_second() -> None:
    def get(offset: float, verb: str) -> checker.AuditEvent:
        return checker.AuditEvent(T0 + offset, T0 + offset, "u", verb, "nodes", "", "", "", 200)

    events = [get(0.1, "list"), get(3.2, "list"), get(3.7, "list"), get(3.9, "watch")]
    assert checker.peak_rate(events, "list") == (2, T0 + 3)
    assert checker.peak_rate([], "list") == (0, 0.0)
