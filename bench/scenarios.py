"""The bench's scenarios: Node initialisation, the tight client, LoadBalancer convergence and
leader hand-over, each against one side."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench import upstream
from bench.metrics import LagProbe, StartupProbe, event_loop_lag, proc_stats
from bench.sides import Side
from bench.workload import (
    LABEL,
    Api,
    create_nodes,
    delete_nodes,
    lease_holder,
    parallel,
    still_tainted,
    uninitialized,
)
from ccm.testing.controlplane import ControlPlane


def node_init(
    api: Api,
    side: Side,
    settings: dict[str, str],
    *,
    nodes: int,
    label: str,
    timeout: float,
    profile: str | None = None,
    leader_lease: str | None = None,
    apiserver_pprof: float = 0.0,
) -> dict[str, Any]:
    """Fresh tainted Nodes, then the side; until every Node is initialised. With
    ``leader_lease`` the side runs with leader election on that Lease and the result also holds
    its start-up milestones (``startup``: Lease held, first Node initialised). With
    ``apiserver_pprof`` seconds, kube-apiserver's CPU profile over the first that many seconds
    of the run is saved in the side's work directory (``apiserver_profile``)."""
    tag = f"b{int(time.time() * 1000) % 10**9:x}"
    _, create_s = create_nodes(api, tag, nodes)
    before = api.counters()
    cp_before = control_plane_cpu(api.cp)
    curve: list[tuple[float, int]] = []
    poll = 0.25 if nodes <= 500 else 0.5
    result: dict[str, Any] = {
        "side": side.name,
        "settings_label": label,
        "settings": settings,
        "nodes": nodes,
        "create_seconds": round(create_s, 2),
    }
    with side.run(
        settings, log_name=f"{side.name}-{label}-{tag}", leader_lease=leader_lease
    ) as proc:
        started = time.monotonic()
        spy = None
        startup = None
        if leader_lease:
            startup = StartupProbe(api, lease=leader_lease, tag=tag, started=started, pid=proc.pid)
            startup.start()
        # Both sides answer the same probe: its CPU cost is on both bills.
        probe = LagProbe(side.port)
        if probe is not None:
            probe.start()
        pprof = None
        if apiserver_pprof:
            path = side.work / f"apiserver-{side.name}-{label}-n{nodes}-{tag}.pprof"
            pprof = ApiserverProfile(api, apiserver_pprof, path)
            pprof.start()
            result["apiserver_profile"] = str(path)
        if profile and side.name == "ccm":
            out = side.work / f"ccm-{label}-n{nodes}-{tag}.stacks.txt"
            spy = subprocess.Popen(
                [
                    profile,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "200",
                    "--gil",  # only the thread holding the GIL: CPU, not waits in epoll/send
                    "--format",
                    "raw",
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result["profile"] = str(out)
        left = nodes
        while left and time.monotonic() - started < timeout:
            if proc.poll() is not None:
                result["error"] = f"exited with {proc.returncode}"
                break
            left = uninitialized(api, tag)
            curve.append((round(time.monotonic() - started, 3), nodes - left))
            if left:
                time.sleep(poll)
        done = time.monotonic() - started
        # Throughput counts from the last poll that saw no initialised Node (process start-up and
        # informer sync excluded, to the poll resolution).
        idle_until = max((t for t, n in curve if n == 0), default=0.0)
        result["seconds_to_all"] = round(done, 2) if not left else None
        result["initialized"] = nodes - left
        if not left and done > idle_until:
            result["throughput_nodes_per_s"] = round(nodes / (done - idle_until), 1)
        if probe is not None:
            probe.stop.set()
            probe.join(timeout=10)
            result["healthz_rtt"] = probe.summary()
            if side.name == "ccm" and side.metrics_token:
                result["event_loop_lag"] = event_loop_lag(side.port, side.metrics_token)
        if startup is not None:
            startup.stop.set()
            startup.join(timeout=10)
            result["startup"] = startup.summary()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        if pprof is not None:
            pprof.join(timeout=apiserver_pprof + 60)
        time.sleep(3.0)  # settle: events flushed, informers idle
        result["tainted_after"] = still_tainted(api, tag)
        # Writes, every request of the run by verb (the harness's progress LISTs included, each
        # side polled at the same rate), 429s and the watches the apiserver closed because the
        # side fell behind reading them.
        result.update(api.counters().since(before))
        writes = result["apiserver_writes"]
        node_writes = sum(v for k, v in writes.items() if k.split(" ")[1].startswith("nodes"))
        event_writes = sum(v for k, v in writes.items() if k.split(" ")[1].startswith("events"))
        result["node_writes_per_node"] = round(node_writes / max(1, nodes - left), 2)
        result["event_writes_per_node"] = round(event_writes / max(1, nodes - left), 2)
        if proc.poll() is None:
            result["idle"] = proc_stats(proc.pid)
        # What serving this side cost kube-apiserver + etcd (the harness's polls included, the
        # same for both sides): JSON against upstream's protobuf shows here.
        result["control_plane_cpu_s"] = round(control_plane_cpu(api.cp) - cp_before, 2)
    result["curve"] = curve
    delete_nodes(api, tag)
    if leader_lease:
        api.request(
            "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{leader_lease}"
        )
    return result


class ApiserverProfile(threading.Thread):
    """kube-apiserver's own CPU profile (``/debug/pprof/profile``, Go's sampling profiler, on by
    default) over ``seconds``, written to ``path``; read it with ``go tool pprof -top``."""

    def __init__(self, api: Api, seconds: float, path: Path) -> None:
        super().__init__(daemon=True)
        self.api, self.seconds, self.path = api, seconds, path

    def run(self) -> None:
        status, raw = self.api.request(
            "GET", f"/debug/pprof/profile?seconds={int(self.seconds)}", accept="*/*"
        )
        if status == 200:
            self.path.write_bytes(raw)


def control_plane_cpu(cp: ControlPlane) -> float:
    """CPU seconds kube-apiserver and etcd have used so far."""
    return sum(proc_stats(pid)["cpu_s"] for pid in cp.pids)


def raw_patch(api: Api, cp: ControlPlane, nodes: int, workers: int = 16) -> dict[str, Any]:
    """The tight client's rate (``upstream-ccm raw-patch``: Go, client-go, no client-side limit,
    ``workers`` goroutines): the two merge patches node initialisation needs per Node, then one
    patch per Node for reference, each on fresh kubelet-shaped Nodes."""
    binary = upstream.build()
    result: dict[str, Any] = {"nodes": nodes, "workers": workers}
    for writes in (2, 1):
        tag = f"r{int(time.time() * 1000) % 10**9:x}"
        create_nodes(api, tag, nodes)
        out = subprocess.run(
            [
                str(binary),
                "raw-patch",
                f"--kubeconfig={cp.kubeconfig_path}",
                f"--selector={LABEL}={tag}",
                f"--workers={workers}",
                f"--writes={writes}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        delete_nodes(api, tag)
        run = json.loads(out.stdout)
        result[f"writes{writes}"] = {
            "seconds": round(run["seconds"], 2),
            "nodes_per_s": round(run["nodes_per_s"], 1),
            "failed": run["failed"],
        }
    result["nodes_per_s"] = result["writes2"]["nodes_per_s"]
    return result


def lb_convergence(
    api: Api,
    side: Side,
    *,
    services: int,
    label: str,
    timeout: float,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``services`` LoadBalancer Services in a fresh namespace; seconds from process start until
    every one has an ingress in its status (the side at its defaults unless ``settings``)."""
    namespace = f"lb-{side.name}-{int(time.time() * 1000) % 10**9:x}"
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})

    def one(i: int) -> None:
        body = {
            "metadata": {"name": f"lb-{i:05d}"},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
        }
        api.json("POST", f"/api/v1/namespaces/{namespace}/services", body)

    parallel(list(range(services)), one)
    result: dict[str, Any] = {"side": side.name, "settings_label": label, "services": services}
    curve: list[tuple[float, int]] = []
    before = api.counters()
    cp_before = control_plane_cpu(api.cp)
    # Each poll reads every Service of the run (~0.75 KiB of JSON each) on the same 2 cores as
    # the side: every 0.25 s at 20,000 Services that is ~60 MB/s for the apiserver to encode and
    # this process to decode. The interval grows with the count (0.25 s to 1,000 Services, 2.5 s
    # at 20,000) and the list comes from the watch cache (resourceVersion=0).
    poll = max(0.25, services / 8000)
    result["poll_s"] = poll
    with side.run(settings or {}, log_name=f"{side.name}-lb-{namespace}") as proc:
        started = time.monotonic()
        done = 0
        while done < services and time.monotonic() - started < timeout and proc.poll() is None:
            items = api.json("GET", f"/api/v1/namespaces/{namespace}/services?resourceVersion=0")[
                "items"
            ]
            done = sum(
                1 for x in items if (x.get("status", {}).get("loadBalancer") or {}).get("ingress")
            )
            curve.append((round(time.monotonic() - started, 3), done))
            if done < services:
                time.sleep(poll)
        result["converged"] = done
        result["seconds_to_all"] = (
            round(time.monotonic() - started, 2) if done == services else None
        )
        if side.name == "ccm" and side.metrics_token:
            result["event_loop_lag"] = event_loop_lag(side.port, side.metrics_token)
        time.sleep(3.0)  # settle: events flushed
        result.update(api.counters().since(before))
        writes = result["apiserver_writes"]
        result["writes_per_service"] = round(
            sum(v for k, v in writes.items() if k.split(" ")[1].startswith("services"))
            / max(1, done),
            2,
        )
        result["event_writes_per_service"] = round(
            sum(v for k, v in writes.items() if k.split(" ")[1].startswith("events"))
            / max(1, done),
            2,
        )
        if proc.poll() is None:
            result["idle"] = proc_stats(proc.pid)
        result["control_plane_cpu_s"] = round(control_plane_cpu(api.cp) - cp_before, 2)
    result["curve"] = curve
    # Nothing deletes a namespace's contents here (no kube-controller-manager), and a Service the
    # side left with its finalizer would be work for the next side: strip and delete each.
    base = f"/api/v1/namespaces/{namespace}/services"

    def forget(i: int) -> None:
        api.request(
            "PATCH",
            f"{base}/lb-{i:05d}",
            {"metadata": {"finalizers": None}},
            content_type="application/merge-patch+json",
        )
        api.request("DELETE", f"{base}/lb-{i:05d}")

    parallel(list(range(services)), forget)
    left = api.json("GET", base)["items"]
    if left:
        raise RuntimeError(f"{len(left)} Services left in {namespace}")
    api.request("DELETE", f"/api/v1/namespaces/{namespace}")
    return result


def handover(api: Api, side: Side, *, timeout: float = 45.0) -> dict[str, Any]:
    """Start replica a, wait until it holds the Lease, start standby b, let it settle, SIGTERM a;
    the seconds until the Lease names another holder."""
    lease = f"bench-{side.name}-{int(time.time()) % 100000}"
    result: dict[str, Any] = {"side": side.name}
    with side.run({}, log_name=f"{side.name}-ha-a", leader_lease=lease) as a:
        deadline = time.monotonic() + 60
        holder = ""
        while not holder and time.monotonic() < deadline:
            holder = lease_holder(api, lease)
            time.sleep(0.1)
        if not holder:
            return {**result, "error": "no leader after 60 s"}
        with side.run({}, log_name=f"{side.name}-ha-b", leader_lease=lease) as b:
            time.sleep(8.0)  # b started, synced and is retrying the Lease
            a.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            new = holder
            while time.monotonic() - signalled < timeout and b.poll() is None:
                new = lease_holder(api, lease)
                if new and new != holder:
                    break
                time.sleep(0.02)
            if new and new != holder:
                result["seconds"] = round(time.monotonic() - signalled, 3)
            else:
                result["error"] = f"standby did not take over within {timeout:.0f} s"
            with contextlib.suppress(subprocess.TimeoutExpired):
                result["leader_exit"] = a.wait(timeout=30)
    api.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}")
    return result
