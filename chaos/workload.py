"""The simulated kubelets and users of a chaos run: the workload that :class:`chaos.cluster.Cluster`
drives.

Cloud-side changes (a machine added, shut down or deleted) are state file writes and take effect
at once; apiserver-side changes (a Node registered, its Ready condition, a Service) go through a
FIFO that is retried while the apiserver is down, as kubelets and users retry. The times at which
machines and Ready conditions changed are recorded for the checker (``machines``, ``ready``:
wall-clock seconds, the audit log's clock).
"""

from __future__ import annotations

import abc
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccm import errors, wellknown
from ccm.testing.fake_cloud import FakeCloudState
from chaos import plan as planmod

__all__ = ["NAMESPACE", "Workload"]

_log = logging.getLogger("chaos")

NAMESPACE = "default"


class Workload(abc.ABC):
    """Nodes joining, leaving, stopping and flapping, and LoadBalancer Services changing (the base
    of :class:`chaos.cluster.Cluster`, which provides the state and the apiserver access)."""

    state: FakeCloudState
    state_path: Path
    pending: deque[tuple[str, Callable[[], bool]]]
    machines: dict[str, list[tuple[float, str]]]  # node → [(time, state)]
    ready: dict[str, list[tuple[float, bool]]]  # node → [(time, Ready)]
    pod_cidrs: dict[str, str]
    internal_ips: dict[str, str]

    @abc.abstractmethod
    def request(self, method: str, path: str, body: Any = None, *, patch: str = "") -> Any:
        """One request as the admin; returns the decoded body."""

    def _enqueue(self, what: str, step: Callable[[], bool]) -> None:
        self.pending.append((what, step))

    def pump(self, budget: float = 1.0) -> None:
        """Run queued apiserver steps in order until one fails (it is retried next time)."""
        deadline = time.monotonic() + budget
        while self.pending and time.monotonic() < deadline:
            what, step = self.pending[0]
            try:
                done = step()
            except (OSError, RuntimeError, errors.KubeError, ValueError) as exc:
                _log.debug("retrying %s: %s", what, exc)
                return
            if not done:
                return
            self.pending.popleft()

    def _machine(self, name: str, state: str) -> None:
        self.machines.setdefault(name, []).append((time.time(), state))
        if state == "gone":
            self.state.remove_instance(name)
        else:
            addresses = [
                {"type": "InternalIP", "address": self.internal_ips[name]},
                {"type": "Hostname", "address": name},
            ]
            self.state.add_instance(name, shutdown=state == "stopped", addresses=addresses)
        self.state.write(self.state_path)

    def _set_ready(self, name: str, ready: bool) -> Callable[[], bool]:
        def step() -> bool:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            condition = {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "KubeletReady" if ready else "KubeletNotReady",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            before = time.time()
            try:
                self.request(
                    "PATCH",
                    f"/api/v1/nodes/{name}/status",
                    {"status": {"conditions": [condition]}},
                    patch="application/strategic-merge-patch+json",
                )
            except RuntimeError as exc:
                if " 404 " in str(exc):
                    return True  # deleted meanwhile (by ccm): nothing to report on
                raise
            # A Node deleted before the change reached the apiserver counts as still in the old
            # state: record the time the request was sent for a change to NotReady and the time
            # it was answered for a change to Ready.
            self.ready.setdefault(name, []).append((before if not ready else time.time(), ready))
            return True

        return step

    def join(self, name: str, index: int, *, foreign: bool = False) -> None:
        subnet = 200 + index // 250 if foreign else index // 250
        self.internal_ips[name] = f"10.0.{subnet}.{index % 250 + 2}"
        self._machine(name, "running")
        cidr = planmod.pod_cidr(index, foreign=foreign)
        self.pod_cidrs[name] = cidr

        def register() -> bool:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {wellknown.LABEL_HOSTNAME: name}},
                "spec": {
                    "podCIDR": cidr,
                    "podCIDRs": [cidr],
                    "taints": [
                        {
                            "key": wellknown.TAINT_UNINITIALIZED,
                            "value": "true",
                            "effect": "NoSchedule",
                        }
                    ],
                },
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": self.internal_ips[name]},
                        {"type": "Hostname", "address": name},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                },
            }
            try:
                self.request("POST", "/api/v1/nodes", body)
            except RuntimeError as exc:
                if " 409 " not in str(exc):  # created by an earlier attempt that timed out
                    raise
            self.ready.setdefault(name, []).append((time.time(), True))
            return True

        self._enqueue(f"register {name}", register)

    def leave(self, name: str) -> None:
        self._machine(name, "gone")
        self._enqueue(f"{name} NotReady", self._set_ready(name, False))

    def stop_machine(self, name: str) -> None:
        self._machine(name, "stopped")
        self._enqueue(f"{name} NotReady", self._set_ready(name, False))

    def start_machine(self, name: str) -> None:
        self._machine(name, "running")
        self._enqueue(f"{name} Ready", self._set_ready(name, True))

    def flap(self, name: str, ready: bool) -> None:
        self._enqueue(f"{name} {'Ready' if ready else 'NotReady'}", self._set_ready(name, ready))

    def create_service(self, name: str, ports: tuple[int, ...]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "ports": _service_ports(ports)},
        }

        def step() -> bool:
            try:
                self.request("POST", f"/api/v1/namespaces/{NAMESPACE}/services", body)
            except RuntimeError as exc:
                if " 409 " not in str(exc):
                    raise
            return True

        self._enqueue(f"create service {name}", step)

    def change_service(self, name: str, ports: tuple[int, ...]) -> None:
        def step() -> bool:
            self.request(
                "PATCH",
                f"/api/v1/namespaces/{NAMESPACE}/services/{name}",
                {"spec": {"ports": _service_ports(ports)}},
                patch="application/merge-patch+json",
            )
            return True

        self._enqueue(f"change service {name}", step)

    def delete_service(self, name: str) -> None:
        def step() -> bool:
            try:
                self.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/{name}")
            except RuntimeError as exc:
                if " 404 " not in str(exc):
                    raise
            return True

        self._enqueue(f"delete service {name}", step)


def _service_ports(ports: tuple[int, ...]) -> list[dict[str, Any]]:
    return [
        {"name": f"p{port}", "port": port, "targetPort": port, "protocol": "TCP"} for port in ports
    ]
