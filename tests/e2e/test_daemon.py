"""End to end: the real ``ccm`` daemon (a subprocess) with the fake provider, on the real
kube-apiserver, observed through the official ``kubernetes`` client."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles, Nodes, is_tainted

TOPOLOGY = (wellknown.LABEL_ZONE, wellknown.LABEL_REGION, wellknown.LABEL_INSTANCE_TYPE)


class NodeWatch(threading.Thread):
    """Records every version of the watched Nodes the apiserver serves, from before they exist."""

    def __init__(self, api: Any, names: set[str]) -> None:
        super().__init__(daemon=True)
        from kubernetes import client, watch

        self.core = client.CoreV1Api(api)
        self.watch = watch.Watch()
        self.names = names
        self.versions: list[Any] = []
        self.ready = threading.Event()
        self.stopped = False
        self.error: Exception | None = None
        self.rv = self.core.list_node().metadata.resource_version

    def run(self) -> None:
        self.ready.set()
        try:
            for event in self.watch.stream(
                self.core.list_node, resource_version=self.rv, timeout_seconds=120
            ):
                node = event["object"]
                if node.metadata.name in self.names:
                    self.versions.append(node)
        except Exception as exc:  # the connection is cut when we stop watching
            if not self.stopped:
                self.error = exc

    def stop(self) -> None:
        self.stopped = True
        self.watch.stop()


def test_initializes_tainted_nodes_and_never_untaints_before_labels(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
    metrics_token: str,
) -> None:
    names = [unique_name("node") for _ in range(3)]
    cloud = fake_cloud_files()
    for i, name in enumerate(names):
        cloud.state.add_instance(
            name,
            provider_id=f"fake://i-{i}",
            instance_type="m5.large",
            zone=f"zone-{i % 2}",
            region="region-1",
            addresses=[
                {"type": "InternalIP", "address": f"10.0.0.{i + 10}"},
                # The last Node has two addresses of one type and none of another.
                {"type": "InternalIP", "address": "10.0.1.12"}
                if i == 2
                else {"type": "ExternalIP", "address": f"203.0.113.{i + 10}"},
            ],
        )
    cloud.write_state()
    watcher = NodeWatch(k8s_admin, set(names))
    watcher.start()
    watcher.ready.wait(5)
    for name in names[:2]:
        nodes.create(name, internal_ip=None)
    # Registered with addresses the cloud does not report: they must go (the status write
    # replaces the list; the apiserver's merge by address type would keep the ExternalDNS).
    nodes.create(
        names[2],
        internal_ip="192.168.9.9",
        other_addresses=[{"type": "ExternalDNS", "address": "stale.example.com"}],
    )
    daemon = daemon_factory(cloud)

    for i, name in enumerate(names):
        node = nodes.wait(name, lambda n: not is_tainted(n), what="taint removed")
        assert node.spec.provider_id == f"fake://i-{i}"
        labels = node.metadata.labels
        assert labels[wellknown.LABEL_ZONE] == labels[wellknown.LABEL_ZONE_BETA] == f"zone-{i % 2}"
        assert labels[wellknown.LABEL_REGION] == labels[wellknown.LABEL_REGION_BETA] == "region-1"
        assert labels[wellknown.LABEL_INSTANCE_TYPE] == "m5.large"
        assert labels[wellknown.LABEL_INSTANCE_TYPE_BETA] == "m5.large"
        ip = f"10.0.0.{i + 10}"

        def has_cloud_ip(n: Any, ip: str = ip) -> bool:
            return any(a.address == ip for a in n.status.addresses or [])

        node = nodes.wait(name, has_cloud_ip, what="addresses")
        second = ("InternalIP", "10.0.1.12") if i == 2 else ("ExternalIP", f"203.0.113.{i + 10}")
        assert [(a.type, a.address) for a in node.status.addresses] == [
            ("InternalIP", ip),
            second,
            ("Hostname", name),
        ]
    time.sleep(0.5)
    watcher.stop()
    assert watcher.error is None, f"the observing watch failed: {watcher.error}"
    # Every version any client could observe: untainted implies labelled (one write did both).
    seen_untainted = set()
    for version in watcher.versions:
        if not is_tainted(version):
            seen_untainted.add(version.metadata.name)
            for key in TOPOLOGY:
                assert key in (version.metadata.labels or {}), (
                    f"{version.metadata.name} rv={version.metadata.resource_version} lost the "
                    f"taint without {key}"
                )
            assert version.spec.provider_id
    assert seen_untainted == set(names)

    from kubernetes import client

    events = (
        client.CoreV1Api(k8s_admin)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={names[0]}")
        .items
    )
    synced = [e for e in events if e.reason == wellknown.EVENT_REASON_SYNCED]
    assert synced and synced[0].type == "Normal"
    assert synced[0].source.component == "cloud-node-controller"
    assert synced[0].message == wellknown.EVENT_MESSAGE_NODE_SYNCED

    status, body = daemon.get("/healthz")
    assert (status, body) == (200, "ok")
    status, metrics = daemon.get("/metrics", token=metrics_token)
    assert status == 200
    assert 'workqueue_adds_total{name="Nodes"}' in metrics
    assert "node_controller_cloud_provider_taint_removal_delay_seconds_count" in metrics
    lag_samples = re.search(r"^ccm_event_loop_lag_seconds_count (\S+)$", metrics, re.M)
    assert lag_samples is not None and float(lag_samples.group(1)) >= 1
    assert (
        'running_managed_controllers{manager="cloud-controller-manager",name="cloud-node"} 1.0'
        in metrics
    )


def test_cloud_failure_keeps_taint_warns_and_retries_until_fixed(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    from kubernetes import client

    good, bad = unique_name("good"), unique_name("bad")
    cloud = fake_cloud_files(defaultInstance={"zones": ["zone-a"], "region": "r"})
    cloud.state.inject_error("instance-metadata", "cloud", key=bad, message="cloud API is down")
    cloud.write_state()
    nodes.create(good)
    nodes.create(bad)
    daemon_factory(cloud)

    nodes.wait(good, lambda n: not is_tainted(n), what="good node initialized")
    core = client.CoreV1Api(k8s_admin)

    def warning() -> Any:
        for e in core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={bad}"
        ).items:
            if e.reason == wellknown.EVENT_REASON_FAILED_TO_INITIALIZE:
                return e
        return None

    deadline = time.monotonic() + 30
    while (event := warning()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert event is not None, "no Warning event for the failing node"
    assert event.type == "Warning"
    assert "cloud API is down" in event.message
    # It retried (rate-limited backoff) while the fault lasted, and the taint stayed.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = cloud.status()
        if status is not None and status.call_count("instance-metadata", bad) >= 3:
            break
        time.sleep(0.2)
    assert cloud.status().call_count("instance-metadata", bad) >= 3  # type: ignore[union-attr]
    assert is_tainted(nodes.get(bad))

    cloud.state.clear_errors()
    cloud.write_state()
    node = nodes.wait(bad, lambda n: not is_tainted(n), timeout=60, what="recovered")
    assert node.metadata.labels[wellknown.LABEL_ZONE] == "zone-a"


def test_provider_without_load_balancer_and_routes_logs_what_it_skips(
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    cloud = fake_cloud_files(
        capabilities={"loadBalancer": False, "routes": False},
        defaultInstance={"zones": ["z"], "region": "r"},
    )
    daemon = daemon_factory(cloud)
    daemon.wait_for_log("does not implement the optional interface LoadBalancer")
    daemon.wait_for_log("does not implement the optional interface Routes")
    daemon.wait_for_log(
        'Skipping "service-lb-controller": the cloud provider does not support '
        "external load balancers"
    )
    daemon.wait_for_log(
        'Skipping "node-route-controller": --configure-cloud-routes is set, but '
        "cloud provider does not support routes"
    )
    name = unique_name("node")
    nodes.create(name)
    nodes.wait(name, lambda n: not is_tainted(n), what="initialized")


def _holder(k8s_admin: Any, lease: str) -> str | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        obj = client.CoordinationV1Api(k8s_admin).read_namespaced_lease(lease, "kube-system")
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj.spec.holder_identity or ""


def _identity(daemon: Daemon) -> str:
    return daemon.wait_for_log("Leader election identity:").rsplit(" ", 1)[1]


def _wait_holder(k8s_admin: Any, lease: str, want: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _holder(k8s_admin, lease) == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"lease {lease} not held by {want} after {timeout}s")


def test_one_leader_acts_and_hands_over_on_sigterm_and_sigkill(
    k8s_admin: Any,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    lease = unique_name("lease-ha")
    cloud = fake_cloud_files(defaultInstance={"zones": ["z"], "region": "r"})
    timing = [
        "--leader-elect-lease-duration=6s",
        "--leader-elect-renew-deadline=4s",
        "--leader-elect-retry-period=1s",
    ]
    a = daemon_factory(cloud, *timing, name="a", lease_name=lease)
    ida = _identity(a)
    _wait_holder(k8s_admin, lease, ida, timeout=30)
    b = daemon_factory(cloud, *timing, name="b", lease_name=lease)
    idb = _identity(b)
    time.sleep(2)  # b has had time to try, and must be waiting
    assert _holder(k8s_admin, lease) == ida

    name = unique_name("node")
    nodes.create(name)
    nodes.wait(name, lambda n: not is_tainted(n), what="initialized by the leader")
    assert f"Initializing node {name}" in a.log()
    assert f"Initializing node {name}" not in b.log(), "the standby must not act"

    # SIGTERM: a releases the Lease, so b takes over within a retry period, not a lease duration.
    a.signal(signal.SIGTERM)
    took = _wait_holder(k8s_admin, lease, idb, timeout=6)
    assert took < 4.0, f"handover after SIGTERM took {took:.1f}s"
    assert a.wait(timeout=15) == 0
    assert "released lease" in a.log()

    name2 = unique_name("node")
    nodes.create(name2)
    nodes.wait(name2, lambda n: not is_tainted(n), what="initialized by the new leader")
    assert f"Initializing node {name2}" in b.log()

    # SIGKILL: nothing is released; c takes over once the lease has expired by its own clock.
    c = daemon_factory(cloud, *timing, name="c", lease_name=lease)
    idc = _identity(c)
    time.sleep(2)
    b.signal(signal.SIGKILL)
    killed = time.monotonic()
    took = _wait_holder(k8s_admin, lease, idc, timeout=30)
    assert took >= 3.0, f"c stole a lease that was renewed {took:.1f}s before"
    assert took < 6 + 1.2 + 5, f"takeover after SIGKILL took {took:.1f}s"
    assert time.monotonic() - killed < 15


def test_sigterm_stops_cleanly_and_releases_the_lease(
    k8s_admin: Any,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    lease = unique_name("lease")
    d = daemon_factory(fake_cloud_files(), lease_name=lease)
    _wait_holder(k8s_admin, lease, _identity(d), timeout=30)
    start = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(timeout=10) == 0
    assert time.monotonic() - start < 5
    assert _holder(k8s_admin, lease) == ""
    assert "Traceback" not in d.log()


def _ccm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-provider", 'unknown cloud provider "nope" (installed providers: '),
        ("missing-config", "couldn't open cloud provider configuration"),
        ("malformed-config", 'could not init cloud provider "fake": invalid fake cloud config'),
        ("unreadable-kubeconfig", "kubeconfig"),
        ("unknown-controller", '"bogus" is not in the list of known controllers'),
        ("routes-without-cluster-cidr", "--cluster-cidr"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(
    case: str,
    expected: str,
    tmp_path: Path,
    control_plane: ControlPlane,
) -> None:
    kubeconfig = f"--kubeconfig={control_plane.kubeconfig_path}"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("capabilities: {routes: maybe}\n")
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("this: [is not a kubeconfig\n")
    args = {
        "unknown-provider": ["--cloud-provider=nope", kubeconfig],
        "missing-config": [
            "--cloud-provider=fake",
            f"--cloud-config={tmp_path}/absent.yaml",
            kubeconfig,
        ],
        "malformed-config": ["--cloud-provider=fake", f"--cloud-config={bad_yaml}", kubeconfig],
        "unreadable-kubeconfig": [
            "--cloud-provider=fake",
            f"--kubeconfig={garbage}",
            "--cluster-cidr=10.0.0.0/16",
        ],
        "unknown-controller": ["--cloud-provider=fake", "--controllers=*,bogus", kubeconfig],
        "routes-without-cluster-cidr": ["--cloud-provider=fake", kubeconfig],
    }[case]
    result = _ccm(*args, "--secure-port=0")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ccm: error: ")]
    assert len(errors) == 1, result.stderr
    assert expected in errors[0]


def test_version_and_help() -> None:
    assert _ccm("--version").stdout.startswith("ccm ")
    help_text = _ccm("--help").stdout
    for flag in (
        "--cloud-provider",
        "--controllers",
        "--concurrent-node-syncs",
        "--leader-elect-lease-duration",
        "--node-status-update-frequency",
    ):
        assert flag in help_text


def test_service_account_credentials_give_each_controller_its_own_identity(
    control_plane: ControlPlane,
    nodes: Nodes,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    import json

    cloud = fake_cloud_files(defaultInstance={"zones": ["z"], "region": "r"})
    daemon_factory(
        cloud, "--use-service-account-credentials", "--controllers=cloud-node-controller"
    )
    name = unique_name("node")
    nodes.create(name)
    nodes.wait(name, lambda n: not is_tainted(n), what="initialized")
    # The apiserver saw the initialization write from the node-controller ServiceAccount
    # (bootstrap RBAC role system:controller:node-controller), not from the daemon's identity.
    deadline = time.monotonic() + 10
    writers: set[str] = set()
    while time.monotonic() < deadline:
        writers = set()
        for line in control_plane.audit_log_path.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                event.get("verb") == "patch"
                and ref.get("resource") == "nodes"
                and ref.get("name") == name
                and not ref.get("subresource")  # the test's own writes are to nodes/status
                and event.get("stage") == "ResponseComplete"
            ):
                writers.add(event["user"]["username"])
        if writers:
            break
        time.sleep(0.2)
    assert writers == {"system:serviceaccount:kube-system:node-controller"}
