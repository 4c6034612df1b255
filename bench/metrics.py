"""What the bench measures of a running side: RSS and CPU from ``/proc``, ``/healthz`` round
trips, ccm's own event-loop lag histogram from ``/metrics``, and the start-up milestones."""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import threading
import time
from typing import Any

from bench.workload import Api, any_initialized, lease_holder


def proc_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
    return {
        "rss_mib": round(rss / 1024, 1),
        "cpu_s": round(user + system, 2),
        "cpu_user_s": round(user, 2),
        "cpu_sys_s": round(system, 2),
    }


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


class StartupProbe(threading.Thread):
    """Start-up milestones of a side started with leader election, polled every 50 ms from
    ``started`` (the process start, ``time.monotonic()``): seconds until the Lease names a holder
    and until the first of the run's Nodes carries the instance-type label, and the process's CPU
    seconds then (start-up: interpreter, imports, informer sync). Stops polling a
    milestone once seen, and stops altogether at both or at :attr:`stop`."""

    def __init__(self, api: Api, *, lease: str, tag: str, started: float, pid: int) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.pid = pid
        self.first_node_cpu_s: float | None = None
        self.lease = lease
        self.tag = tag
        self.started = started
        self.lease_s: float | None = None
        self.first_node_s: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while (self.lease_s is None or self.first_node_s is None) and not self.stop.wait(0.05):
            try:
                if self.lease_s is None and lease_holder(self.api, self.lease):
                    self.lease_s = round(time.monotonic() - self.started, 3)
                if self.first_node_s is None and any_initialized(self.api, self.tag):
                    self.first_node_s = round(time.monotonic() - self.started, 3)
                    with contextlib.suppress(OSError):
                        self.first_node_cpu_s = proc_stats(self.pid)["cpu_s"]
            except (OSError, http.client.HTTPException, RuntimeError):
                continue

    def summary(self) -> dict[str, float | None]:
        return {
            "lease_held_s": self.lease_s,
            "first_node_s": self.first_node_s,
            "first_node_cpu_s": self.first_node_cpu_s,
        }
