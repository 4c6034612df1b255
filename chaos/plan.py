"""The seeded schedule of a chaos run: workload actions and faults, computed before the run.

:func:`make_plan` simulates the workload's model (which Nodes run, are stopped or gone, which
Services exist) with ``random.Random(seed)``, so one seed gives the same actions on the same
targets at the same offsets every time. Faults do not overlap: each one starts, lasts its duration
and ends, then a quiet gap follows; the kinds are drawn in shuffled rounds, so every enabled kind
is used before any repeats.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "SHORT_RUN_FAULTS",
    "Action",
    "Plan",
    "PlanSettings",
    "make_plan",
    "parse_faults",
    "pod_cidr",
]

#: Every fault kind, in the order of the report.
FAULT_KINDS: tuple[str, ...] = (
    "cloud-errors",  # every cloud call fails with CloudProviderError
    "throttle",  # every cloud call fails with RetryAfterError (Retry-After)
    "latency",  # every cloud call takes longer than --cloud-call-timeout
    "ignore-cancel",  # as latency, and the provider ignores the cancellation (answers late)
    "apiserver-kill",  # SIGKILL kube-apiserver, restart it after the fault's duration
    "etcd-restart",  # stop etcd, start it again after the fault's duration
    "leader-kill",  # SIGKILL the leading replica (restarted like a crashed pod)
    "leader-pause",  # SIGSTOP the leading replica for longer than the lease, then SIGCONT
    "foreign-podcidr",  # a Node with a podCIDR outside the cluster CIDR joins, then leaves
)
DEFAULT_FAULTS: tuple[str, ...] = FAULT_KINDS
#: The kinds of the short run in ``make test``: every kind, once each.
SHORT_RUN_FAULTS: tuple[str, ...] = FAULT_KINDS

CLUSTER_CIDR = "10.244.0.0/16"


FOREIGN_CIDR = "10.99.0.0/16"  # outside CLUSTER_CIDR


def pod_cidr(index: int, *, foreign: bool = False) -> str:
    """The podCIDR of the ``index``-th Node: its own /24 of the cluster CIDR (or of
    :data:`FOREIGN_CIDR` for a misconfigured Node)."""
    net = ipaddress.ip_network(FOREIGN_CIDR if foreign else CLUSTER_CIDR)
    return str(list(net.subnets(new_prefix=24))[index % 256])


def parse_faults(text: str) -> tuple[str, ...]:
    """``"all"``, ``"short"`` (:data:`SHORT_RUN_FAULTS`), ``"none"`` or a comma-separated list of
    :data:`FAULT_KINDS`."""
    text = text.strip()
    if text == "all":
        return FAULT_KINDS
    if text == "short":
        return SHORT_RUN_FAULTS
    if text in ("", "none"):
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind {unknown[0]!r} (known: {', '.join(FAULT_KINDS)})")
    return kinds


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One scheduled step: ``at`` seconds after the start of the chaos phase."""

    at: float
    kind: str
    target: str = ""
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.at:7.1f}s {self.kind} {self.target} {extra}".rstrip()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PlanSettings:
    seed: int = 1
    duration: float = 600.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    initial_nodes: int = 5
    initial_services: int = 3
    max_nodes: int = 12
    max_services: int = 8
    workload_interval: float = 2.0
    fault_duration: tuple[float, float] = (4.0, 10.0)
    fault_gap: tuple[float, float] = (6.0, 12.0)
    #: Faults start after this many seconds, and none starts in the last ``quiet_tail`` seconds.
    warmup: float = 5.0
    quiet_tail: float = 5.0
    #: leader-pause lasts at least this long, so the standby takes over.
    pause_min: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    settings: PlanSettings
    initial_nodes: tuple[str, ...]
    initial_services: tuple[tuple[str, tuple[int, ...]], ...]
    actions: tuple[Action, ...]

    def faults(self) -> list[Action]:
        return [a for a in self.actions if a.kind in ("fault-start", "fault-end")]

    def last_fault_end(self) -> float:
        ends = [a.at for a in self.actions if a.kind == "fault-end"]
        return max(ends, default=0.0)


_PORT_CHOICES = (80, 443, 8080, 8443, 9000)
_WORKLOAD = (
    ("join", 3),
    ("leave", 2),
    ("stop", 1),
    ("start", 1),
    ("flap", 2),
    ("svc-create", 2),
    ("svc-change", 2),
    ("svc-delete", 1),
)


def _ports(rng: random.Random) -> tuple[int, ...]:
    return tuple(sorted(rng.sample(_PORT_CHOICES, rng.randint(1, 2))))


class _Model:
    """What the workload has done so far, to pick valid targets."""

    def __init__(self, settings: PlanSettings) -> None:
        self.settings = settings
        self.next_node = 0
        self.next_service = 0
        self.running: list[str] = []
        self.stopped: list[str] = []
        self.busy: dict[str, float] = {}  # flapping until
        self.services: list[str] = []

    def new_node(self) -> tuple[str, int]:
        index = self.next_node
        self.next_node += 1
        name = f"node-{index:03d}"
        self.running.append(name)
        return name, index

    def new_service(self) -> str:
        name = f"svc-{self.next_service:03d}"
        self.next_service += 1
        self.services.append(name)
        return name

    def idle_running(self, now: float) -> list[str]:
        return [n for n in self.running if self.busy.get(n, 0.0) <= now]


