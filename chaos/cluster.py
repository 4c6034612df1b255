"""The system under test of a chaos run, and the faults injected into it.

:class:`Cluster` owns the control plane, the ``ccm`` replicas, the fake cloud's files and the
simulated kubelets and users (its base, :class:`chaos.workload.Workload`). Faults on the cloud side
are state file writes and take effect at once; faults on the control plane and the replicas are
signals to their processes. Replicas that exit are restarted, as their Deployment would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ccm import errors
from ccm.kube.blocking import BlockingClient
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from ccm.testing.fake_cloud import FakeCloudState, FakeCloudStatus
from chaos import plan as planmod
from chaos.workload import Workload

__all__ = ["LEASE_NAME", "LEASE_NAMESPACE", "Cluster", "ReplicaSettings"]

_log = logging.getLogger("chaos")

LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "cloud-controller-manager"


class ReplicaSettings:
    """Flags of every replica; short periods so that a run sees many reconciliations."""

    lease_duration = 6.0
    renew_deadline = 4.0
    retry_period = 1.0
    cloud_call_timeout = 2.0
    restart_delay = 2.0  # a crashed or deposed replica comes back this much later

    def args(self) -> list[str]:
        return [
            "--cloud-provider=fake",
            "--leader-elect=true",
            f"--leader-elect-lease-duration={self.lease_duration}s",
            f"--leader-elect-renew-deadline={self.renew_deadline}s",
            f"--leader-elect-retry-period={self.retry_period}s",
            f"--leader-elect-resource-name={LEASE_NAME}",
            f"--leader-elect-resource-namespace={LEASE_NAMESPACE}",
            f"--cluster-cidr={planmod.CLUSTER_CIDR}",
            "--configure-cloud-routes=true",
            f"--cloud-call-timeout={self.cloud_call_timeout}s",
            "--node-monitor-period=2s",
            "--route-reconciliation-period=3s",
            "--node-status-update-frequency=10s",
            "-v",
            "2",
        ]


class Replica:
    def __init__(self, index: int, daemon: Daemon, user: str) -> None:
        self.index = index
        self.daemon = daemon
        self.user = user
        self.paused = False
        self.down_since: float | None = None
        self.restarts = 0
        self._identity: tuple[int, str] | None = None

    def identity(self) -> str:
        """The Lease holder identity of the current process ('' until it logged it)."""
        process = self.daemon.process
        if process is None:
            return ""
        if self._identity is None or self._identity[0] != process.pid:
            marker = "Leader election identity: "
            with contextlib.suppress(OSError), self.daemon.log_path.open(errors="replace") as f:
                found = ""
                for line in f:
                    if marker in line:
                        found = line.split(marker, 1)[1].split()[0].strip("\"'")
                if not found:
                    return ""
                self._identity = (process.pid, found)
        return self._identity[1] if self._identity else ""


class Cluster(Workload):
    """Control plane + replicas + fake cloud + simulated kubelets and users."""

    def __init__(self, workdir: Path, *, replicas: int = 3, settings: ReplicaSettings) -> None:
        self.workdir = workdir
        self.settings = settings
        self.replica_count = replicas
        self.plane = ControlPlane(base_dir=workdir, keep_data_dir=True)
        self.replicas: list[Replica] = []
        self.state = FakeCloudState().clear_default_instance()
        self.state_path = workdir / "cloud-state.json"
        self.status_path = workdir / "cloud-status.json"
        self.config_path = workdir / "cloud.yaml"
        self.pending: deque[tuple[str, Callable[[], bool]]] = deque()
        self.machines: dict[str, list[tuple[float, str]]] = {}  # node → [(time, state)]
        self.ready: dict[str, list[tuple[float, bool]]] = {}  # node → [(time, Ready)]
        self.pod_cidrs: dict[str, str] = {}
        self.internal_ips: dict[str, str] = {}
        self.fault_log: list[tuple[float, str, str]] = []  # (time, kind, what happened)
        self._kube: BlockingClient | None = None

    # ---- start and stop

    def start(self) -> None:
        self.plane.start()
        self.state.write(self.state_path)
        config = {
            "stateFile": str(self.state_path),
            "statusFile": str(self.status_path),
            "statusInterval": 0,  # every change is durable before the controller sees it
            "restoreFromStatus": True,
            "sharedStatus": True,  # one cloud for every replica, deposed leaders included
            "recordCalls": False,
            "defaultInstance": None,
        }
        self.config_path.write_text(yaml.safe_dump(config))
        for i in range(self.replica_count):
            user = f"ccm-replica-{i}"
            kubeconfig = self.plane.add_user(user, ["system:masters"])
            args = [
                *self.settings.args(),
                f"--cloud-config={self.config_path}",
                f"--kubeconfig={kubeconfig}",
            ]
            daemon = Daemon(args, log_dir=self.workdir, name=f"replica-{i}")
            self.replicas.append(Replica(i, daemon, user))
        for r in self.replicas:
            r.daemon.start(wait_healthy=False)
        for r in self.replicas:
            r.daemon.wait_healthy(timeout=120)

    def stop(self) -> None:
        for r in self.replicas:
            if r.paused:
                r.daemon.signal(signal.SIGCONT)
            r.daemon.stop(timeout=10)
        if self._kube is not None:
            self._kube.close()
            self._kube = None
        self.plane.stop()

    @property
    def replica_users(self) -> dict[str, int]:
        return {r.user: r.index for r in self.replicas}

    # ---- apiserver access as the admin (the workload's own identity)

    def request(self, method: str, path: str, body: Any = None, *, patch: str = "") -> Any:
        """One request; returns the decoded body. Raises KubeError / RuntimeError on failure."""
        if self._kube is None:
            self._kube = BlockingClient(
                str(self.plane.kubeconfig_path), user_agent="ccm-chaos", request_timeout=3.0
            )
        status, data = self._kube.request(method, path, body, content_type=patch or None)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None

    def try_request(self, method: str, path: str, body: Any = None, *, patch: str = "") -> Any:
        try:
            return self.request(method, path, body, patch=patch)
        except (OSError, RuntimeError, errors.KubeError, ValueError):
            return None

    # ---- faults

    def leader(self, *, wait: float = 0.0) -> Replica | None:
        """The replica holding the Lease, waiting up to ``wait`` seconds for one (after an outage
        the Lease may name a replica that has exited until another takes over)."""
        deadline = time.monotonic() + wait
        while (found := self._leader()) is None and time.monotonic() < deadline:
            self.supervise()
            time.sleep(0.5)
        return found

    def _leader(self) -> Replica | None:
        lease = self.try_request(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{LEASE_NAME}",
        )
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
        if not holder:
            return None
        for r in self.replicas:
            if r.daemon.running and r.identity() == holder:
                return r
        return None

    def fault_start(self, kind: str, node: str = "", index: int = 0) -> str:
        """Inject fault ``kind``; returns what was done (for the log)."""
        timeout = self.settings.cloud_call_timeout
        if kind == "foreign-podcidr":
            self.join(node, index, foreign=True)
            return f"{node} joins with podCIDR {self.pod_cidrs[node]}"
        if kind == "cloud-errors":
            self.state.inject_error("*", "cloud", message="chaos: cloud API unavailable")
        elif kind == "throttle":
            self.state.inject_error("*", "retryAfter", message="chaos: throttled", retry_after=2)
        elif kind in ("latency", "ignore-cancel"):
            self.state.set_latency("*", timeout + 1.5)
            if kind == "ignore-cancel":
                self.state.set_ignore_cancellation("*")
        elif kind == "apiserver-kill":
            self.plane.kill("kube-apiserver", signal.SIGKILL)
            return "kube-apiserver SIGKILL"
        elif kind == "etcd-restart":
            self.plane.kill("etcd", signal.SIGTERM)
            return "etcd stopped"
        elif kind in ("leader-kill", "leader-pause"):
            leader = self.leader(wait=3 * self.settings.lease_duration)
            if leader is None:
                return "skipped: no leader"
            if kind == "leader-kill":
                leader.daemon.signal(signal.SIGKILL)
                return f"SIGKILL replica-{leader.index}"
            leader.daemon.signal(signal.SIGSTOP)
            leader.paused = True
            return f"SIGSTOP replica-{leader.index}"
        else:
            raise ValueError(kind)
        self.state.write(self.state_path)
        return "cloud state written"

    def fault_end(self, kind: str, node: str = "") -> str:
        if kind == "foreign-podcidr":
            self.leave(node)
            return f"{node} leaves"
        if kind in ("cloud-errors", "throttle"):
            self.state.clear_errors()
        elif kind in ("latency", "ignore-cancel"):
            self.state.clear_latency().set_ignore_cancellation()
        elif kind == "apiserver-kill":
            self.plane.revive("kube-apiserver")
            return "kube-apiserver restarted"
        elif kind == "etcd-restart":
            self.plane.revive("etcd")
            return "etcd restarted"
        elif kind == "leader-pause":
            resumed = [r for r in self.replicas if r.paused]
            for r in resumed:
                r.daemon.signal(signal.SIGCONT)
                r.paused = False
            return "SIGCONT " + ",".join(f"replica-{r.index}" for r in resumed)
        else:
            return ""
        self.state.write(self.state_path)
        return "cloud state written"

    def clear_faults(self) -> None:
        """End every fault (the plan ends them all; this is the safety net)."""
        self.state.clear_errors().clear_latency().set_ignore_cancellation()
        self.state.write(self.state_path)
        for component in ("etcd", "kube-apiserver"):
            with contextlib.suppress(Exception):
                self.plane.revive(component)
        for r in self.replicas:
            if r.paused:
                r.daemon.signal(signal.SIGCONT)
                r.paused = False

    def supervise(self) -> None:
        """Restart replicas that exited (crashed, killed, or deposed), after ``restart_delay``."""
        now = time.monotonic()
        for r in self.replicas:
            if r.daemon.running or r.paused:
                r.down_since = None
                continue
            if r.down_since is None:
                r.down_since = now
                code = r.daemon.process.returncode if r.daemon.process else None
                _log.info("replica-%d exited with %s", r.index, code)
            elif now - r.down_since >= self.settings.restart_delay:
                r.restarts += 1
                r.down_since = None
                r.daemon.start(wait_healthy=False)

    # ---- observation

    def cloud_status(self) -> FakeCloudStatus | None:
        try:
            return FakeCloudStatus.read(self.status_path)
        except (OSError, ValueError):
            return None

    def list_items(self, path: str) -> list[dict[str, Any]] | None:
        doc = self.try_request("GET", path)
        return None if doc is None else list(doc.get("items") or [])

    def machine_state(self, name: str) -> str:
        history = self.machines.get(name)
        return history[-1][1] if history else "unknown"

    def audit_log_path(self) -> Path:
        return self.plane.audit_log_path

    def log_paths(self) -> list[Path]:
        return [r.daemon.log_path for r in self.replicas] + [
            self.plane.apiserver_log_path,
            self.plane.etcd_log_path,
        ]
