"""The real control plane of ccm.testing: version, authn/authz, tokens, audit, isolation, exit."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ccm.testing import assets
from ccm.testing.controlplane import ControlPlane, ControlPlaneError
from ccm.testing.pytest_plugin import purge_namespace

pytestmark = pytest.mark.e2e


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _pid_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still in the process table: only acceptable as an unreaped zombie of someone else.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _assert_all_gone(pids: Iterable[int], ports: Iterable[int], data_dir: Path) -> None:
    assert all(_pid_is_gone(pid) for pid in pids)
    assert all(_port_is_closed(port) for port in ports)
    assert _processes_mentioning(str(data_dir)) == []


def test_apiserver_reports_the_pinned_version(k8s_admin: client.ApiClient) -> None:
    info = client.VersionApi(k8s_admin).get_code()

    assert info.git_version == assets.versions().kubernetes


def test_admin_kubeconfig_works_with_the_official_client(control_plane: ControlPlane) -> None:
    with config.new_client_from_config(config_file=str(control_plane.kubeconfig_path)) as api:
        namespaces = client.CoreV1Api(api).list_namespace()

    assert "default" in {ns.metadata.name for ns in namespaces.items}


def test_rbac_forbids_a_user_without_bindings_and_allows_the_admin(
    control_plane: ControlPlane, k8s_admin: client.ApiClient, unique_name: Callable[..., str]
) -> None:
    kubeconfig = control_plane.add_user(unique_name("user"), groups=["ccm-testers"])

    with (
        config.new_client_from_config(config_file=str(kubeconfig)) as api,
        pytest.raises(ApiException) as forbidden,
    ):
        client.CoreV1Api(api).list_node()
    client.CoreV1Api(k8s_admin).list_node()

    assert forbidden.value.status == 403


def test_add_user_authenticates_with_the_given_name_and_groups(
    control_plane: ControlPlane, unique_name: Callable[..., str]
) -> None:
    name = f"system:node:{unique_name('node')}"
    kubeconfig = control_plane.add_user(name, groups=["system:nodes"])

    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review({})

    assert review.status.user_info.username == name
    assert set(review.status.user_info.groups) >= {"system:nodes", "system:authenticated"}


def test_service_account_token_from_token_request_authenticates(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    token = control_plane.service_account_token(kube_namespace, "robot")
    configuration = client.Configuration()
    configuration.host = control_plane.url
    configuration.ssl_ca_cert = str(control_plane.ca_cert_path)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}

    with client.ApiClient(configuration) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review({})

    assert review.status.user_info.username == f"system:serviceaccount:{kube_namespace}:robot"


def test_audit_log_records_requests_at_metadata_level(
    control_plane: ControlPlane, k8s_admin: client.ApiClient, unique_name: Callable[..., str]
) -> None:
    agent = f"ccm-audit-probe/{unique_name()}"
    k8s_admin.user_agent = agent
    client.CoreV1Api(k8s_admin).list_namespace()

    def probe_events() -> list[dict[str, Any]]:
        lines = control_plane.audit_log_path.read_text().splitlines()
        return [event for event in map(json.loads, lines) if event.get("userAgent") == agent]

    assert _wait_until(lambda: bool(probe_events()), timeout=5)
    (event,) = probe_events()
    assert event["level"] == "Metadata"
    assert event["stage"] == "ResponseComplete"
    assert event["user"]["username"] == "admin"
    assert event["requestURI"].startswith("/api/v1/namespaces")


def test_kube_namespace_is_fresh_and_isolated(
    k8s_admin: client.ApiClient, kube_namespace: str, unique_name: Callable[..., str]
) -> None:
    core = client.CoreV1Api(k8s_admin)
    other = unique_name("other")
    core.create_namespace({"metadata": {"name": other}})
    try:
        core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "mine"}})

        assert [cm.metadata.name for cm in core.list_namespaced_config_map(other).items] == []
        assert "mine" in {
            cm.metadata.name for cm in core.list_namespaced_config_map(kube_namespace).items
        }
        assert core.read_namespaced_service_account("default", kube_namespace).metadata.name
    finally:
        purge_namespace(k8s_admin, other)


def test_purge_namespace_removes_the_namespace_and_everything_in_it(
    k8s_admin: client.ApiClient, unique_name: Callable[..., str]
) -> None:
    core = client.CoreV1Api(k8s_admin)
    namespace = unique_name("purged")
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "plain"}})
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {
                "name": "lb",
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
            },
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        },
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "bound"},
            "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "pause"}]},
        },
    )

    purge_namespace(k8s_admin, namespace)

    selector = f"metadata.namespace={namespace}"
    assert core.list_service_for_all_namespaces(field_selector=selector).items == []
    assert core.list_pod_for_all_namespaces(field_selector=selector).items == []
    assert core.list_config_map_for_all_namespaces(field_selector=selector).items == []
    with pytest.raises(ApiException) as gone:
        core.read_namespace(namespace)
    assert gone.value.status == 404


def test_stop_leaves_no_process_port_or_file_behind() -> None:
    # Started from a thread that then exits: PR_SET_PDEATHSIG fires when the forking *thread* ends
    # (e.g. an asyncio.to_thread worker), so the children must survive that thread.
    plane = ControlPlane(audit_policy=None)
    worker = threading.Thread(target=plane.start)
    worker.start()
    worker.join()
    try:
        pids, ports, data_dir = plane.pids, plane.ports, plane.data_dir
        time.sleep(0.2)
        assert plane.running
        assert len(pids) == 2
        assert plane.request("GET", "/readyz")[0] == 200
        assert not any(_port_is_closed(port) for port in ports[:2])  # apiserver, etcd client
    finally:
        plane.stop()

    assert not plane.running
    assert not data_dir.exists()
    _assert_all_gone(pids, ports, data_dir)


def test_killed_apiserver_and_etcd_are_revived_on_the_same_ports_with_their_data() -> None:
    plane = ControlPlane(audit_policy=None).start()
    try:
        body = {"metadata": {"name": "survivor"}, "data": {"k": "v"}}
        path = "/api/v1/namespaces/default/configmaps"
        assert plane.request("POST", path, body)[0] == 201
        url = plane.url

        plane.kill("kube-apiserver")
        assert not plane.running
        with pytest.raises(OSError):
            plane.request("GET", "/readyz", timeout=2)
        plane.revive("kube-apiserver")
        assert plane.running
        assert plane.url == url

        plane.kill("etcd", signal.SIGTERM)
        assert not plane.running
        plane.revive("etcd")
        assert plane.running
        # A write needs etcd: it succeeds again once the apiserver has reconnected.
        later = {"metadata": {"name": "later"}}
        deadline = time.monotonic() + 30
        status = 0
        while status != 201:
            assert time.monotonic() < deadline, status
            try:
                status = plane.request("POST", path, later, timeout=5)[0]
            except OSError:  # the apiserver may hold the request until etcd answers
                status = 0
            time.sleep(0.2)
        assert plane.request("GET", f"{path}/survivor")[0] == 200
        with pytest.raises(ControlPlaneError, match="still running"):
            plane.revive("etcd")
        assert len(plane.pids) == 4
    finally:
        plane.stop()
    _assert_all_gone(plane.pids, plane.ports, plane.data_dir)


def test_start_failure_reports_the_log_tail_and_cleans_up(tmp_path: Path) -> None:
    plane = ControlPlane(extra_apiserver_args=["--no-such-flag=1"], base_dir=tmp_path)

    with pytest.raises(ControlPlaneError, match=r"(?s)kube-apiserver exited.*no-such-flag"):
        plane.start()

    _assert_all_gone(plane.pids, plane.ports, plane.data_dir)
    assert list(tmp_path.iterdir()) == []


_KILLED_PARENT = """
import sys
import threading
from ccm.testing.controlplane import ControlPlane
plane = ControlPlane(base_dir=sys.argv[1]).start()
print(*plane.pids, *plane.ports, flush=True)
sys.stdin.read()
"""


def test_children_die_when_the_test_process_is_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_PARENT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            numbers = [int(n) for n in parent.stdout.readline().split()]
        finally:
            parent.send_signal(signal.SIGKILL)
    pids, ports = numbers[:2], numbers[2:]

    assert len(pids) == 2
    # A Go process shows as a zombie once its main thread exits; its other threads (and sockets)
    # may take a moment longer.
    assert _wait_until(lambda: all(_pid_is_gone(pid) for pid in pids))
    assert _wait_until(lambda: all(_port_is_closed(port) for port in ports))
    assert _processes_mentioning(str(tmp_path)) == []


def test_command_line_prints_the_kubeconfig_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "ccm.testing.controlplane"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    ) as command:
        try:
            assert command.stdout is not None
            kubeconfig = Path(command.stdout.readline().strip())
            data_dir = kubeconfig.parent
            children = _processes_mentioning(str(data_dir))
            assert kubeconfig.is_file()
        finally:
            command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=30) == 0

    assert len(children) == 2
    assert all(_pid_is_gone(pid) for pid in children)
    assert not data_dir.exists()


@pytest.mark.parametrize("case", ["x" * 80 + "_Weird.Chars[]"], ids=["a-very-long-id" * 6])
def test_unique_name_makes_distinct_dns_1035_labels(
    unique_name: Callable[..., str], case: str
) -> None:
    names = [unique_name(), unique_name("svc"), unique_name(case), unique_name("9lives")]

    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    assert names[1].startswith("svc-unique-name-makes-distinct")
