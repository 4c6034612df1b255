"""CPU per apiserver request of ccm's client against client-go's, the cost every Node pays twice.

``python -m bench.clientcost [--nodes 1000] [--rounds 2] [--loops asyncio,uvloop]`` starts its own
control plane and, per round and variant, fresh kubelet-shaped Nodes; then one process sends the
two merge patches Node initialisation needs for each of them (Node: label, providerID, taint
removal; nodes/status: addresses) from 16 concurrent workers with no client-side limit:

* ``ccm/<loop>``: :class:`ccm.kube.client.KubeClient` (ccm's transport, JSON, decoded responses)
  on the given event loop, in a fresh interpreter; CPU from its own ``time.process_time()``, the
  patch phase alone and with the LIST before it;
* ``client-go``: ``upstream-ccm raw-patch`` (Go, client-go, JSON), CPU of the whole process
  (start, LIST, patches) from ``getrusage(RUSAGE_CHILDREN)``.

Wall-clock rates on a shared machine are noise; CPU per request is the figure. Results go to
``bench/results/<stamp>-clientcost.json`` and the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import upstream
from bench.curve import NO_APF
from bench.workload import LABEL, RESULTS, Api, create_nodes, delete_nodes
from ccm.testing.controlplane import ControlPlane

WORKERS = 16


async def _patch_all(kubeconfig: str, selector: str) -> dict[str, float]:
    from ccm.kube import client as kclient

    kube = await kclient.KubeClient.connect(kubeconfig=kubeconfig, qps=1e9, burst=10**9)
    nodes = kclient.Resource("", "v1", "nodes", "Node", namespaced=False)
    started_cpu = time.process_time()
    items, _ = await kube.list_all(nodes, label_selector=selector, page_size=500)
    names = [item["metadata"]["name"] for item in items]
    patch_cpu, patch_wall = time.process_time(), time.monotonic()
    work: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        work.put_nowait(name)

    async def worker() -> None:
        while not work.empty():
            name = work.get_nowait()
            h = zlib.crc32(name.encode())
            await kube.patch(
                nodes,
                name,
                {
                    "metadata": {"labels": {"node.kubernetes.io/instance-type": "raw"}},
                    "spec": {"providerID": f"fake://{name}", "taints": None},
                },
                patch_type="merge",
            )
            address = f"10.{(h >> 16) & 0xFF}.{(h >> 8) & 0xFF}.{h & 0xFF}"
            await kube.patch(
                nodes,
                name,
                {
                    "status": {
                        "addresses": [
                            {"type": "InternalIP", "address": address},
                            {"type": "Hostname", "address": name},
                        ]
                    }
                },
                subresource="status",
                patch_type="merge",
            )

    async with asyncio.TaskGroup() as tg:
        for i in range(WORKERS):
            tg.create_task(worker(), name=f"clientcost-worker-{i}")
    done_cpu, done_wall = time.process_time(), time.monotonic()
    await kube.aclose()
    return {
        "nodes": len(names),
        "requests": 2 * len(names),
        "cpu_s": round(done_cpu - started_cpu, 3),
        "patch_cpu_s": round(done_cpu - patch_cpu, 3),
        "seconds": round(done_wall - patch_wall, 2),
    }


def _worker_main(kubeconfig: str, selector: str, loop: str) -> int:
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(json.dumps(asyncio.run(_patch_all(kubeconfig, selector))))
    return 0


def _run_ccm(cp: ControlPlane, selector: str, loop: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.clientcost"),
            *("--worker", str(cp.kubeconfig_path), selector, "--loops", loop),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["us_per_request"] = round(1e6 * result["patch_cpu_s"] / max(1, result["requests"]))
    return result


def _run_go(cp: ControlPlane, selector: str) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            *(str(upstream.build()), "raw-patch", f"--kubeconfig={cp.kubeconfig_path}"),
            *(f"--selector={selector}", f"--workers={WORKERS}", "--writes=2"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = json.loads(out.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    requests = 2 * int(run["nodes"])
    return {
        "nodes": run["nodes"],
        "requests": requests,
        "cpu_s": round(cpu, 3),
        "seconds": round(run["seconds"], 2),
        "us_per_request": round(1e6 * cpu / max(1, requests)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.clientcost", description=__doc__.split("\n")[0]
    )
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--loops", default="asyncio,uvloop", help="ccm variants: asyncio, uvloop")
    p.add_argument("--no-go", action="store_true", help="skip the client-go variant")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--worker", nargs=2, metavar=("KUBECONFIG", "SELECTOR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kubeconfig, selector = args.worker
        return _worker_main(kubeconfig, selector, args.loops)
    variants = [f"ccm/{loop}" for loop in args.loops.split(",")]
    if not args.no_go:
        variants.append("client-go")
        upstream.build()
    runs: list[dict[str, Any]] = []
    with ControlPlane(extra_apiserver_args=NO_APF, audit_policy=None) as cp, Api(cp) as api:
        for round_ in range(args.rounds):
            for variant in variants:
                tag = f"c{int(time.time() * 1000) % 10**9:x}"
                create_nodes(api, tag, args.nodes)
                selector = f"{LABEL}={tag}"
                if variant == "client-go":
                    r = _run_go(cp, selector)
                else:
                    r = _run_ccm(cp, selector, variant.split("/", 1)[1])
                delete_nodes(api, tag)
                r.update(variant=variant, round=round_)
                print(f"bench: clientcost {json.dumps(r)}", file=sys.stderr, flush=True)
                runs.append(r)
    lines = [
        "| client | round | requests | CPU s | µs CPU per request | s (wall, noisy) |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['variant']} | {r['round']} | {r['requests']} "
            f"| {r.get('patch_cpu_s', r['cpu_s'])} "
            f"| {r['us_per_request']} | {r['seconds']} |"
        )
    table = "\n".join(lines) + "\n"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{stamp}-clientcost"
    doc = {"command": "python -m bench.clientcost " + " ".join(sys.argv[1:]), "runs": runs}
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    base.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
