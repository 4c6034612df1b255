"""The invariant checker of a chaos run.

It reads three sources, none of which the replicas control: the apiserver's audit log (who wrote
what, and when), the fake cloud's status file (what the cloud holds) and the apiserver itself
(polled Nodes and Services). Each invariant is a count that must be 0:

* wrongful Node deletions: a Node deleted (audit log) while its machine still existed (the
  workload's machine history, recorded before each change reached the cloud);
* Ready Nodes deleted: a Node deleted while its last reported Ready condition was True;
* leaked load balancers: in the cloud with no LoadBalancer Service (same UID) wanting them;
* duplicated load balancers: more than one load balancer for one Service;
* leaked routes: a route of the cluster whose Node is gone or whose CIDR is not that Node's
  podCIDR (inside the cluster CIDR or not: a route ccm created for a misconfigured Node must go
  with the Node);
* finalizers stuck: a deleted Service still present (held by its finalizer) longer than a bound;
* writes by a non-leader: a successful write (other than to the Lease; Events count) by a
  replica's identity received after another replica acquired the Lease and before the writer
  acquired it again. The Lease timeline itself comes from the audit log: each replica has its own
  user, and a successful write of the Lease by a replica means that replica holds it.

Plus the time to converge after the last fault (the run fails when it does not converge).
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ccm import wellknown
from ccm.testing.fake_cloud import FakeCloudStatus

__all__ = [
    "AuditEvent",
    "FinalizerWatch",
    "Finding",
    "Report",
    "cloud_findings",
    "convergence_problems",
    "lease_timeline",
    "node_deletion_findings",
    "non_leader_writes",
    "peak_rate",
    "read_audit_log",
]

_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEvent:
    received: float  # requestReceivedTimestamp, epoch seconds
    completed: float  # stageTimestamp (ResponseComplete)
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int

    def what(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.verb} {self.resource}{sub} {ns}{self.name} → {self.code}"


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_audit_log(path: Path, users: Iterable[str] | None = None) -> list[AuditEvent]:
    """Parse the audit log (JSON lines); keep only ``users`` when given. A torn last line (the
    apiserver was SIGKILLed mid-write) is skipped."""
    wanted = set(users) if users is not None else None
    events: list[AuditEvent] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        user = (doc.get("user") or {}).get("username", "")
        if wanted is not None and user not in wanted:
            continue
        ref = doc.get("objectRef") or {}
        events.append(
            AuditEvent(
                received=_epoch(doc["requestReceivedTimestamp"]),
                completed=_epoch(doc["stageTimestamp"]),
                user=user,
                verb=doc.get("verb", ""),
                resource=ref.get("resource", ""),
                subresource=ref.get("subresource", ""),
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                code=int((doc.get("responseStatus") or {}).get("code", 0)),
            )
        )
    events.sort(key=lambda e: e.completed)
    return events


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    invariant: str
    at: float
    detail: str

    def line(self, t0: float) -> str:
        return f"[{self.at - t0:8.1f}s] {self.invariant}: {self.detail}"


def lease_timeline(
    events: Sequence[AuditEvent], lease: tuple[str, str], users: Iterable[str]
) -> list[tuple[float, str]]:
    """``[(time, user)]``: each point where a different replica successfully wrote the Lease."""
    names = set(users)
    timeline: list[tuple[float, str]] = []
    for e in events:
        if (
            e.resource == "leases"
            and (e.namespace, e.name) == lease
            and e.verb in ("create", "update", "patch")
            and 200 <= e.code < 300
            and e.user in names
            and (not timeline or timeline[-1][1] != e.user)
        ):
            timeline.append((e.completed, e.user))
    return timeline


def _holder_at(timeline: Sequence[tuple[float, str]], t: float) -> str:
    holder = ""
    for at, user in timeline:
        if at > t:
            break
        holder = user
    return holder


def non_leader_writes(
    events: Sequence[AuditEvent], timeline: Sequence[tuple[float, str]], users: Iterable[str]
) -> tuple[list[Finding], list[Finding]]:
    """(successful writes, rejected writes) by a replica while another held the Lease, Events
    included. Only the first counts toward the invariant; the second is evidence."""
    names = set(users)
    wrong: list[Finding] = []
    rejected: list[Finding] = []
    for e in events:
        if e.user not in names or e.verb not in _WRITE_VERBS or e.resource == "leases":
            continue
        holder = _holder_at(timeline, e.received)
        if not holder or holder == e.user:
            continue
        finding = Finding(
            "write by a non-leader", e.received, f"{e.user}: {e.what()} ({holder} led)"
        )
        if 200 <= e.code < 300:
            wrong.append(finding)
        else:
            rejected.append(finding)
    return wrong, rejected


def peak_rate(events: Sequence[AuditEvent], verb: str) -> tuple[int, float]:
    """(the most ``verb`` requests by the given events in one second, that second): a relist
    storm after an apiserver restart shows here."""
    buckets: dict[int, int] = {}
    for e in events:
        if e.verb == verb:
            buckets[int(e.received)] = buckets.get(int(e.received), 0) + 1
    if not buckets:
        return 0, 0.0
    second, count = max(buckets.items(), key=lambda item: (item[1], -item[0]))
    return count, float(second)


def _state_at(history: Sequence[tuple[float, Any]], t: float) -> Any:
    state = None
    for at, value in history:
        if at > t:
            break
        state = value
    return state


def node_deletion_findings(
    events: Sequence[AuditEvent],
    machines: Mapping[str, Sequence[tuple[float, str]]],
    ready: Mapping[str, Sequence[tuple[float, bool]]],
) -> tuple[list[Finding], list[Finding], int]:
    """(wrongful deletions, Ready Nodes deleted, all Node deletions) from the audit log."""
    wrongful: list[Finding] = []
    ready_deleted: list[Finding] = []
    total = 0
    for e in events:
        if e.resource != "nodes" or e.verb != "delete" or e.subresource or not 200 <= e.code < 300:
            continue
        total += 1
        machine = _state_at(machines.get(e.name, ()), e.received)
        if machine in ("running", "stopped"):
            wrongful.append(
                Finding(
                    "wrongful Node deletion", e.received, f"{e.name} by {e.user}: machine {machine}"
                )
            )
        if _state_at(ready.get(e.name, ()), e.received) is True:
            ready_deleted.append(
                Finding(
                    "Ready Node deleted", e.received, f"{e.name} by {e.user} (machine {machine})"
                )
            )
    return wrongful, ready_deleted, total


def _wanted_services(services: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """uid → Service, for LoadBalancer Services not being deleted."""
    return {
        s["metadata"]["uid"]: s
        for s in services
        if (s.get("spec") or {}).get("type") == "LoadBalancer"
        and not s["metadata"].get("deletionTimestamp")
    }


def _in_cidr(cidr: str, outer: str) -> bool:
    try:
        return ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(outer))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def cloud_findings(
    status: FakeCloudStatus,
    services: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    *,
    cluster: str,
    cluster_cidr: str,
    at: float,
) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """(leaked load balancers, duplicated load balancers, leaked routes) in the final state."""
    wanted = _wanted_services(services)
    leaked, duplicated, routes = [], [], []
    per_service: dict[str, list[str]] = {}
    for lb in status.load_balancers.values():
        service = wanted.get(lb.service_uid)
        key = f"{service['metadata']['namespace']}/{service['metadata']['name']}" if service else ""
        if service is None or key != lb.service:
            leaked.append(Finding("leaked load balancer", at, f"{lb.name} of {lb.service}"))
            continue
        per_service.setdefault(lb.service, []).append(lb.name)
    for key, names in per_service.items():
        if len(names) > 1:
            duplicated.append(Finding("duplicated load balancer", at, f"{key}: {sorted(names)}"))
    pod_cidrs = {
        n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR", "")
        for n in nodes
        if not n["metadata"].get("deletionTimestamp")
    }
    for route in status.routes.get(cluster, []):
        where = (
            "" if _in_cidr(route.destination_cidr, cluster_cidr) else f" (outside {cluster_cidr})"
        )
        detail = f"{route.name} → {route.target_node} {route.destination_cidr}{where}"
        if route.target_node not in pod_cidrs:
            routes.append(Finding("leaked route", at, f"{detail}: Node gone"))
        elif pod_cidrs[route.target_node] != route.destination_cidr:
            routes.append(Finding("leaked route", at, f"{detail}: not the Node's podCIDR"))
    return leaked, duplicated, routes


class FinalizerWatch:
    """How long deleted Services stay (held by the load-balancer cleanup finalizer)."""

    def __init__(self) -> None:
        self.first_seen: dict[str, tuple[float, str]] = {}  # uid → (first seen deleting, key)
        self.durations: dict[str, float] = {}

    def observe(self, services: Sequence[Mapping[str, Any]] | None, now: float) -> None:
        if services is None:
            return
        present = set()
        for s in services:
            meta = s["metadata"]
            if meta.get("deletionTimestamp"):
                present.add(meta["uid"])
                key = f"{meta['namespace']}/{meta['name']}"
                self.first_seen.setdefault(meta["uid"], (now, key))
        for uid, (since, _) in list(self.first_seen.items()):
            if uid not in present and uid not in self.durations:
                self.durations[uid] = now - since

    def stuck(self, bound: float, now: float) -> list[Finding]:
        found = []
        for uid, (since, key) in self.first_seen.items():
            held = self.durations.get(uid, now - since)
            if held > bound:
                found.append(Finding("finalizer stuck", since, f"{key} held {held:.0f}s"))
        return found

    def longest(self, now: float) -> float:
        return max(
            (self.durations.get(uid, now - since) for uid, (since, _) in self.first_seen.items()),
            default=0.0,
        )


def _taints(node: Mapping[str, Any]) -> set[str]:
    return {t.get("key", "") for t in (node.get("spec") or {}).get("taints") or []}


def convergence_problems(
    nodes: Sequence[Mapping[str, Any]],
    services: Sequence[Mapping[str, Any]],
    status: FakeCloudStatus | None,
    machines: Mapping[str, str],
    *,
    cluster: str,
    cluster_cidr: str,
) -> list[str]:
    """What still differs from the steady state the workload asks for (empty: converged).

    Routes outside the cluster CIDR are left to the leak check: whether one is made for a
    misconfigured Node is a policy choice, and a leaked one must not hide the convergence time.
    """
    problems: list[str] = []
    if status is None:
        return ["no cloud status yet"]
    seen = set()
    for n in nodes:
        name = n["metadata"]["name"]
        seen.add(name)
        machine = machines.get(name, "unknown")
        taints = _taints(n)
        if machine in ("gone", "unknown"):
            problems.append(f"Node {name}: machine {machine}, Node not deleted")
            continue
        if wellknown.TAINT_UNINITIALIZED in taints:
            problems.append(f"Node {name}: not initialised")
        if not (n.get("spec") or {}).get("providerID"):
            problems.append(f"Node {name}: no providerID")
        if (wellknown.TAINT_SHUTDOWN in taints) != (machine == "stopped"):
            problems.append(f"Node {name}: shutdown taint does not match machine {machine}")
    for name, machine in machines.items():
        if machine in ("running", "stopped") and name not in seen:
            problems.append(f"Node {name}: not registered yet")
    wanted = _wanted_services(services)
    lbs_by_uid: dict[str, list[Any]] = {}
    for lb in status.load_balancers.values():
        lbs_by_uid.setdefault(lb.service_uid, []).append(lb)
        if lb.service_uid not in wanted:
            problems.append(f"load balancer {lb.name} of {lb.service}: no Service wants it")
    for uid, s in wanted.items():
        key = f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        lbs = lbs_by_uid.get(uid, [])
        if len(lbs) != 1:
            problems.append(f"Service {key}: {len(lbs)} load balancers")
            continue
        want = sorted((p["port"], p.get("nodePort", 0)) for p in s["spec"]["ports"])
        have = sorted((p.port, p.node_port) for p in lbs[0].ports)
        if want != have:
            problems.append(f"Service {key}: load balancer ports {have} != {want}")
        ingress = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if [i.get("ip") for i in ingress] != [lbs[0].ip]:
            problems.append(f"Service {key}: status ingress {ingress} != {lbs[0].ip}")
    for s in services:
        if s["metadata"].get("deletionTimestamp"):
            problems.append(f"Service {s['metadata']['name']}: deletion pending")
    want_routes = {
        (n["metadata"]["name"], (n.get("spec") or {}).get("podCIDR", ""))
        for n in nodes
        if _in_cidr((n.get("spec") or {}).get("podCIDR", ""), cluster_cidr)
    }
    have_routes = {
        (r.target_node, r.destination_cidr)
        for r in status.routes.get(cluster, [])
        if _in_cidr(r.destination_cidr, cluster_cidr)
    }
    if want_routes != have_routes:
        problems.append(
            f"routes: missing {sorted(want_routes - have_routes)}, extra "
            f"{sorted(have_routes - want_routes)}"
        )
    return problems


@dataclasses.dataclass(slots=True)
class Report:
    """The table of a run: invariant rows (must be 0) and information rows."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    info: dict[str, str] = dataclasses.field(default_factory=dict)
    converged: bool = False
    converge_seconds: float | None = None
    findings: list[str] = dataclasses.field(default_factory=list)
    fault_log: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.converged and not any(self.counts.values())

    def table(self) -> str:
        rows = ["| invariant | count |", "|---|---:|"]
        rows += [f"| {name} | {count} |" for name, count in self.counts.items()]
        took = "—" if self.converge_seconds is None else f"{self.converge_seconds:.1f} s"
        verdict = "yes" if self.converged else "NO"
        rows.append(f"| converged after the last fault and workload step | {verdict} ({took}) |")
        rows += ["", "| information | value |", "|---|---|"]
        rows += [f"| {name} | {value} |" for name, value in self.info.items()]
        return "\n".join(rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "converged": self.converged,
            "convergeSeconds": self.converge_seconds,
            "info": self.info,
            "findings": self.findings,
            "faultLog": self.fault_log,
        }
