"""The cost curve: ccm and upstream at growing sizes in one run, per-object figures against N.

``python -m bench --curve [--curve-nodes 1000,5000,20000] [--curve-lbs 1000,5000] [--apf]``
(``make bench BENCH_ARGS=--curve``). For every size and side, fresh Nodes are initialised with
the equal settings (``--qps``/``--burst``/``--workers``) and leader election on (so the start-up
milestones are measured: process start → Lease held → first Node initialised); then, for every
LoadBalancer size, Services against the fake cloud (``--ensure-ms`` per ensure,
``--concurrent-service-syncs`` = ``--workers`` on both sides). Each point gives the time to
initialise all, CPU per object, RSS per 1,000 objects (idle, after the run), apiserver writes and
Events per object, ccm's event-loop lag p99, and the 429s the apiserver answered during the run.

``--apf`` leaves the apiserver's API Priority and Fairness on with its default limits and runs
both sides as ServiceAccount-like identities (not ``system:masters``, which APF exempts), so the
429s are what an in-cluster CCM would see. Results: ``bench/results/<stamp>-curve[-apf].{json,md,
png}`` and ``latest-curve.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.report import curve_markdown, curve_plot
from bench.scenarios import lb_convergence, node_init
from bench.sides import Side, ccm_identity
from bench.workload import Api
from ccm.testing.controlplane import ControlPlane

#: apiserver flags of the bench's usual runs: no API Priority and Fairness, no in-flight limits.
NO_APF = [
    "--enable-priority-and-fairness=false",
    "--max-requests-inflight=0",
    "--max-mutating-requests-inflight=0",
]


#: NodePorts for more LoadBalancer Services than the default range (30000-32767) holds.
NODE_PORTS = ["--service-node-port-range=10000-32767"]


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _node_point(r: dict[str, Any]) -> dict[str, Any]:
    n = r["nodes"]
    idle = r.get("idle") or {}
    lag = r.get("event_loop_lag") or {}
    throttled = r.get("throttled") or {}
    startup_cpu = (r.get("startup") or {}).get("first_node_cpu_s")
    return {
        "kind": "nodes",
        "side": r["side"],
        "n": n,
        "seconds_to_all": r.get("seconds_to_all"),
        "throughput_per_s": r.get("throughput_nodes_per_s"),
        "cpu_s": idle.get("cpu_s"),
        "cpu_ms_per_object": round(1000 * idle["cpu_s"] / n, 2) if idle else None,
        "startup_cpu_s": startup_cpu,
        "cpu_ms_per_object_after_startup": (
            round(1000 * (idle["cpu_s"] - startup_cpu) / n, 2)
            if idle and startup_cpu is not None
            else None
        ),
        "rss_mib": idle.get("rss_mib"),
        "rss_mib_per_1000": round(1000 * idle["rss_mib"] / n, 1) if idle else None,
        "writes_per_object": r.get("node_writes_per_node"),
        "events_per_object": r.get("event_writes_per_node"),
        "lag_p99_le_ms": lag.get("p99_le_ms"),
        "lag_over_50ms": lag.get("over_50ms"),
        "http_429": throttled.get("http_429", 0),
        "control_plane_cpu_ms_per_object": _per_object(r.get("control_plane_cpu_s"), n),
        "startup": r.get("startup") or {},
        "error": r.get("error"),
    }


def _lb_point(r: dict[str, Any]) -> dict[str, Any]:
    n = r["services"]
    idle = r.get("idle") or {}
    lag = r.get("event_loop_lag") or {}
    throttled = r.get("throttled") or {}
    return {
        "kind": "lb",
        "side": r["side"],
        "n": n,
        "seconds_to_all": r.get("seconds_to_all"),
        "cpu_s": idle.get("cpu_s"),
        "cpu_ms_per_object": round(1000 * idle["cpu_s"] / n, 2) if idle else None,
        "rss_mib": idle.get("rss_mib"),
        "rss_mib_per_1000": round(1000 * idle["rss_mib"] / n, 1) if idle else None,
        "writes_per_object": r.get("writes_per_service"),
        "events_per_object": r.get("event_writes_per_service"),
        "lag_p99_le_ms": lag.get("p99_le_ms"),
        "lag_over_50ms": lag.get("over_50ms"),
        "http_429": throttled.get("http_429", 0),
        "control_plane_cpu_ms_per_object": _per_object(r.get("control_plane_cpu_s"), n),
    }


def _per_object(seconds: float | None, n: int) -> float | None:
    return None if seconds is None else round(1000 * seconds / n, 2)


def _failed_point(kind: str, side: str, n: int, exc: Exception) -> dict[str, Any]:
    """A point whose run raised: no figures, the error kept, the rest of the curve goes on."""
    keys = [
        *("seconds_to_all", "cpu_s", "cpu_ms_per_object", "rss_mib", "rss_mib_per_1000"),
        *("writes_per_object", "events_per_object", "lag_p99_le_ms", "http_429"),
    ]
    return {"kind": kind, "side": side, "n": n, **dict.fromkeys(keys), "error": str(exc)[:500]}


def _log(kind: str, r: dict[str, Any]) -> None:
    shown = {k: v for k, v in r.items() if k not in ("curve", "apiserver_writes", "settings")}
    print(f"bench: curve {kind} {json.dumps(shown)}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, sides: list[str]) -> int:
    """Run the curve for ``sides``; write the results; 1 when a point did not finish."""
    nodes = _sizes(args.curve_nodes)
    lbs = _sizes(args.curve_lbs)
    equal = {
        "kube-api-qps": str(args.qps),
        "kube-api-burst": str(args.burst),
        "concurrent-node-syncs": str(args.workers),
    }
    lb_settings = {**equal, "concurrent-service-syncs": str(args.workers)}
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc: dict[str, Any] = {
        "started": stamp,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "command": "python -m bench " + " ".join(args.argv),
        "apf": args.apf,
        "latency_ms": args.latency_ms,
        "ensure_ms": args.ensure_ms,
        "equal_settings": equal,
        "ccm_loop": args.ccm_loop,
        "sides": sides,
        "points": [],
    }
    work = Path(tempfile.mkdtemp(prefix="ccm-bench-curve-"))
    doc["work_dir"] = str(work)
    extra = NODE_PORTS + ([] if args.apf else NO_APF)
    with ControlPlane(extra_apiserver_args=extra, audit_policy=None) as cp, Api(cp) as api:
        doc["apiserver"] = json.loads(cp.request("GET", "/version")[1]).get("gitVersion")
        token = cp.metrics_reader_token("bench-metrics-reader")
        kubeconfig = ccm_identity(cp) if args.apf else None
        for n in nodes:
            for name in sides:
                side = Side(
                    name,
                    cp,
                    work,
                    args.latency_ms / 1000,
                    kubeconfig=kubeconfig,
                    loop=args.ccm_loop,
                )
                side.metrics_token = token
                try:
                    r = node_init(
                        api,
                        side,
                        equal,
                        nodes=n,
                        label=f"curve-n{n}",
                        timeout=args.timeout,
                        leader_lease=f"bench-curve-{name}-{n}",
                    )
                except Exception as exc:  # one failed point must not lose the others
                    doc["points"].append(_failed_point("nodes", name, n, exc))
                    print(f"bench: curve nodes {name} {n}: {exc}", file=sys.stderr, flush=True)
                    continue
                _log("nodes", r)
                doc["points"].append(_node_point(r))
        for n in lbs:
            for name in sides:
                side = Side(
                    name,
                    cp,
                    work,
                    args.latency_ms / 1000,
                    ensure=args.ensure_ms / 1000,
                    kubeconfig=kubeconfig,
                    loop=args.ccm_loop,
                )
                side.metrics_token = token
                try:
                    r = lb_convergence(
                        api,
                        side,
                        services=n,
                        label=f"curve-lb{n}",
                        timeout=args.timeout,
                        settings=lb_settings,
                    )
                except Exception as exc:  # one failed point must not lose the others
                    doc["points"].append(_failed_point("lb", name, n, exc))
                    print(f"bench: curve lb {name} {n}: {exc}", file=sys.stderr, flush=True)
                    continue
                _log("lb", r)
                doc["points"].append(_lb_point(r))
    return write(doc, args.out, quick=args.quick)


def write(doc: dict[str, Any], out: Path, *, quick: bool = False) -> int:
    """Write a curve's JSON, table and plot; 1 when a point did not finish."""
    out.mkdir(parents=True, exist_ok=True)
    stamp, apf = doc["started"], doc["apf"]
    base = out / f"{stamp}-{'quick-' if quick else ''}curve{'-apf' if apf else ''}"
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    table = curve_markdown(doc)
    base.with_suffix(".md").write_text(table)
    if not quick:
        (out / "latest-curve.md").write_text(table)
    plotted = curve_plot(doc, base.with_suffix(".png"))
    print(table)
    print(f"bench: results in {base}.json/.md{' /.png' if plotted else ''}", file=sys.stderr)
    return 1 if any(p["seconds_to_all"] is None for p in doc["points"]) else 0
