"""Pure helpers on Node dicts shared by the node-facing controllers: taints, provided-node-ip,
address comparison and the patches that initialize a Node.

Ports ``node/helpers/{address,taints,labels}.go`` and the modifier logic of
``controllers/node/node_controller.go``. Nothing here does I/O; every function takes cached objects
and returns new values without mutating its inputs.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccm import wellknown
from ccm.cloudprovider import InstanceMetadata, NodeAddress

__all__ = [
    "addresses_changed",
    "addresses_from_provided_node_ip",
    "addresses_patch",
    "apply_merge_patch",
    "find_taint",
    "initialization_patch",
    "label_reconcile_patch",
    "node_addresses",
    "node_condition",
    "parse_provided_node_ip",
    "without_taint",
]

_log = logging.getLogger("ccm.controllers.node")

# : AdditionalLabels keys in these namespaces are discarded (upstream
# ``(^|\.)(kubernetes|k8s)\.io/``).
_RESERVED_LABEL_NAMESPACE = re.compile(r"(^|\.)(kubernetes|k8s)\.io/")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def find_taint(node: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The first taint of ``node`` with ``key``, or None."""
    for taint in (node.get("spec") or {}).get("taints") or ():
        if taint.get("key") == key:
            result: Mapping[str, Any] = taint
            return result
    return None


def without_taint(taints: Iterable[Mapping[str, Any]] | None, key: str) -> list[dict[str, Any]]:
    """A copy of ``taints`` without any taint keyed ``key``."""
    return [dict(t) for t in taints or () if t.get("key") != key]


