"""Node and Service views handed to providers are deeply read-only."""

from __future__ import annotations

from typing import Any

import pytest

from ccm.cloudprovider import Node, NodeAddress, Service


def _node_dict() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "node-1",
            "uid": "u-1",
            "labels": {"zone": "a"},
            "annotations": {"note": "x"},
        },
        "spec": {
            "providerID": "fake://node-1",
            "podCIDR": "10.244.1.0/24",
            "taints": [{"key": "k", "effect": "NoSchedule"}],
        },
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
    }


def _service_dict() -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": "s-1"},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"port": 80, "protocol": "TCP"}],
            "loadBalancerClass": "example.com/lb",
        },
    }


def test_node_exposes_its_fields() -> None:
    node = Node(_node_dict())
    assert node.name == "node-1"
    assert node.uid == "u-1"
    assert node.provider_id == "fake://node-1"
    assert node.labels == {"zone": "a"}
    assert node.annotations == {"note": "x"}
    assert node.addresses == (NodeAddress(type="InternalIP", address="10.0.0.1"),)
    assert node.pod_cidrs == ("10.244.1.0/24",)
    assert node.taints[0]["key"] == "k"


def test_node_pod_cidrs_prefer_the_plural_field() -> None:
    data = _node_dict()
    data["spec"]["podCIDRs"] = ["10.244.1.0/24", "fd00::/64"]
    assert Node(data).pod_cidrs == ("10.244.1.0/24", "fd00::/64")


def test_empty_node_has_empty_defaults() -> None:
    node = Node({})
    assert (node.name, node.provider_id, node.addresses, node.pod_cidrs) == ("", "", (), ())
    assert node.labels == {}
    assert node.taints == ()


def test_service_exposes_its_fields() -> None:
    svc = Service(_service_dict())
    assert svc.key == "shop/web"
    assert svc.namespace == "shop"
    assert svc.type == "LoadBalancer"
    assert svc.ports[0]["port"] == 80
    assert svc.load_balancer_class == "example.com/lb"
    assert Service({"metadata": {"name": "a"}}).load_balancer_class is None
    assert Service({}).type == "ClusterIP"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda raw: raw.__setitem__("spec", {}), id="top-level key"),
        pytest.param(lambda raw: raw["metadata"].__setitem__("name", "x"), id="nested key"),
        pytest.param(lambda raw: raw["metadata"]["labels"].__setitem__("a", "b"), id="labels"),
        pytest.param(lambda raw: raw["metadata"]["labels"].pop("zone"), id="pop label"),
        pytest.param(lambda raw: raw["spec"]["taints"].append({}), id="append to list"),
        pytest.param(lambda raw: raw["spec"]["taints"][0].__setitem__("key", "x"), id="list item"),
        pytest.param(lambda raw: raw["status"]["addresses"].__setitem__(0, {}), id="list index"),
    ],
)
def test_node_raw_cannot_be_mutated(mutate: Any) -> None:
    node = Node(_node_dict())
    with pytest.raises((TypeError, AttributeError)):
        mutate(node.raw)
    assert node.to_dict() == _node_dict()


def test_service_raw_cannot_be_mutated() -> None:
    svc = Service(_service_dict())
    with pytest.raises(TypeError):
        svc.raw["spec"]["ports"][0]["port"] = 81
    with pytest.raises(TypeError):
        svc.annotations["x"] = "y"  # type: ignore[index]


def test_view_is_isolated_from_later_changes_to_the_source_dict() -> None:
    data = _node_dict()
    node = Node(data)
    data["metadata"]["labels"]["zone"] = "b"
    data["spec"]["taints"].append({"key": "new"})
    assert node.labels == {"zone": "a"}
    assert len(node.taints) == 1


def test_to_dict_returns_an_independent_mutable_copy() -> None:
    node = Node(_node_dict())
    copy = node.to_dict()
    assert copy == _node_dict()
    assert isinstance(copy["spec"]["taints"], list)
    copy["metadata"]["labels"]["zone"] = "b"
    copy["spec"]["taints"].append({"key": "new"})
    assert node.labels == {"zone": "a"}
    assert node.to_dict() == _node_dict()
    assert node.to_dict() is not node.to_dict()


def test_views_compare_by_content_and_are_hashable() -> None:
    assert Node(_node_dict()) == Node(_node_dict())
    assert Node(_node_dict()) != Service(_node_dict())
    assert len({Node(_node_dict()), Node(_node_dict())}) == 1
    assert repr(Node(_node_dict())) == "Node('node-1')"
