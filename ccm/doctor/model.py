"""What a check is: the scope it looks at, the verdict it gives, and the cluster state it reads.

A check answers one operator question ("do the Nodes still carry the uninitialized taint?") with a
:class:`Finding`: a :class:`Verdict`, a one-line summary, the objects at fault and the fix in one
line. :class:`Context` reads each kind of object once per run, so checks that ask about the same
Nodes share one list.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ccm import errors, wellknown
from ccm.kube import client as kclient

__all__ = [
    "PODS",
    "QUESTIONS",
    "Check",
    "Context",
    "Finding",
    "Scope",
    "Verdict",
    "age",
    "format_age",
    "parse_time",
]

PODS = kclient.Resource("", "v1", "pods", "Pod", True)

DEFAULT_SERVICE_ACCOUNT_USER = "system:serviceaccount:kube-system:cloud-controller-manager"
DEFAULT_POD_SELECTOR = "k8s-app=cloud-controller-manager"
DEFAULT_GRACE = 120.0

# The question each check answers, by check name.
QUESTIONS: dict[str, str] = {
    "leader": "Is a ccm leading (Lease holder, renewed in time)?",
    "ccm-pods": "Are the ccm Pods running, without restarts?",
    "taint-without-ccm": "Are tainted Nodes waiting for a ccm that is not running?",
    "uninitialized-taint": "Do Nodes still carry the uninitialized taint?",
    "kubelet-external": "Did the kubelets start with --cloud-provider=external?",
    "node-cloud-data": "Do initialized Nodes have zone and region labels?",
    "routes": "Did the routes come up (NetworkUnavailable)?",
    "lb-pending": "Which LoadBalancer Services have no ingress address?",
    "lb-finalizer": "Which Services are stuck deleting on the load-balancer cleanup finalizer?",
    "rbac": "May the ccm's user make every call the ccm makes?",
}


class Verdict(enum.IntEnum):
    """Ordered by severity, so the worst of a run is ``max()``."""

    OK = 0
    WARN = 1
    FAIL = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One check's answer. ``objects`` names every object at fault (the report shows the first
    few and a count)."""

    check: str
    question: str
    verdict: Verdict
    summary: str
    objects: tuple[str, ...] = ()
    fix: str = ""

    def to_json(self, *, max_objects: int = 20) -> dict[str, Any]:
        return {
            "check": self.check,
            "question": self.question,
            "verdict": str(self.verdict),
            "summary": self.summary,
            "objects": list(self.objects[:max_objects]),
            "count": len(self.objects),
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """What the doctor looks at. The defaults are a cluster running the shipped manifests;
    the selectors and names let it look at one part of a shared cluster."""

    node_selector: str = ""
    namespace: str | None = None  # Services: None means every namespace
    lease_name: str = wellknown.DEFAULT_LEADER_ELECTION_NAME
    lease_namespace: str = wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    ccm_namespace: str = wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    ccm_pod_selector: str = DEFAULT_POD_SELECTOR
    rbac_user: str = DEFAULT_SERVICE_ACCOUNT_USER
    # A Node tainted (or a Service pending) for less than this is a warning, not a failure: the
    # ccm may simply not have got to it yet.
    grace: float = DEFAULT_GRACE

    def overdue(self, age: float | None) -> bool:
        """Whether something this old (seconds; None: age unknown) is past the grace."""
        return age is None or age >= self.grace


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp (``Time`` or ``MicroTime``) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def age(value: Any, now: dt.datetime) -> float | None:
    """Seconds since the timestamp ``value``, or None when it is missing or malformed."""
    when = parse_time(value)
    return None if when is None else max(0.0, (now - when).total_seconds())


def format_age(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h``, ``2d`` (like kubectl's AGE column); ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


@dataclass
class Context:
    """A run's client, scope and clock, and the objects read so far (each list read once)."""

    client: kclient.KubeClient
    scope: Scope
    now: dt.datetime
    _cache: dict[str, Any] = field(default_factory=dict)

    async def nodes(self) -> list[dict[str, Any]]:
        if "nodes" not in self._cache:
            items, _ = await self.client.list_all(
                kclient.NODES, label_selector=self.scope.node_selector or None
            )
            self._cache["nodes"] = items
        nodes: list[dict[str, Any]] = self._cache["nodes"]
        return nodes

    async def services(self) -> list[dict[str, Any]]:
        if "services" not in self._cache:
            items, _ = await self.client.list_all(kclient.SERVICES, namespace=self.scope.namespace)
            self._cache["services"] = items
        services: list[dict[str, Any]] = self._cache["services"]
        return services

    async def pods(self) -> list[dict[str, Any]]:
        if "pods" not in self._cache:
            items, _ = await self.client.list_all(
                PODS,
                namespace=self.scope.ccm_namespace,
                label_selector=self.scope.ccm_pod_selector or None,
            )
            self._cache["pods"] = items
        pods: list[dict[str, Any]] = self._cache["pods"]
        return pods

    async def lease(self) -> dict[str, Any] | None:
        """The leader-election Lease, or None when it does not exist."""
        if "lease" not in self._cache:
            try:
                self._cache["lease"] = await self.client.get(
                    kclient.LEASES, self.scope.lease_name, namespace=self.scope.lease_namespace
                )
            except errors.NotFoundError:
                self._cache["lease"] = None
        lease: dict[str, Any] | None = self._cache["lease"]
        return lease

    async def last_warning(self, kind: str, namespace: str | None, name: str) -> str:
        """``Reason: message (age ago)`` of the newest Warning event about the object, or ``""``."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},type=Warning"
        items, _ = await self.client.list_all(
            kclient.EVENTS, namespace=namespace, field_selector=selector
        )
        if not items:
            return ""

        def when(ev: dict[str, Any]) -> str:
            return str(ev.get("lastTimestamp") or ev.get("eventTime") or "")

        ev = max(items, key=when)
        return (
            f"{ev.get('reason', '')}: {str(ev.get('message', '')).strip()}"
            f" ({format_age(age(when(ev), self.now))} ago)"
        )


Check = Callable[[Context], Awaitable[Finding]]
