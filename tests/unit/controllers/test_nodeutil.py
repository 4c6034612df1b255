"""Pure node helpers: provided-node-ip filtering, address change detection, initialization patches.

Upstream table cases (node/helpers/address_test.go, controllers/node/node_controller_test.go) are
ported as pytest.param(..., id=<upstream case name>).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ccm import wellknown
from ccm.cloudprovider import InstanceMetadata, NodeAddress
from ccm.controllers import nodeutil
from ccm.kube.fake import patches as fake_patches

H = "hostname"


def A(t: str, a: str) -> NodeAddress:
    return NodeAddress(type=t, address=a)


IIP, EIP, IDNS, EDNS, HN = "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS", "Hostname"


@pytest.mark.parametrize(
    ("node_ip", "cloud", "expected"),
    [
        pytest.param(
            "10.1.1.1",
            [A(IIP, "10.1.1.1"), A(HN, H)],
            [A(IIP, "10.1.1.1"), A(HN, H)],
            id="A single InternalIP",
        ),
        pytest.param(
            "55.55.55.55",
            [A(IIP, "10.1.1.1"), A(EIP, "55.55.55.55"), A(HN, H)],
            [A(EIP, "55.55.55.55"), A(IIP, "10.1.1.1"), A(HN, H)],
            id="NodeIP is external",
        ),
        pytest.param(
            "55.55.55.55",
            [
                A(IIP, "44.44.44.44"),
                A(EIP, "44.44.44.44"),
                A(IIP, "55.55.55.55"),
                A(EIP, "55.55.55.55"),
                A(HN, H),
            ],
            [A(IIP, "55.55.55.55"), A(EIP, "55.55.55.55"), A(HN, H)],
            id="InternalIP and ExternalIP are the same",
        ),
        pytest.param(
            "10.1.1.1",
            [
                A(IIP, "10.1.1.1"),
                A(EIP, "55.55.55.55"),
                A(IDNS, "ip-10-1-1-1.internal"),
                A(EDNS, "ec2-55.example.com"),
                A(HN, H),
            ],
            [
                A(IIP, "10.1.1.1"),
                A(EIP, "55.55.55.55"),
                A(IDNS, "ip-10-1-1-1.internal"),
                A(EDNS, "ec2-55.example.com"),
                A(HN, H),
            ],
            id="An Internal/ExternalIP, an Internal/ExternalDNS",
        ),
        pytest.param(
            "10.1.1.1",
            [
                A(IIP, "10.1.1.1"),
                A(IIP, "10.2.2.2"),
                A(IIP, "10.3.3.3"),
                A(EIP, "55.55.55.55"),
                A(HN, H),
            ],
            [A(IIP, "10.1.1.1"), A(EIP, "55.55.55.55"), A(HN, H)],
            id="An Internal with multiple internal IPs",
        ),
        pytest.param(
            "10.2.2.2",
            [A(IIP, "10.1.1.1"), A(EIP, "55.55.55.55"), A(HN, H)],
            None,
            id="An InternalIP that isn't valid: should error",
        ),
        pytest.param(
            "2600:1f14:1d4:d101::ba3d",
            [A(IIP, "10.1.1.1"), A(IIP, "2600:1f14:1d4:d101:0:0:0:ba3d"), A(HN, H)],
            [A(IIP, "2600:1f14:1d4:d101:0:0:0:ba3d"), A(HN, H)],
            id="Dual-stack cloud, with nodeIP, different IPv6 formats",
        ),
        pytest.param(
            "10.1.1.1,fc01:1234::5678",
            [A(IIP, "10.1.1.1"), A(HN, H)],
            None,
            id="Single-stack cloud, dual-stack request",
        ),
        pytest.param(
            "10.1.1.1,fc01:1234::5678",
            [A(IIP, "10.1.1.1"), A(IIP, "fc01:1234::5678"), A(HN, H)],
            [A(IIP, "10.1.1.1"), A(IIP, "fc01:1234::5678"), A(HN, H)],
            id="Dual-stack cloud, IPv4 first, IPv4-primary request",
        ),
        pytest.param(
            "10.1.1.1,fc01:1234::5678",
            [A(IIP, "fc01:1234::5678"), A(IIP, "10.1.1.1"), A(HN, H)],
            [A(IIP, "10.1.1.1"), A(IIP, "fc01:1234::5678"), A(HN, H)],
            id="Dual-stack cloud, IPv6 first, IPv4-primary request",
        ),
        pytest.param(
            "10.1.1.1,fc01:1234::5678",
            [
                A(IIP, "10.1.1.1"),
                A(IIP, "10.1.1.2"),
                A(IIP, "fc01:1234::1234"),
                A(IIP, "fc01:1234::5678"),
                A(HN, H),
            ],
            [A(IIP, "10.1.1.1"), A(IIP, "fc01:1234::5678"), A(HN, H)],
            id="Dual-stack cloud, dual-stack request, multiple IPs",
        ),
        pytest.param(
            "10.1.1.1,fc01:1234::5678",
            [
                A(IIP, "10.1.1.1"),
                A(EIP, "55.55.55.55"),
                A(IIP, "fc01:1234::1234"),
                A(IIP, "fc01:1234::5678"),
                A(HN, H),
            ],
            [A(IIP, "10.1.1.1"), A(IIP, "fc01:1234::5678"), A(EIP, "55.55.55.55"), A(HN, H)],
            id="Dual-stack cloud, dual-stack request, extra ExternalIP",
        ),
        pytest.param(
            "fc01:1234::5678,10.1.1.1",
            [
                A(IIP, "10.1.1.1"),
                A(EIP, "55.55.55.55"),
                A(IIP, "fc01:1234::5678"),
                A(EIP, "2001:db1::1"),
                A(HN, H),
            ],
            [
                A(IIP, "fc01:1234::5678"),
                A(IIP, "10.1.1.1"),
                A(EIP, "55.55.55.55"),
                A(EIP, "2001:db1::1"),
                A(HN, H),
            ],
            id="Dual-stack cloud, dual-stack request, multiple ExternalIPs",
        ),
        pytest.param(
            "55.55.55.55,fc01:1234::5678",
            [
                A(IIP, "10.1.1.1"),
                A(EIP, "55.55.55.55"),
                A(IIP, "fc01:1234::5678"),
                A(EIP, "2001:db1::1"),
                A(HN, H),
            ],
            [A(EIP, "55.55.55.55"), A(IIP, "fc01:1234::5678"), A(HN, H)],
            id="Dual-stack cloud, dual-stack request, mixed InternalIP/ExternalIP match",
        ),
    ],
)
def test_get_node_addresses_from_node_ip(
    node_ip: str, cloud: list[NodeAddress], expected: list[NodeAddress] | None
) -> None:
    if expected is None:
        with pytest.raises(ValueError, match=r"node address|parse"):
            nodeutil.addresses_from_provided_node_ip(node_ip, cloud)
    else:
        assert nodeutil.addresses_from_provided_node_ip(node_ip, cloud) == expected


@pytest.mark.parametrize(
    "value",
    ["not-an-ip", "0.0.0.0", "::", "10.0.0.1,10.0.0.2", "10.0.0.1,::1,10.0.0.3"],
)
def test_rejects_malformed_provided_node_ip(value: str) -> None:
    with pytest.raises(ValueError):
        nodeutil.parse_provided_node_ip(value)


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        pytest.param(
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.163")],
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.163")],
            False,
            id="same addresses",
        ),
        pytest.param(
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.164")],
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.163")],
            True,
            id="address differs",
        ),
        pytest.param(
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.164"), A(HN, "h.test")],
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.164")],
            True,
            id="one removed",
        ),
        pytest.param(
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.164")],
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.164"), A(HN, "h.test")],
            True,
            id="one added",
        ),
        pytest.param(
            [A(EIP, "10.0.0.1"), A(IIP, "132.143.154.163")],
            [A(IIP, "10.0.0.1"), A(EIP, "132.143.154.163")],
            True,
            id="types swapped",
        ),
    ],
)
def test_node_addresses_change_detected(
    old: list[NodeAddress], new: list[NodeAddress], changed: bool
) -> None:
    assert nodeutil.addresses_changed(old, new) is changed


def _node(**kw: object) -> dict[str, object]:
    node: dict[str, object] = {
        "metadata": {
            "name": "n1",
            "resourceVersion": "7",
            "labels": kw.get("labels", {}),
            "annotations": kw.get("annotations", {}),
        },
        "spec": {
            "taints": kw.get(
                "taints",
                [{"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}],
            )
        },
        "status": {"addresses": kw.get("addresses", [])},
    }
    if "provider_id" in kw:
        node["spec"]["providerID"] = kw["provider_id"]  # type: ignore[index]
    return node


def test_initialization_patch_removes_taint_together_with_topology_labels() -> None:
    node = _node(
        taints=[
            {"key": "other", "effect": "NoExecute"},
            {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"},
        ]
    )
    before = copy.deepcopy(node)
    md = InstanceMetadata(provider_id="fake://n1", instance_type="m5.large", zone="z1", region="r1")
    patch = nodeutil.initialization_patch(node, md)
    assert node == before, "the cached node must not be mutated"
    assert patch["metadata"]["resourceVersion"] == "7"
    assert patch["metadata"]["labels"] == {
        wellknown.LABEL_INSTANCE_TYPE: "m5.large",
        wellknown.LABEL_INSTANCE_TYPE_BETA: "m5.large",
        wellknown.LABEL_ZONE: "z1",
        wellknown.LABEL_ZONE_BETA: "z1",
        wellknown.LABEL_REGION: "r1",
        wellknown.LABEL_REGION_BETA: "r1",
    }
    assert patch["spec"]["taints"] == [{"key": "other", "effect": "NoExecute"}]
    assert patch["spec"]["providerID"] == "fake://n1"


def test_initialization_patch_nulls_taints_when_only_the_cloud_taint_was_there() -> None:
    patch = nodeutil.initialization_patch(_node(), InstanceMetadata(provider_id="fake://n1"))
    assert patch["spec"]["taints"] is None
    assert "labels" not in patch["metadata"]


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"metadata": {"labels": {"a": "1"}}, "spec": {"taints": None}}, id="init"),
        pytest.param({"spec": {"taints": [{"key": "k"}], "providerID": "x"}}, id="list-replaced"),
        pytest.param({"metadata": {"labels": None}}, id="delete-map"),
        pytest.param({"spec": None, "extra": {"deep": {"x": 1}}}, id="delete-and-create"),
        pytest.param({"status": {"addresses": {"now": "a map"}}}, id="list-becomes-map"),
        pytest.param({"metadata": {"name": {"a": None}}}, id="scalar-becomes-map"),
        pytest.param({}, id="empty"),
    ],
)
def test_apply_merge_patch_matches_the_apiserver_and_never_mutates(patch: dict[str, Any]) -> None:
    node = _node(
        taints=[{"key": wellknown.TAINT_UNINITIALIZED, "effect": "NoSchedule"}],
        addresses=[{"type": "Hostname", "address": "n1"}],
    )
    node["metadata"]["labels"] = {"keep": "me"}  # type: ignore[index]
    before = copy.deepcopy(node)
    result = nodeutil.apply_merge_patch(node, patch)
    assert node == before, "the cached node must not be mutated"
    assert result == fake_patches.apply_merge_patch(node, patch)


def test_apply_merge_patch_of_the_initialization_patch() -> None:
    node = _node(taints=[{"key": wellknown.TAINT_UNINITIALIZED, "effect": "NoSchedule"}])
    md = InstanceMetadata(provider_id="fake://n1", zone="z1")
    result = nodeutil.apply_merge_patch(node, nodeutil.initialization_patch(node, md))
    assert nodeutil.find_taint(result, wellknown.TAINT_UNINITIALIZED) is None
    assert "taints" not in result["spec"]
    assert result["spec"]["providerID"] == "fake://n1"
    assert result["metadata"]["labels"][wellknown.LABEL_ZONE] == "z1"
    assert result["metadata"]["resourceVersion"] == "7"
    assert nodeutil.find_taint(node, wellknown.TAINT_UNINITIALIZED) is not None


def test_initialization_patch_keeps_existing_provider_id() -> None:
    patch = nodeutil.initialization_patch(
        _node(provider_id="fake://already"), InstanceMetadata(provider_id="fake://other")
    )
    assert "providerID" not in patch["spec"]


@pytest.mark.parametrize(
    ("additional", "existing", "expected"),
    [
        pytest.param(
            {"topology.k8s.cloud/zone-id": "az1", "cloud.example/pool": "p"},
            {},
            {"topology.k8s.cloud/zone-id": "az1", "cloud.example/pool": "p"},
            id="[instanceV2] provided additional labels",
        ),
        pytest.param(
            {
                "kubernetes.io/arch": "x",
                "node.k8s.io/foo": "y",
                "sub.kubernetes.io/z": "w",
                "ok.example/a": "b",
                "existing": "new",
            },
            {"existing": "old"},
            {"ok.example/a": "b"},
            id="[instanceV2] provided additional labels with labels to discard",
        ),
    ],
)
def test_additional_labels_filtering(
    additional: dict[str, str], existing: dict[str, str], expected: dict[str, str]
) -> None:
    patch = nodeutil.initialization_patch(
        _node(labels=existing),
        InstanceMetadata(provider_id="fake://n1", additional_labels=additional),
    )
    assert patch["metadata"].get("labels", {}) == expected


@pytest.mark.parametrize(
    ("provided", "ok"),
    [
        pytest.param("10.0.0.1", True, id="provided node IP address"),
        pytest.param("10.0.0.2", False, id="provided node IP address is not present"),
        pytest.param("not-an-ip", False, id="provided node IP address is not valid"),
    ],
)
def test_initialization_patch_validates_provided_node_ip(provided: str, ok: bool) -> None:
    node = _node(annotations={wellknown.ANNOTATION_PROVIDED_NODE_IP: provided})
    md = InstanceMetadata(provider_id="fake://n1", node_addresses=(A(IIP, "10.0.0.1"),))
    if ok:
        nodeutil.initialization_patch(node, md)
    else:
        with pytest.raises(ValueError, match="provided node ip"):
            nodeutil.initialization_patch(node, md)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param(
            {
                wellknown.LABEL_ZONE_BETA: "foo",
                wellknown.LABEL_REGION_BETA: "bar",
                wellknown.LABEL_INSTANCE_TYPE_BETA: "the-best-type",
            },
            {
                wellknown.LABEL_ZONE: "foo",
                wellknown.LABEL_REGION: "bar",
                wellknown.LABEL_INSTANCE_TYPE: "the-best-type",
            },
            id="requires reconcile",
        ),
        pytest.param(
            {
                wellknown.LABEL_ZONE_BETA: "foo",
                wellknown.LABEL_REGION_BETA: "bar",
                wellknown.LABEL_INSTANCE_TYPE_BETA: "the-best-type",
                wellknown.LABEL_ZONE: "foo",
                wellknown.LABEL_REGION: "bar",
                wellknown.LABEL_INSTANCE_TYPE: "the-best-type",
            },
            None,
            id="doesn't require reconcile",
        ),
        pytest.param(
            {
                wellknown.LABEL_ZONE_BETA: "foo",
                wellknown.LABEL_REGION_BETA: "bar",
                wellknown.LABEL_INSTANCE_TYPE_BETA: "the-best-type",
                wellknown.LABEL_ZONE: "blah",
                wellknown.LABEL_REGION: "blah",
                wellknown.LABEL_INSTANCE_TYPE: "blah",
            },
            {
                wellknown.LABEL_ZONE: "foo",
                wellknown.LABEL_REGION: "bar",
                wellknown.LABEL_INSTANCE_TYPE: "the-best-type",
            },
            id="require reconcile -- secondary labels are different from primary",
        ),
    ],
)
def test_reconcile_node_labels(labels: dict[str, str], expected: dict[str, str] | None) -> None:
    patch = nodeutil.label_reconcile_patch({"metadata": {"labels": labels}})
    if expected is None:
        assert patch is None
    else:
        assert patch == {"metadata": {"labels": expected}}


def test_desired_addresses_keeps_kubelet_hostname_when_cloud_has_none() -> None:
    node = _node(addresses=[{"type": HN, "address": "kubelet-host"}])
    got = nodeutil.desired_addresses(node, [A(IIP, "10.0.0.1")])
    assert got == [A(IIP, "10.0.0.1"), A(HN, "kubelet-host")]
    assert nodeutil.desired_addresses(node, []) is None