def _workload_step(rng: random.Random, model: _Model, now: float) -> list[Action]:
    s = model.settings
    kinds, weights = zip(*_WORKLOAD, strict=True)
    for _ in range(10):
        kind = rng.choices(kinds, weights)[0]
        idle = model.idle_running(now)
        nodes = len(model.running) + len(model.stopped)
        if kind == "join" and nodes < s.max_nodes:
            name, index = model.new_node()
            return [Action(at=now, kind="join", target=name, params=(("index", index),))]
        if kind == "leave" and len(idle) + len(model.stopped) > 2:
            name = rng.choice(sorted(idle + model.stopped))
            for pool in (model.running, model.stopped):
                if name in pool:
                    pool.remove(name)
            return [Action(at=now, kind="leave", target=name)]
        if kind == "stop" and len(idle) > 2:
            name = rng.choice(idle)
            model.running.remove(name)
            model.stopped.append(name)
            return [Action(at=now, kind="stop", target=name)]
        if kind == "start" and model.stopped:
            name = rng.choice(model.stopped)
            model.stopped.remove(name)
            model.running.append(name)
            return [Action(at=now, kind="start", target=name)]
        if kind == "flap" and idle:
            name = rng.choice(idle)
            down = round(rng.uniform(1.0, 6.0), 1)
            model.busy[name] = now + down + 0.5
            return [
                Action(at=now, kind="flap-down", target=name),
                Action(at=round(now + down, 2), kind="flap-up", target=name),
            ]
        if kind == "svc-create" and len(model.services) < s.max_services:
            name = model.new_service()
            return [
                Action(at=now, kind="svc-create", target=name, params=(("ports", _ports(rng)),))
            ]
        if kind == "svc-change" and model.services:
            name = rng.choice(model.services)
            return [
                Action(at=now, kind="svc-change", target=name, params=(("ports", _ports(rng)),))
            ]
        if kind == "svc-delete" and len(model.services) > 1:
            name = rng.choice(model.services)
            model.services.remove(name)
            return [Action(at=now, kind="svc-delete", target=name)]
    return []


def _fault_actions(rng: random.Random, s: PlanSettings) -> list[Action]:
    actions: list[Action] = []
    if not s.faults:
        return actions
    now = s.warmup
    queue: list[str] = []
    foreign = 0
    while True:
        if not queue:
            queue = list(s.faults)
            rng.shuffle(queue)
        kind = queue[0]
        length = round(rng.uniform(*s.fault_duration), 1)
        if kind == "leader-pause":
            length = max(length, s.pause_min)
        if now + length > s.duration - s.quiet_tail:
            break
        queue.pop(0)
        params: tuple[tuple[str, Any], ...] = ()
        if kind == "foreign-podcidr":
            params = (("node", f"foreign-{foreign:03d}"), ("index", foreign))
            foreign += 1
        actions.append(Action(at=round(now, 2), kind="fault-start", target=kind, params=params))
        actions.append(
            Action(at=round(now + length, 2), kind="fault-end", target=kind, params=params)
        )
        now += length + rng.uniform(*s.fault_gap)
    return actions


def make_plan(settings: PlanSettings) -> Plan:
    """The whole schedule for ``settings`` (same settings, same plan)."""
    rng = random.Random(settings.seed)
    model = _Model(settings)
    initial_nodes = tuple(model.new_node()[0] for _ in range(settings.initial_nodes))
    initial_services = tuple(
        (model.new_service(), _ports(rng)) for _ in range(settings.initial_services)
    )
    workload: list[Action] = []
    now = 1.0
    while now < settings.duration - settings.quiet_tail:
        workload.extend(_workload_step(rng, model, round(now, 2)))
        now += rng.uniform(0.5, 1.5) * settings.workload_interval
    faults = _fault_actions(random.Random(settings.seed * 7919 + 1), settings)
    actions = sorted(workload + faults, key=lambda a: a.at)
    return Plan(
        settings=settings,
        initial_nodes=initial_nodes,
        initial_services=initial_services,
        actions=tuple(actions),
    )


def summary(actions: Iterable[Action]) -> dict[str, int]:
    """How many actions of each kind (fault starts counted by fault kind)."""
    counts: dict[str, int] = {}
    for a in actions:
        key = f"fault {a.target}" if a.kind == "fault-start" else a.kind
        if a.kind == "fault-end":
            continue
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def schedule_lines(actions: Sequence[Action]) -> list[str]:
    """The fault schedule, one line per fault: ``start-end kind``."""
    starts: dict[str, float] = {}
    lines = []
    for a in actions:
        if a.kind == "fault-start":
            starts[a.target] = a.at
        elif a.kind == "fault-end":
            lines.append(f"{starts.pop(a.target):6.1f}-{a.at:6.1f}s {a.target}")
    return lines
