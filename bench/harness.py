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
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import upstream
from ccm import errors, wellknown
from ccm.kube.blocking import BlockingClient
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import free_port

RESULTS = Path(__file__).resolve().parent / "results"
LABEL = "ccm-bench"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CONTROLLERS = "cloud-node-controller,service-lb-controller"
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}


# ------------------------------------------------------------------------------------------------
# A small admin client with one keep-alive connection per thread.
# ------------------------------------------------------------------------------------------------


class Api:
    def __init__(self, cp: ControlPlane) -> None:
        self.kube = BlockingClient(
            str(cp.kubeconfig_path), user_agent="ccm-bench", request_timeout=60
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kube.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            try:
                sent_type = content_type if payload is not None else None
                return self.kube.request(
                    method, path, payload, content_type=sent_type, accept=accept
                )
            except errors.KubeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, raw = self.request(method, path, body, **kw)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw)

    def write_counts(self) -> dict[str, float]:
        """apiserver_request_total write verbs summed per ``verb resource/subresource``."""
        status, raw = self.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics: {status}")
        counts: dict[str, float] = {}
        for line in raw.decode().splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if labels.get("verb") not in WRITE_VERBS:
                continue
            if labels.get("resource") not in ("nodes", "events", "services"):
                continue
            key = f"{labels['verb']} {labels['resource']}"
            if labels.get("subresource"):
                key += "/" + labels["subresource"]
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return counts


