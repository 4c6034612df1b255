"""The kubelet-shaped Nodes of ``ccm.testing.kubelet`` and its bounded wait."""

from __future__ import annotations

from typing import Any

import pytest

from ccm import wellknown
from ccm.testing import kubelet


def test_node_body_is_what_an_external_cloud_provider_kubelet_registers() -> None:
    body = kubelet.node_body("node-1")
    assert body["metadata"] == {"name": "node-1", "labels": {wellknown.LABEL_HOSTNAME: "node-1"}}
    assert body["spec"] == {
        "taints": [{"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}]
    }
    (condition,) = body["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Ready",
        "True",
        "KubeletReady",
    )
    assert condition["lastHeartbeatTime"] == condition["lastTransitionTime"]
    assert condition["lastHeartbeatTime"].endswith("Z")
    assert "addresses" not in body["status"]


def test_node_body_not_ready_with_pod_cidr_and_addresses() -> None:
    body = kubelet.node_body(
        "node-2",
        ready=False,
        pod_cidr="10.250.1.0/24",
        addresses=[("InternalIP", "10.0.0.2"), ("Hostname", "node-2")],
    )
    assert body["spec"]["podCIDR"] == "10.250.1.0/24"
    assert body["spec"]["podCIDRs"] == ["10.250.1.0/24"]
    assert body["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.2"},
        {"type": "Hostname", "address": "node-2"},
    ]
    (condition,) = body["status"]["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "KubeletNotReady")


class _Core:
    """Records the calls the module makes on a ``CoreV1Api``."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def create_node(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body

    def delete_node(self, name: str) -> None:
        self.deleted.append(name)


def test_registered_nodes_are_deleted_once() -> None:
    core, other = _Core(), _Core()
    kubelet.register_node(core, "a")
    kubelet.register_node(core, "b")
    kubelet.register_node(other, "c")
    assert [b["metadata"]["name"] for b in core.created] == ["a", "b"]
    kubelet.delete_registered(core)
    kubelet.delete_registered(core)
    assert core.deleted == ["a", "b"]
    assert other.deleted == []


def test_wait_returns_the_first_true_value_and_is_bounded() -> None:
    values = iter([0, None, "ready"])
    assert kubelet.wait(lambda: next(values), "ready", timeout=5.0, interval=0.0) == "ready"
    with pytest.raises(AssertionError, match=r"not within 0\.05s: never"):
        kubelet.wait(lambda: False, "never", timeout=0.05, interval=0.01)
