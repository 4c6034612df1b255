"""Shared fixtures of the end-to-end tests: tainted Nodes as a kubelet registers them, fake-cloud
files, and the real ``ccm`` daemon as a subprocess against the session's real kube-apiserver."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from ccm.testing.fake_cloud import FakeCloudState, FakeCloudStatus


@dataclass
class FakeCloudFiles:
    """The fake cloud's config, the state file a test writes and the status file the fake writes."""

    config: Path
    state_path: Path
    status_path: Path
    state: FakeCloudState

    def write_state(self) -> None:
        self.state.write(self.state_path)

    def status(self) -> FakeCloudStatus | None:
        return FakeCloudStatus.read(self.status_path)


@pytest.fixture
def fake_cloud_files(tmp_path: Path) -> Callable[..., FakeCloudFiles]:
    """Factory: ``fake_cloud_files(**config)`` writes a fake-cloud config and an empty state."""

    def make(**config: Any) -> FakeCloudFiles:
        state_path = tmp_path / "state.json"
        status_path = tmp_path / "status.json"
        doc = {"stateFile": str(state_path), "statusFile": str(status_path), "statusInterval": 0}
        doc.update(config)
        cfg = tmp_path / "cloud.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        files = FakeCloudFiles(cfg, state_path, status_path, FakeCloudState())
        files.write_state()
        return files

    return make


class Nodes:
    """Creates Nodes as a kubelet with --cloud-provider=external would; deletes them after."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.created: list[str] = []

    def create(
        self,
        name: str,
        *,
        internal_ip: str | None = None,
        ready: bool = True,
        other_addresses: Sequence[Mapping[str, str]] = (),
    ) -> Any:
        """Register Node ``name`` with its status in the same request, as a kubelet does (a Node
        without a Ready condition counts as Unknown to the lifecycle controller);
        ``other_addresses`` go between the InternalIP and the Hostname."""
        addresses = [*map(dict, other_addresses), {"type": "Hostname", "address": name}]
        if internal_ip:
            addresses.insert(0, {"type": "InternalIP", "address": internal_ip})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {wellknown.LABEL_HOSTNAME: name}},
            "spec": {
                "taints": [
                    {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}
                ]
            },
            "status": {
                "addresses": addresses,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            },
        }
        node = self.core.create_node(body)
        self.created.append(name)
        conditions = node.status.conditions or []
        assert conditions, "the apiserver dropped the status of a created Node"
        return node

    def get(self, name: str) -> Any:
        return self.core.read_node(name)

    def wait(
        self,
        name: str,
        predicate: Callable[[Any], bool],
        *,
        timeout: float = 60.0,
        what: str = "condition",
    ) -> Any:
        deadline = time.monotonic() + timeout
        node = None
        while time.monotonic() < deadline:
            node = self.get(name)
            if predicate(node):
                return node
            time.sleep(0.2)
        raise AssertionError(f"node {name}: {what} not met after {timeout}s: {node}")

    def cleanup(self) -> None:
        from kubernetes.client.rest import ApiException

        for name in self.created:
            try:
                self.core.delete_node(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def is_tainted(node: Any) -> bool:
    return any(t.key == wellknown.TAINT_UNINITIALIZED for t in node.spec.taints or [])


@pytest.fixture
def nodes(k8s_admin: Any) -> Iterator[Nodes]:
    n = Nodes(k8s_admin)
    try:
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def daemon_factory(
    control_plane: ControlPlane, unique_name: Callable[..., str], tmp_path: Path
) -> Iterator[Callable[..., Daemon]]:
    """Factory of real ``ccm`` daemons against the session control plane.

    Each test gets its own Lease name, so tests never wait for each other's leaders. Every daemon is
    stopped at the end of the test.
    """
    lease = unique_name("lease")
    started: list[Daemon] = []

    def make(
        cloud: FakeCloudFiles | None,
        *extra: str,
        name: str = "ccm",
        start: bool = True,
        lease_name: str | None = None,
    ) -> Daemon:
        args = [
            "--cloud-provider=fake",
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--leader-elect-resource-name={lease_name or lease}",
            "--cluster-cidr=10.244.0.0/16",
            "-v",
            "2",
        ]
        if cloud is not None:
            args.append(f"--cloud-config={cloud.config}")
        daemon = Daemon([*args, *extra], log_dir=tmp_path, name=name)
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    try:
        yield make
    finally:
        for d in started:
            d.stop()


@pytest.fixture(scope="session")
def metrics_token(control_plane: ControlPlane) -> str:
    """A ServiceAccount token whose user may ``get`` the non-resource URL /metrics."""
    return control_plane.metrics_reader_token("ccm-e2e-metrics-reader")
