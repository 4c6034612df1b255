"""The chaos orchestrator and its command line: ``python -m chaos`` (``make chaos``).

A run has four phases: start (control plane, replicas, the initial Nodes and Services), chaos (the
seeded plan of :mod:`chaos.plan`: workload actions and faults), convergence (every fault cleared,
wait until the steady state holds for ``--settle`` seconds) and the check (:mod:`chaos.checker`).
The table is printed and written to ``<out>/<stamp>-seed<N>.md`` with a JSON twin; the exit code
is 0 only when every invariant count is 0 and the run converged.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chaos import checker
from chaos import plan as planmod
from chaos.cluster import LEASE_NAME, LEASE_NAMESPACE, Cluster, ReplicaSettings

__all__ = ["main", "run"]

_log = logging.getLogger("chaos")
RESULTS = Path(__file__).resolve().parent / "results"
TICK = 0.25
POLL = 1.0


def _span(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    span = (float(low), float(high or low))
    if not 0 <= span[0] <= span[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: want MIN,MAX with 0 <= MIN <= MAX")
    return span


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1, help="seed of the plan (default 1)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of chaos (default 600)")
    p.add_argument(
        "--faults",
        default="all",
        help="fault kinds, comma-separated, 'all' or 'none' (known: "
        + ", ".join(planmod.FAULT_KINDS)
        + ")",
    )
    p.add_argument(
        "--fault-duration", type=_span, default=(4.0, 10.0), help="MIN,MAX seconds (default 4,10)"
    )
    p.add_argument(
        "--fault-gap", type=_span, default=(6.0, 12.0), help="MIN,MAX quiet seconds (default 6,12)"
    )
    p.add_argument("--replicas", type=int, default=3, choices=(2, 3))
    p.add_argument("--nodes", type=int, default=5, help="Nodes at the start (default 5)")
    p.add_argument("--services", type=int, default=3, help="Services at the start (default 3)")
    p.add_argument("--converge-timeout", type=float, default=180.0)
    p.add_argument("--settle", type=float, default=8.0, help="seconds the steady state must hold")
    p.add_argument("--finalizer-bound", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, audit log)")
    p.add_argument("--print-plan", action="store_true", help="print the plan and exit")
    return p.parse_args(argv)


def _settings(args: argparse.Namespace) -> planmod.PlanSettings:
    return planmod.PlanSettings(
        seed=args.seed,
        duration=args.duration,
        faults=planmod.parse_faults(args.faults),
        initial_nodes=args.nodes,
        initial_services=args.services,
        fault_duration=args.fault_duration,
        fault_gap=args.fault_gap,
    )


def run(args: argparse.Namespace) -> checker.Report:
    plan = planmod.make_plan(_settings(args))
    workdir = Path(tempfile.mkdtemp(prefix=f"ccm-chaos-{args.seed}-"))
    replica_settings = ReplicaSettings()
    cluster = Cluster(workdir, replicas=args.replicas, settings=replica_settings)
    report = checker.Report()
    keep = args.keep
    try:
        _log.info("work dir %s; starting control plane and %d replicas", workdir, args.replicas)
        cluster.start()
        for i, name in enumerate(plan.initial_nodes):
            cluster.join(name, i)
        for name, ports in plan.initial_services:
            cluster.create_service(name, ports)
        wall0 = time.time()
        report = _chaos_and_check(args, plan, cluster, wall0)
        keep = keep or not report.ok
    finally:
        try:
            cluster.stop()
        finally:
            if keep:
                _log.info("kept the work dir %s", workdir)
                report.info["work dir"] = str(workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return report


def _observe(cluster: Cluster, watch: checker.FinalizerWatch) -> None:
    services = cluster.list_items("/api/v1/services")
    watch.observe(services, time.time())


def _chaos_and_check(
    args: argparse.Namespace, plan: planmod.Plan, cluster: Cluster, wall0: float
) -> checker.Report:
    watch = checker.FinalizerWatch()
    start = time.monotonic()
    pending = list(plan.actions)
    next_poll = 0.0
    fault_counts: dict[str, int] = {}
    skipped: list[str] = []
    while pending or cluster.pending:
        now = time.monotonic() - start
        while pending and pending[0].at <= now:
            action = pending.pop(0)
            outcome = _apply(cluster, action)
            if action.kind == "fault-start":
                fault_counts[action.target] = fault_counts.get(action.target, 0) + 1
                if outcome.startswith("skipped"):
                    skipped.append(action.target)
            if outcome:
                cluster.fault_log.append((time.time(), action.kind, f"{action.target}: {outcome}"))
                _log.info("%s → %s", action.describe(), outcome)
        cluster.pump()
        cluster.supervise()
        if now >= next_poll:
            _observe(cluster, watch)
            next_poll = now + POLL
        if not pending and now > plan.settings.duration + 120:
            break  # the workload's queue is stuck: convergence will say what is missing
        time.sleep(TICK)
    cluster.clear_faults()
    last_fault = time.time()
    converged_at, problems = _converge(args, cluster, watch, last_fault)
    return _check(
        args, plan, cluster, watch, wall0, last_fault, converged_at, problems, fault_counts, skipped
    )


def _apply(cluster: Cluster, action: planmod.Action) -> str:
    kind, target = action.kind, action.target
    if kind == "fault-start":
        return cluster.fault_start(target, action.param("node", ""), int(action.param("index", 0)))
    if kind == "fault-end":
        return cluster.fault_end(target, action.param("node", ""))
    if kind == "join":
        cluster.join(target, int(action.param("index")))
    elif kind == "leave":
        cluster.leave(target)
    elif kind == "stop":
        cluster.stop_machine(target)
    elif kind == "start":
        cluster.start_machine(target)
    elif kind in ("flap-down", "flap-up"):
        cluster.flap(target, kind == "flap-up")
    elif kind == "svc-create":
        cluster.create_service(target, tuple(action.param("ports")))
    elif kind == "svc-change":
        cluster.change_service(target, tuple(action.param("ports")))
    elif kind == "svc-delete":
        cluster.delete_service(target)
    else:
        raise ValueError(f"unknown action {kind}")
    return ""


def _converge(
    args: argparse.Namespace, cluster: Cluster, watch: checker.FinalizerWatch, since: float
) -> tuple[float | None, list[str]]:
    """Poll until the steady state holds for ``--settle`` seconds; (time it began, problems)."""
    stable_since: float | None = None
    problems: list[str] = ["not checked"]
    while time.time() - since < args.converge_timeout:
        cluster.pump()
        cluster.supervise()
        nodes = cluster.list_items("/api/v1/nodes")
        services = cluster.list_items("/api/v1/services")
        watch.observe(services, time.time())
        if nodes is None or services is None:
            problems = ["apiserver not answering"]
        else:
            machines = {name: cluster.machine_state(name) for name in cluster.machines}
            problems = checker.convergence_problems(
                nodes,
                services,
                cluster.cloud_status(),
                machines,
                cluster="kubernetes",
                cluster_cidr=planmod.CLUSTER_CIDR,
            )
            if cluster.pending:
                problems.append(f"{len(cluster.pending)} workload steps pending")
        if problems:
            stable_since = None
        else:
            stable_since = stable_since or time.time()
            if time.time() - stable_since >= args.settle:
                return stable_since, []
        time.sleep(POLL)
    return None, problems


def _check(
    args: argparse.Namespace,
    plan: planmod.Plan,
    cluster: Cluster,
    watch: checker.FinalizerWatch,
    wall0: float,
    last_fault: float,
    converged_at: float | None,
    problems: list[str],
    fault_counts: dict[str, int],
    skipped: list[str],
) -> checker.Report:
    users = cluster.replica_users
    events = checker.read_audit_log(cluster.audit_log_path(), users)
    timeline = checker.lease_timeline(events, (LEASE_NAMESPACE, LEASE_NAME), users)
    wrong, rejected = checker.non_leader_writes(events, timeline, users)
    wrongful, ready_deleted, deletions = checker.node_deletion_findings(
        events, cluster.machines, cluster.ready
    )
    now = time.time()
    nodes = cluster.list_items("/api/v1/nodes") or []
    services = cluster.list_items("/api/v1/services") or []
    status = cluster.cloud_status()
    leaked: list[checker.Finding] = []
    duplicated: list[checker.Finding] = []
    routes: list[checker.Finding] = []
    if status is not None:
        leaked, duplicated, routes = checker.cloud_findings(
            status,
            services,
            nodes,
            cluster="kubernetes",
            cluster_cidr=planmod.CLUSTER_CIDR,
            at=now,
        )
    stuck = watch.stuck(args.finalizer_bound, now)
    report = checker.Report()
    report.counts = {
        "wrongful Node deletions (machine still existed)": len(wrongful),
        "Ready Nodes deleted": len(ready_deleted),
        "leaked load balancers": len(leaked),
        "duplicated load balancers": len(duplicated),
        "leaked routes": len(routes),
        f"finalizers stuck > {args.finalizer_bound:.0f} s": len(stuck),
        "writes by a non-leader (audit log)": len(wrong),
    }
    report.converged = converged_at is not None
    report.converge_seconds = None if converged_at is None else max(0.0, converged_at - last_fault)
    restarts = sum(r.restarts for r in cluster.replicas)
    report.info = {
        "seed": str(args.seed),
        "chaos duration": f"{plan.settings.duration:.0f} s",
        "fault kinds": ", ".join(plan.settings.faults) or "none",
        "faults injected": ", ".join(f"{k} x{v}" for k, v in sorted(fault_counts.items())),
        "faults skipped (no leader at the time)": str(len(skipped)),
        "workload actions": ", ".join(
            f"{k} {v}"
            for k, v in planmod.summary(plan.actions).items()
            if not k.startswith("fault")
        ),
        "Node deletions by ccm": str(deletions),
        "leader changes (audit log)": str(max(0, len(timeline) - 1)),
        "replica restarts": str(restarts),
        "rejected writes by a non-leader": str(len(rejected)),
        "longest Service deletion": f"{watch.longest(now):.1f} s",
        "peak LIST requests per second by the replicas": "{} (at {:.0f} s)".format(
            *_at(checker.peak_rate(events, "list"), wall0)
        ),
        "Nodes / Services at the end": f"{len(nodes)} / {len(services) - 1}",
    }
    evidence = wrongful + ready_deleted + leaked + duplicated + routes + stuck + wrong
    report.findings = [f.line(wall0) for f in sorted(evidence, key=lambda f: f.at)]
    report.findings += [f"not converged: {p}" for p in problems[:30]]
    report.findings += [f"(info) {f.line(wall0)}" for f in rejected[:30]]
    report.info["fault schedule"] = "; ".join(planmod.schedule_lines(plan.actions))
    report.fault_log = [f"[{at - wall0:8.1f}s] {what}" for at, _, what in cluster.fault_log]
    return report


def _at(rate: tuple[int, float], wall0: float) -> tuple[int, float]:
    return rate[0], max(0.0, rate[1] - wall0)


def _write(report: checker.Report, out: Path, seed: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = out / f"{stamp}-seed{seed}"
    text = f"# Chaos run {stamp}\n\n{report.table()}\n"
    if report.findings:
        text += "\n## Findings\n\n" + "\n".join(f"- {line}" for line in report.findings) + "\n"
    if report.fault_log:
        text += "\n## Fault log\n\n" + "\n".join(f"- {line}" for line in report.fault_log) + "\n"
    base.with_suffix(".md").write_text(text)
    base.with_suffix(".json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return base.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    args = _parse(argv)
    try:
        planmod.parse_faults(args.faults)
    except ValueError as exc:
        print(f"python -m chaos: {exc}", file=sys.stderr)
        return 2
    if args.print_plan:
        for action in planmod.make_plan(_settings(args)).actions:
            print(action.describe())
        return 0
    report = run(args)
    path = _write(report, args.out, args.seed)
    print(report.table())
    for line in report.findings[:60]:
        print(line)
    print(f"results: {path}")
    return 0 if report.ok else 1
