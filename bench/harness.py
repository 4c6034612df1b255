"""The benchmark harness: ccm vs the upstream Go CCM on one real control plane (issue 8).

``python -m bench [--quick] [--nodes N] [--services N] [--scenarios ...]``; results go to
``bench/results/<stamp>-<mode>.json`` plus ``<stamp>-<mode>.md`` (and ``latest.md``) and PNG plots
when matplotlib is installed (``pip install -e '.[bench]'``).

Scenarios
---------
``node-init``  N kubelet-shaped tainted Nodes (fresh ones per run), then the CCM is started and we
               time until every Node is initialised (instance-type label set and taint gone).
               Per run: seconds from process start, throughput (Nodes/s between the first and the
               last initialised Node), apiserver writes per Node (from the apiserver's own
               ``apiserver_request_total``, Nodes and Events), RSS and CPU seconds of the process.
               Run for ccm and upstream with equal settings (same QPS/burst/workers) and with each
               side's defaults. ``--services`` ClusterIP Services exist during the run, so the idle
               RSS measured after the run is "N Nodes + M Services cached".
``raw-patch``  The limit: a tight client (threads with keep-alive connections, this process)
               removes the taint of N Nodes with one merge patch each; its rate.
``handover``   Two replicas with leader election on one Lease; SIGTERM the leader; seconds until the
               Lease names the standby.

The fake clouds: ccm's ``--cloud-provider=fake`` with ``defaultInstance`` and ``latency`` from a
cloud-config file; upstream's is ``bench/upstream/main.go`` with ``--fake-latency``; the same model
(a sleep per call, optional shared token bucket) and the same answers (providerID, instance type,
InternalIP + Hostname addresses, which differ from the registered ones, so both sides also patch
the Node status).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import curve, upstream
from bench.profile import keep as keep_profile
from bench.profile import keep_apiserver
from bench.report import markdown, plot
from bench.scenarios import handover, lb_convergence, node_init, raw_patch
from bench.sides import Side, ccm_identity
from bench.workload import RESULTS, Api, create_services
from ccm.testing.controlplane import ControlPlane


def main(argv: Sequence[str] | None = None) -> int:
    # The harness decodes whole lists of Nodes every poll; with the cyclic GC on it spent ~29 s of
    # CPU in full collections during one 20,000-Node run: CPU the 2 cores owe to the sides being
    # measured. Its garbage is acyclic; reference counting frees it.
    gc.disable()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 Nodes, equal settings, both sides")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--services", type=int, default=None, help="default: --nodes")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--qps", type=float, default=100.0, help="equal settings: --kube-api-qps")
    p.add_argument("--burst", type=int, default=200, help="equal settings: --kube-api-burst")
    p.add_argument(
        "--workers", type=int, default=10, help="equal settings: --concurrent-node-syncs"
    )
    p.add_argument(
        "--scenarios",
        default="node-init,raw-patch,handover",
        help="comma list of node-init, raw-patch, handover, lb",
    )
    p.add_argument("--sides", default="ccm,upstream")
    p.add_argument("--lb-services", type=int, default=100, help="lb scenario: Services")
    p.add_argument("--ensure-ms", type=float, default=500.0, help="lb scenario: ensure latency")
    p.add_argument(
        "--settings",
        default="equal,defaults",
        help="node-init runs: equal, defaults, batch (ccm at its defaults with the fake's "
        "InstancesBatch; compared with upstream's defaults run)",
    )
    p.add_argument(
        "--cloud-qps",
        type=float,
        default=0.0,
        help="rate limit of the fake cloud API on both sides (calls/s, burst 1; 0: none)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="per node-init run")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--py-spy",
        action="store_true",
        help="profile the ccm node-init runs with py-spy (pip install py-spy): collapsed stacks, "
        "a top-functions summary and an SVG flame graph in --out",
    )
    p.add_argument(
        "--apiserver-pprof",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="save kube-apiserver's CPU profile over the first SECONDS of each node-init run "
        "(Go pprof; a -top summary beside it when go is on PATH)",
    )
    p.add_argument("--build-only", action="store_true", help="build the upstream CCM and exit")
    p.add_argument(
        "--curve",
        action="store_true",
        help="the cost curve: node-init at each --curve-nodes size and LoadBalancer convergence "
        "at each --curve-lbs size, both sides, equal settings (bench/curve.py)",
    )
    p.add_argument("--curve-nodes", default="1000,5000,20000", help="curve: Node counts")
    p.add_argument("--curve-lbs", default="1000,5000", help="curve: LoadBalancer Service counts")
    p.add_argument(
        "--apf",
        action="store_true",
        help="leave the apiserver's API Priority and Fairness on (default limits) and run the "
        "sides as ServiceAccount identities; 429s are counted per run",
    )
    p.add_argument(
        "--ccm-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop ccm runs on (uvloop: pip install uvloop)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.build_only:
        print(upstream.build())
        return 0
    if args.quick and args.curve:
        args.curve_nodes, args.curve_lbs, args.timeout = "20,40", "10", 120.0
    elif args.quick:
        args.nodes, args.services, args.settings = 20, 20, "equal"
        args.scenarios = "node-init,raw-patch"
        args.timeout = 120.0
    services = args.nodes if args.services is None else args.services
    scenarios = set(args.scenarios.split(","))
    sides = args.sides.split(",")
    if args.quick and upstream.cached() is None and shutil.which("go") is None:
        sides = [s for s in sides if s != "upstream"]  # cannot build it here; ccm side only
    if "upstream" in sides:
        upstream.build()
    if args.curve:
        return curve.run(args, sides)
    equal = {
        "kube-api-qps": str(args.qps),
        "kube-api-burst": str(args.burst),
        "concurrent-node-syncs": str(args.workers),
    }
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    mode = "quick" if args.quick else f"n{args.nodes}"
    doc: dict[str, Any] = {
        "started": stamp,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "nodes": args.nodes,
        "services": services,
        "latency_ms": args.latency_ms,
        "cloud_qps": args.cloud_qps,
        "equal_settings": equal,
        "ccm_loop": args.ccm_loop,
        "apf": args.apf,
        "sides": sides,
        "node_init": [],
    }
    work = Path(tempfile.mkdtemp(prefix="ccm-bench-"))
    doc["work_dir"] = str(work)
    extra = [] if args.apf else curve.NO_APF
    with ControlPlane(extra_apiserver_args=extra, audit_policy=None) as cp, Api(cp) as api:
        kubeconfig = ccm_identity(cp) if args.apf else None
        doc["apiserver"] = json.loads(cp.request("GET", "/version")[1]).get("gitVersion")
        token = cp.metrics_reader_token("bench-metrics-reader")
        if services and "node-init" in scenarios:
            doc["services_create_seconds"] = round(create_services(api, "bench-svc", services), 2)
        for label in args.settings.split(","):
            for name in sides:
                if label == "batch" and name != "ccm":
                    continue  # upstream has no batch capability: compare with its defaults run
                side = Side(
                    name,
                    cp,
                    work,
                    args.latency_ms / 1000,
                    cloud_qps=args.cloud_qps,
                    batch=label == "batch",
                    kubeconfig=kubeconfig,
                    loop=args.ccm_loop,
                )
                side.metrics_token = token
                if "node-init" not in scenarios:
                    continue
                settings = equal if label == "equal" else {}
                r = node_init(
                    api,
                    side,
                    settings,
                    nodes=args.nodes,
                    label=label,
                    timeout=args.timeout,
                    profile=shutil.which("py-spy", path=str(Path(sys.executable).parent))
                    if args.py_spy
                    else None,
                    apiserver_pprof=args.apiserver_pprof,
                )
                print(
                    f"bench: node-init {label:8} {name:8} "
                    + json.dumps({k: v for k, v in r.items() if k != "curve"}),
                    file=sys.stderr,
                    flush=True,
                )
                doc["node_init"].append(r)
                if r.get("profile"):
                    r["profile"] = [str(p) for p in keep_profile(Path(r["profile"]), args.out)]
                if r.get("apiserver_profile"):
                    r["apiserver_profile"] = [
                        str(p) for p in keep_apiserver(Path(r["apiserver_profile"]), args.out)
                    ]
        if "raw-patch" in scenarios and "upstream" in sides:
            doc["raw_patch"] = raw_patch(api, cp, args.nodes)
            print(f"bench: raw-patch {doc['raw_patch']}", file=sys.stderr, flush=True)
        if "lb" in scenarios:
            doc["lb"] = []
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
                r = lb_convergence(
                    api, side, services=args.lb_services, label="defaults", timeout=args.timeout
                )
                print(
                    f"bench: lb {json.dumps({k: v for k, v in r.items() if k != 'curve'})}",
                    file=sys.stderr,
                    flush=True,
                )
                doc["lb"].append(r)
        if "handover" in scenarios:
            doc["handover"] = []
            for name in sides:
                side = Side(
                    name,
                    cp,
                    work,
                    args.latency_ms / 1000,
                    kubeconfig=kubeconfig,
                    loop=args.ccm_loop,
                )
                h = handover(api, side)
                print(f"bench: handover {h}", file=sys.stderr, flush=True)
                doc["handover"].append(h)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{stamp}-{mode}"
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    table = markdown(doc)
    base.with_suffix(".md").write_text(table)
    if not args.quick:
        (args.out / "latest.md").write_text(table)
    plotted = plot(doc, base.with_suffix(".png"))
    print(table)
    print(f"bench: results in {base}.json/.md{' /.png' if plotted else ''}", file=sys.stderr)
    failed = [r for r in doc["node_init"] if r.get("seconds_to_all") is None]
    return 1 if failed else 0