def diff_counts(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {
        k: int(v - before.get(k, 0.0)) for k, v in sorted(after.items()) if v - before.get(k, 0.0)
    }


# ------------------------------------------------------------------------------------------------
# Objects
# ------------------------------------------------------------------------------------------------


def kubelet_node(name: str, tag: str) -> dict[str, Any]:
    """A Node as a kubelet with --cloud-provider=external registers it (status included)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    images = [
        {
            "names": [
                f"registry.example.com/team-{i}/service-{i}@sha256:{i:064x}",
                f"registry.example.com/team-{i}/service-{i}:v1.{i}.0",
            ],
            "sizeBytes": 10_000_000 + i * 1_234_567,
        }
        for i in range(12)
    ]
    resources = {
        "cpu": "8",
        "memory": "32827784Ki",
        "pods": "110",
        "ephemeral-storage": "203056560Ki",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                LABEL: tag,
                wellknown.LABEL_HOSTNAME: name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "taints": [
                {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}
            ]
        },
        "status": {
            "addresses": [{"type": "Hostname", "address": name}],
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "capacity": resources,
            "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{abs(hash(name)):032x}"[:32],
                "systemUUID": f"{abs(hash(name + 'u')):032x}"[:32],
                "bootID": f"{abs(hash(name + 'b')):032x}"[:32],
                "kernelVersion": "6.8.0-1015-generic",
                "osImage": "Ubuntu 24.04.1 LTS",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.36.3",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": images,
        },
    }


def parallel(items: Sequence[Any], fn: Any, threads: int = 12) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items):
            pass
    return time.monotonic() - started


def create_nodes(api: Api, tag: str, count: int) -> tuple[list[str], float]:
    names = [f"{tag}-{i:05d}" for i in range(count)]

    def one(name: str) -> None:
        api.json("POST", "/api/v1/nodes?fieldManager=kubelet", kubelet_node(name, tag))

    return names, parallel(names, one)


def delete_nodes(api: Api, tag: str) -> None:
    selector = urllib.parse.quote(f"{LABEL}={tag}")
    api.request("DELETE", f"/api/v1/nodes?labelSelector={selector}")


def create_services(api: Api, namespace: str, count: int) -> float:
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})

    def one(i: int) -> None:
        body = {
            "metadata": {"name": f"svc-{i:05d}", "labels": {LABEL: namespace}},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
        api.json("POST", f"/api/v1/namespaces/{namespace}/services", body)

    return parallel(list(range(count)), one)


def uninitialized(api: Api, tag: str) -> int:
    selector = urllib.parse.quote(f"{LABEL}={tag},!{INSTANCE_TYPE_LABEL}")
    doc = api.json(
        "GET",
        f"/api/v1/nodes?labelSelector={selector}&resourceVersion=0",
        accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    return len(doc.get("items") or [])


def still_tainted(api: Api, tag: str) -> int:
    selector = urllib.parse.quote(f"{LABEL}={tag}")
    doc = api.json("GET", f"/api/v1/nodes?labelSelector={selector}")
    return sum(
        1
        for n in doc["items"]
        if any(t["key"] == wellknown.TAINT_UNINITIALIZED for t in n["spec"].get("taints") or [])
    )


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


def proc_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return {"rss_mib": round(rss / 1024, 1), "cpu_s": round(cpu, 2)}


class LagProbe(threading.Thread):
    """Round-trip times of ``GET /healthz`` on ccm over one keep-alive TLS connection, every
    50 ms: the handler runs on ccm's event loop, so this bounds the event-loop lag from above (it
    also includes the HTTP handling and this process's own scheduling on a busy machine)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPSConnection | None = None
        while not self.stop.wait(0.05):
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(
                        "127.0.0.1", self.port, context=ctx, timeout=5
                    )
                    conn.connect()
                t = time.monotonic()
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                self.samples.append(time.monotonic() - t)
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        ordered = sorted(self.samples)

        def q(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

        return {"n": len(ordered), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)}


def event_loop_lag(port: int, token: str) -> dict[str, Any]:
    """ccm's own ``ccm_event_loop_lag_seconds`` histogram (a sample every 100 ms since start):
    the sample count and the bucket bounds holding the median and the 99th percentile."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return {"error": str(exc)}
    finally:
        conn.close()
    if resp.status != 200:
        return {"error": f"/metrics: HTTP {resp.status}"}
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for line in body.splitlines():
        if line.startswith("ccm_event_loop_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("ccm_event_loop_lag_seconds_count "):
            count = float(line.rsplit(" ", 1)[1])
    if not count:
        return {"error": "no ccm_event_loop_lag_seconds samples"}
    buckets.sort()

    def bound(q: float) -> float:
        return next(le for le, n in buckets if n >= q * count)

    slow = count - next((n for le, n in buckets if le >= 0.05), count)
    return {
        "samples": int(count),
        "p50_le_ms": bound(0.5) * 1000,
        "p99_le_ms": bound(0.99) * 1000,
        "over_50ms": int(slow),
    }


class Side:
    """How to start one implementation."""

    def __init__(
        self,
        name: str,
        cp: ControlPlane,
        work: Path,
        latency: float,
        ensure: float | None = None,
        *,
        cloud_qps: float = 0.0,
        batch: bool = False,
    ) -> None:
        self.ensure = ensure
        self.cloud_qps = cloud_qps  # token bucket over all fake cloud calls (burst 1); 0: none
        self.batch = batch  # ccm only: the fake offers InstancesBatch
        self.name = name
        self.cp = cp
        self.work = work
        self.latency = latency
        self.port = 0
        self.metrics_token = ""

    def command(self, settings: dict[str, str], *, leader_lease: str | None = None) -> list[str]:
        common = [
            "--cloud-provider=fake",
            f"--kubeconfig={self.cp.kubeconfig_path}",
            f"--controllers={CONTROLLERS}",
            "--configure-cloud-routes=false",
            *[f"--{k}={v}" for k, v in settings.items()],
        ]
        if leader_lease:
            common += [
                "--leader-elect=true",
                f"--leader-elect-resource-name={leader_lease}",
                "--leader-elect-resource-namespace=kube-system",
            ]
        else:
            common.append("--leader-elect=false")
        if self.name == "ccm":
            self.port = free_port()
            config = self.work / "fake-cloud.yaml"
            config.write_text(
                json.dumps(
                    {
                        "capabilities": {
                            "routes": False,
                            "zones": False,
                            "instances": False,
                            "instancesBatch": self.batch,
                        },
                        "defaultInstance": {"instanceType": "fake.medium"},
                        "latency": {"*": self.latency}
                        | ({} if self.ensure is None else {"create": self.ensure}),
                        "recordCalls": False,
                        "loadBalancer": {"ipPool": "100.64.0.0/16"},
                    }
                    | ({"rateLimit": {"qps": self.cloud_qps, "burst": 1}} if self.cloud_qps else {})
                )
            )
            return [
                sys.executable,
                "-m",
                "ccm",
                *common,
                f"--cloud-config={config}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
            ]
        binary = upstream.build()
        return [
            str(binary),
            *common,
            f"--fake-latency={int(self.latency * 1000)}ms",
            *(
                []
                if self.ensure is None
                else [f"--fake-ensure-latency={int(self.ensure * 1000)}ms"]
            ),
            *([f"--fake-qps={self.cloud_qps}", "--fake-burst=1"] if self.cloud_qps else []),
            "--secure-port=0",
            "--webhook-secure-port=0",
        ]

    @contextlib.contextmanager
    def run(
        self, settings: dict[str, str], *, log_name: str, leader_lease: str | None = None
    ) -> Iterator[subprocess.Popen[bytes]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
        log = (self.work / f"{log_name}.log").open("wb")
        proc = subprocess.Popen(
            self.command(settings, leader_lease=leader_lease),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------


def node_init(
    api: Api,
    side: Side,
    settings: dict[str, str],
    *,
    nodes: int,
    label: str,
    timeout: float,
    profile: str | None = None,
) -> dict[str, Any]:
    tag = f"b{int(time.time() * 1000) % 10**9:x}"
    _, create_s = create_nodes(api, tag, nodes)
    before = api.write_counts()
    curve: list[tuple[float, int]] = []
    poll = 0.25 if nodes <= 500 else 0.5
    result: dict[str, Any] = {
        "side": side.name,
        "settings_label": label,
        "settings": settings,
        "nodes": nodes,
        "create_seconds": round(create_s, 2),
    }
    with side.run(settings, log_name=f"{side.name}-{label}-{tag}") as proc:
        started = time.monotonic()
        spy = None
        probe = LagProbe(side.port) if side.name == "ccm" else None
        if probe is not None:
            probe.start()
        if profile and side.name == "ccm":
            out = side.work / f"ccm-{label}-{tag}.speedscope.json"
            spy = subprocess.Popen(
                [
                    profile,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "50",
                    "--nonblocking",
                    "--format",
                    "speedscope",
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
            if side.metrics_token:
                result["event_loop_lag"] = event_loop_lag(side.port, side.metrics_token)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        time.sleep(3.0)  # settle: events flushed, informers idle
        result["tainted_after"] = still_tainted(api, tag)
        writes = diff_counts(api.write_counts(), before)
        result["apiserver_writes"] = writes
        node_writes = sum(v for k, v in writes.items() if k.split(" ")[1].startswith("nodes"))
        event_writes = sum(v for k, v in writes.items() if k.split(" ")[1].startswith("events"))
        result["node_writes_per_node"] = round(node_writes / max(1, nodes - left), 2)
        result["event_writes_per_node"] = round(event_writes / max(1, nodes - left), 2)
        if proc.poll() is None:
            result["idle"] = proc_stats(proc.pid)
    result["curve"] = curve
    delete_nodes(api, tag)
    return result


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
    api: Api, side: Side, *, services: int, label: str, timeout: float
) -> dict[str, Any]:
    """``services`` LoadBalancer Services in a fresh namespace; seconds from process start until
    every one has an ingress in its status."""
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
    with side.run({}, log_name=f"{side.name}-lb-{namespace}") as proc:
        started = time.monotonic()
        done = 0
        while done < services and time.monotonic() - started < timeout and proc.poll() is None:
            items = api.json("GET", f"/api/v1/namespaces/{namespace}/services")["items"]
            done = sum(
                1 for x in items if (x.get("status", {}).get("loadBalancer") or {}).get("ingress")
            )
            curve.append((round(time.monotonic() - started, 3), done))
            if done < services:
                time.sleep(0.25)
        result["converged"] = done
        result["seconds_to_all"] = (
            round(time.monotonic() - started, 2) if done == services else None
        )
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


def lease_holder(api: Api, name: str) -> str:
    status, raw = api.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"
    )
    if status != 200:
        return ""
    return str(json.loads(raw).get("spec", {}).get("holderIdentity") or "")


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


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Run {doc['started']} on {doc['machine']}; command `{doc['command']}`.",
        f"{doc['nodes']} Nodes, {doc['services']} Services cached, cloud latency "
        f"{doc['latency_ms']} ms per call"
        + (f", cloud API limited to {doc['cloud_qps']:g} calls/s" if doc.get("cloud_qps") else "")
        + f"; kube-apiserver {doc['apiserver']}.",
        "",
        "| run | side | s to all | Nodes/s | node writes/Node | event writes/Node "
        "| idle RSS MiB | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["node_init"]:
        idle = r.get("idle", {})
        lines.append(
            f"| {r['settings_label']} | {r['side']} | {r.get('seconds_to_all')} | "
            f"{r.get('throughput_nodes_per_s')} | {r.get('node_writes_per_node')} | "
            f"{r.get('event_writes_per_node')} | {idle.get('rss_mib')} | {idle.get('cpu_s')} |"
        )
    by = {(r["settings_label"], r["side"]): r for r in doc["node_init"]}
    lines += ["", "| figure | value | goal |", "|---|---|---|"]
    limited = bool(doc.get("cloud_qps"))  # the goals are set for an unlimited cloud API
    goals = (("equal", "≥ 1.0"), ("defaults", "—" if limited else "≥ 5"), ("batch", "—"))
    for label, goal in goals:
        c = by.get((label, "ccm"))
        u = by.get(("defaults" if label == "batch" else label, "upstream"))
        if c and u:
            lines.append(
                "| init throughput ccm/upstream, "
                + (
                    "ccm defaults with InstancesBatch / upstream defaults"
                    if label == "batch"
                    else f"{label} settings"
                )
                + " | "
                f"{_ratio(c.get('throughput_nodes_per_s'), u.get('throughput_nodes_per_s'))} | "
                f"{goal} |"
            )
    raw = doc.get("raw_patch")
    best = max(
        (r.get("throughput_nodes_per_s") or 0 for r in doc["node_init"] if r["side"] == "ccm"),
        default=0,
    )
    if raw:
        lines.append(
            f"| ccm rate / tight-client rate (Go, {raw['workers']} workers, the same 2 patches "
            f"per Node: {raw['nodes_per_s']} Nodes/s; 1 patch: "
            f"{raw['writes1']['nodes_per_s']}/s) | {_ratio(best, raw['nodes_per_s'])} | ≥ 0.8 |"
        )
    for label in ("equal", "defaults"):
        c = by.get((label, "ccm"))
        if c:
            total = (c.get("node_writes_per_node") or 0) + (c.get("event_writes_per_node") or 0)
            lines.append(
                f"| ccm apiserver writes per Node, {label} (Nodes + Events) | "
                f"{c.get('node_writes_per_node')} + {c.get('event_writes_per_node')} = "
                f"{total:.2f} | ≤ 2 |"
            )
    for label in ("equal", "defaults"):
        c, u = by.get((label, "ccm")), by.get((label, "upstream"))
        if c and u and c.get("idle") and u.get("idle"):
            crss, ursss = c["idle"]["rss_mib"], u["idle"]["rss_mib"]
            lines.append(
                f"| idle RSS ccm/upstream, {label} ({crss} / {ursss} MiB) | "
                f"{_ratio(crss, ursss)} | ≤ 1.0 |"
            )
    for h in doc.get("handover", []):
        lines.append(
            f"| leader SIGTERM → standby holds the Lease, {h['side']} | {h.get('seconds')} s "
            f"{h.get('note', '') or h.get('error', '')} | < 2 s |"
        )
    for r in doc["node_init"]:
        rtt = r.get("healthz_rtt")
        if rtt:
            lines.append(
                f"| ccm /healthz round trip during init ({r['settings_label']}; bounds the "
                f"event-loop lag): p50 {rtt['p50_ms']} ms, p99 | {rtt['p99_ms']} ms "
                f"(max {rtt['max_ms']}) | lag p99 < 50 ms |"
            )
    for r in doc["node_init"]:
        lag = r.get("event_loop_lag")
        if lag and "samples" in lag:
            lines.append(
                f"| ccm event-loop lag during init ({r['settings_label']}; "
                f"`ccm_event_loop_lag_seconds`, {lag['samples']} samples, {lag['over_50ms']} "
                f"over 50 ms): p50 ≤ {lag['p50_le_ms']:g} ms, p99 | ≤ {lag['p99_le_ms']:g} ms "
                f"| < 50 ms |"
            )
    lbs = {r["side"]: r for r in doc.get("lb", [])}
    if lbs:
        c, u = lbs.get("ccm", {}), lbs.get("upstream", {})
        lines.append(
            f"| LB convergence, {doc['lb'][0]['services']} Services, defaults, upstream/ccm "
            f"({u.get('seconds_to_all')} s / {c.get('seconds_to_all')} s) | "
            f"{_ratio(u.get('seconds_to_all'), c.get('seconds_to_all'))} | ≥ 10 |"
        )
    else:
        lines.append("| LB convergence | not measured | ≥ 10 |")
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> bool:
    if not any(r["curve"] for r in doc["node_init"]):
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in doc["node_init"]:
        if r["curve"]:
            t, n = zip(*r["curve"], strict=True)
            ax.plot(t, n, label=f"{r['side']} ({r['settings_label']})")
    ax.set_xlabel("seconds since the CCM process started")
    ax.set_ylabel("Nodes initialised")
    ax.set_title(f"{doc['nodes']} tainted Nodes, {doc['latency_ms']} ms per cloud call")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
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
        "--py-spy", action="store_true", help="profile the ccm runs with py-spy (speedscope JSON)"
    )
    p.add_argument("--build-only", action="store_true", help="build the upstream CCM and exit")
    args = p.parse_args(argv)
    if args.build_only:
        print(upstream.build())
        return 0
    if args.quick:
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
        "sides": sides,
        "node_init": [],
    }
    work = Path(tempfile.mkdtemp(prefix="ccm-bench-"))
    doc["work_dir"] = str(work)
    extra = [
        "--enable-priority-and-fairness=false",
        "--max-requests-inflight=0",
        "--max-mutating-requests-inflight=0",
    ]
    with ControlPlane(extra_apiserver_args=extra, audit_policy=None) as cp, Api(cp) as api:
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
                )
                print(
                    f"bench: node-init {label:8} {name:8} "
                    + json.dumps({k: v for k, v in r.items() if k != "curve"}),
                    file=sys.stderr,
                    flush=True,
                )
                doc["node_init"].append(r)
        if "raw-patch" in scenarios and "upstream" in sides:
            doc["raw_patch"] = raw_patch(api, cp, args.nodes)
            print(f"bench: raw-patch {doc['raw_patch']}", file=sys.stderr, flush=True)
        if "lb" in scenarios:
            doc["lb"] = []
            for name in sides:
                side = Side(name, cp, work, args.latency_ms / 1000, ensure=args.ensure_ms / 1000)
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
                h = handover(api, Side(name, cp, work, args.latency_ms / 1000))
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