def node_condition(node: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == condition_type:
            result: Mapping[str, Any] = cond
            return result
    return None


def node_addresses(node: Mapping[str, Any]) -> list[NodeAddress]:
    return [NodeAddress.from_dict(a) for a in (node.get("status") or {}).get("addresses") or ()]


def parse_provided_node_ip(value: str) -> list[IPAddress]:
    """Parse the ``alpha.kubernetes.io/provided-node-ip`` annotation: one IP, or an IPv4,IPv6 pair.

    Raises ValueError with a message naming the problem.
    """
    parts = [p.strip() for p in value.split(",")]
    if len(parts) > 2:
        raise ValueError(f"could not parse {value!r}: must contain at most two IPs")
    ips: list[IPAddress] = []
    for part in parts:
        try:
            ip = ipaddress.ip_address(part)
        except ValueError as exc:
            raise ValueError(f"could not parse {part!r} as an IP address") from exc
        if ip.is_unspecified:
            raise ValueError(f"{part!r} is not a valid node IP: unspecified address")
        ips.append(ip)
    if len(ips) == 2 and ips[0].version == ips[1].version:
        raise ValueError(f"could not parse {value!r}: two IPs must be one IPv4 and one IPv6")
    return ips


def _same_ip(address: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(address.strip()) == ip
    except ValueError:
        return False


def addresses_from_provided_node_ip(
    provided: str, cloud_addresses: Sequence[NodeAddress]
) -> list[NodeAddress]:
    """Filter and reorder cloud addresses by the provided node IP(s).

    Cloud addresses equal to a given IP come first (keeping their types); then the cloud addresses
    whose type matched none of the given IPs. Other addresses of a matched type are dropped. Raises
    ValueError when a given IP is not among the cloud addresses or the annotation is malformed.
    """
    try:
        node_ips = parse_provided_node_ip(provided)
    except ValueError as exc:
        raise ValueError(f"failed to parse node IP {provided!r}: {exc}") from exc
    enforced: list[NodeAddress] = []
    matched_types: set[str] = set()
    for ip in node_ips:
        matched = False
        for addr in cloud_addresses:
            if _same_ip(addr.address, ip):
                enforced.append(addr)
                matched_types.add(addr.type)
                matched = True
        if not matched:
            raise ValueError(
                f"failed to get node address from cloud provider that matches ip: {ip}"
            )
    enforced.extend(a for a in cloud_addresses if a.type not in matched_types)
    return enforced


def addresses_changed(old: Sequence[NodeAddress], new: Sequence[NodeAddress]) -> bool:
    """Upstream ``nodeAddressesChangeDetected``: lengths differ, or some (type, address) of ``new``
    is not the last address of that type in ``old`` (a map by type, so it is lossy for several
    addresses of one type)."""
    if len(old) != len(new):
        return True
    by_type = {a.type: a.address for a in old}
    return any(by_type.get(a.type) != a.address for a in new)


def desired_addresses(
    node: Mapping[str, Any], cloud_addresses: Sequence[NodeAddress]
) -> list[NodeAddress] | None:
    """The addresses the Node should carry, or None when the cloud returned none.

    Keeps the Node's Hostname addresses when the cloud gives no Hostname, then applies
    provided-node-ip
    (ValueError when it does not match).
    """
    if not cloud_addresses:
        return None
    result = list(cloud_addresses)
    if not any(a.type == wellknown.ADDRESS_HOSTNAME for a in result):
        result.extend(a for a in node_addresses(node) if a.type == wellknown.ADDRESS_HOSTNAME)
    provided = ((node.get("metadata") or {}).get("annotations") or {}).get(
        wellknown.ANNOTATION_PROVIDED_NODE_IP
    )
    if provided is not None:
        result = addresses_from_provided_node_ip(provided, result)
    return result


def initialization_patch(node: Mapping[str, Any], metadata: InstanceMetadata) -> dict[str, Any]:
    """The patch that initializes ``node`` from the cloud's ``metadata`` in ONE write.

    Sent as a strategic merge patch, for which the apiserver does less work than for a JSON merge
    patch (it merges into the decoded Node instead of encoding the whole Node to JSON, merging and
    decoding it again); for these fields both mean the same: labels merged key by key, the taint
    list (no merge key in the Node's schema) replaced whole, null removes. So
    :func:`apply_merge_patch` gives the Node it writes.

    Sets ``spec.providerID`` when the Node has none, the instance-type/zone/region labels (GA and
    beta) when non-empty, the additional labels that are allowed and not already present, and
    removes the uninitialized taint — all together, so no observer ever sees the taint gone without
    the labels. The Node's ``resourceVersion`` is included as a precondition (a concurrent write
    makes the patch fail with 409).

    Raises ValueError when the provided-node-ip annotation does not match the cloud's addresses.
    """
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    provided = (meta.get("annotations") or {}).get(wellknown.ANNOTATION_PROVIDED_NODE_IP)
    if provided is not None:
        try:
            addresses_from_provided_node_ip(provided, metadata.node_addresses)
        except ValueError as exc:
            raise ValueError(
                f"provided node ip for node {meta.get('name')!r} is not valid: {exc}"
            ) from exc

    existing: Mapping[str, str] = meta.get("labels") or {}
    labels: dict[str, str] = {}
    if metadata.instance_type:
        labels[wellknown.LABEL_INSTANCE_TYPE_BETA] = metadata.instance_type
        labels[wellknown.LABEL_INSTANCE_TYPE] = metadata.instance_type
    if metadata.zone:
        labels[wellknown.LABEL_ZONE_BETA] = metadata.zone
        labels[wellknown.LABEL_ZONE] = metadata.zone
    if metadata.region:
        labels[wellknown.LABEL_REGION_BETA] = metadata.region
        labels[wellknown.LABEL_REGION] = metadata.region
    for key, value in metadata.additional_labels.items():
        if _RESERVED_LABEL_NAMESPACE.search(key):
            _log.warning("Discarding node label %s with kubernetes namespace", key)
            continue
        if key in existing or key in labels:
            if existing.get(key, labels.get(key)) != value:
                _log.warning("Discarding node label %s that is already present", key)
            continue
        labels[key] = value

    patch_spec: dict[str, Any] = {
        "taints": without_taint(spec.get("taints"), wellknown.TAINT_UNINITIALIZED) or None,
    }
    if not spec.get("providerID") and metadata.provider_id:
        patch_spec["providerID"] = metadata.provider_id
    patch_meta: dict[str, Any] = {"resourceVersion": meta.get("resourceVersion")}
    if labels:
        patch_meta["labels"] = labels
    return {"metadata": patch_meta, "spec": patch_spec}


def addresses_patch(addresses: Sequence[NodeAddress]) -> dict[str, Any]:
    """The strategic merge patch of ``nodes/status`` that makes ``status.addresses`` exactly
    ``addresses``: the ``$patch: replace`` element replaces the list whole (without it the
    apiserver would merge by address type, folding two addresses of one type into one)."""
    return {"status": {"addresses": [{"$patch": "replace"}, *(a.to_dict() for a in addresses)]}}


def apply_merge_patch(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as the apiserver stores it after the JSON merge patch ``patch`` (RFC 7386), without
    mutating ``obj``: only the mappings on the path of a patched key are copied, everything else is
    shared with ``obj`` (so the result, like a cached object, must not be mutated).

    Lets a controller that only writes a merge patch know the Node it wrote without decoding the
    apiserver's answer (a whole Node).
    """
    out = dict(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            current = out.get(key)
            out[key] = apply_merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def label_reconcile_patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """Labels to write so each GA label equals its beta label (beta is the source of truth), or
    None."""
    labels: Mapping[str, str] = (node.get("metadata") or {}).get("labels") or {}
    update = {
        ga: labels[beta]
        for beta, ga in wellknown.BETA_TO_GA_LABELS
        if beta in labels and labels.get(ga) != labels[beta]
    }
    return {"metadata": {"labels": update}} if update else None
