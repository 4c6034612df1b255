"""End to end: ``--logging-format=json`` lines a machine can filter by controller, Node and Service.

The real daemon runs the cloud-node and service controllers on the real kube-apiserver; the test
parses every JSON line it wrote and selects one Node's and one Service's lines by their fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from ccm import names
from ccm.testing.daemon import Daemon
from ccm.testing.fake_cloud import REJECT_ANNOTATION

from .conftest import FakeCloudFiles, Nodes, is_tainted

pytestmark = pytest.mark.e2e


def _records(daemon: Daemon) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log_lines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _service(core: Any, namespace: str, name: str, annotations: dict[str, str]) -> None:
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": name},
                "ports": [{"name": "p", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout}s")


def test_json_log_lines_filter_by_controller_node_and_service(
    k8s_admin: Any,
    nodes: Nodes,
    kube_namespace: str,
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    unique_name: Callable[..., str],
) -> None:
    from kubernetes import client

    node_a, node_b = unique_name("node"), unique_name("node")
    cloud = fake_cloud_files(defaultInstance={"instanceType": "fake.medium", "region": "r-1"})
    for i, name in enumerate((node_a, node_b)):
        cloud.state.add_instance(name, provider_id=f"fake://i-{i}", zone="z-1", region="r-1")
    cloud.write_state()
    daemon = daemon_factory(
        cloud, "--controllers=cloud-node,service", "--logging-format=json", "--leader-elect=false"
    )
    for name in (node_a, node_b):
        nodes.create(name, internal_ip="10.0.0.9")
    core = client.CoreV1Api(k8s_admin)
    good, bad = unique_name("svc"), unique_name("svc")
    _service(core, kube_namespace, good, {})
    _service(core, kube_namespace, bad, {REJECT_ANNOTATION: "no capacity in r-1"})
    for name in (node_a, node_b):
        nodes.wait(name, lambda n: not is_tainted(n), what="initialized")
    good_key, bad_key = f"{kube_namespace}/{good}", f"{kube_namespace}/{bad}"

    def bad_failed() -> list[dict[str, Any]]:
        return [r for r in _records(daemon) if r.get("service") == bad_key and "err" in r]

    failures = _wait(bad_failed, "the rejected Service's error line")
    _wait(
        lambda: [r for r in _records(daemon) if r.get("service") == good_key],
        "the good Service's lines",
    )
    records = _records(daemon)

    # Every line a controller writes names the controller.
    controller_lines = [r for r in records if r["logger"].startswith("ccm.controllers.")]
    assert controller_lines
    unnamed = [r for r in controller_lines if "controller" not in r]
    assert not unnamed, unnamed[:3]

    # One Node's lines: selected by field, not by searching the prose.
    a_lines = [r for r in records if r.get("node") == node_a]
    assert {r["controller"] for r in a_lines} >= {names.CLOUD_NODE_CONTROLLER}
    assert any(r["msg"].startswith("Successfully initialized node") for r in a_lines)
    assert all(node_b not in r["msg"] for r in a_lines)

    # One Service's lines, and its error as the err field.
    good_lines = [r for r in records if r.get("service") == good_key]
    assert {r["controller"] for r in good_lines} == {names.SERVICE_LB_CONTROLLER}
    assert any("Ensuring load balancer" in r["msg"] for r in good_lines)
    assert all(bad not in r["msg"] for r in good_lines)
    assert all(r["controller"] == names.SERVICE_LB_CONTROLLER for r in failures)
    assert any("no capacity in r-1" in r["err"] for r in failures)
