"""Value types of the provider contract: frozen, slotted, keyword-only dataclasses.

Ports the structs of upstream ``cloud.go`` (``InstanceMetadata``, ``Zone``, ``Route``) and the
node-address and
load-balancer-status shapes of k8s.io/api ``core/v1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "InstanceMetadata",
    "LoadBalancerIngress",
    "LoadBalancerStatus",
    "NodeAddress",
    "PortStatus",
    "Route",
    "Zone",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeAddress:
    """One entry of ``node.status.addresses``: ``type`` is Hostname, InternalIP, ExternalIP,
    InternalDNS or ExternalDNS."""

    type: str
    address: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "address": self.address}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeAddress:
        return cls(type=str(data.get("type", "")), address=str(data.get("address", "")))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceMetadata:
    """What InstancesV2.instance_metadata returns for a Node.

    ``provider_id`` is written to ``spec.providerID`` when the Node has none (format
    ``<provider>://<id>``; it must be stable). ``instance_type``, ``zone`` and ``region`` become the
    GA and beta labels when non-empty. ``node_addresses`` becomes ``status.addresses``.
    ``additional_labels`` are added at initialization, except keys in the
    ``kubernetes.io``/``k8s.io`` namespaces and keys already on the Node.
    """

    provider_id: str = ""
    instance_type: str = ""
    node_addresses: tuple[NodeAddress, ...] = ()
    zone: str = ""
    region: str = ""
    additional_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Zone:
    """Failure domain (zone) and region of an instance (legacy Zones capability)."""

    failure_domain: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A pod-CIDR route in the cloud's route table.

    ``name`` is the provider's name for it (ignored on create). ``target_node`` is the Node name.
    ``enable_node_addresses`` is set by the provider on listed routes to opt in to address-change
    detection
    (otherwise ``target_node_addresses`` is ignored). ``blackhole`` marks a route whose target is
    gone.
    """

    name: str = ""
    target_node: str = ""
    destination_cidr: str = ""
    target_node_addresses: tuple[NodeAddress, ...] = ()
    enable_node_addresses: bool = False
    blackhole: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PortStatus:
    """``status.loadBalancer.ingress[].ports[]``."""

    port: int
    protocol: str = "TCP"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"port": self.port, "protocol": self.protocol}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancerIngress:
    """One ingress point of a load balancer: an IP and/or a hostname."""

    ip: str = ""
    hostname: str = ""
    ip_mode: str | None = None  # "VIP" or "Proxy"
    ports: tuple[PortStatus, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ip:
            out["ip"] = self.ip
        if self.hostname:
            out["hostname"] = self.hostname
        if self.ip_mode:
            out["ipMode"] = self.ip_mode
        if self.ports:
            out["ports"] = [p.to_dict() for p in self.ports]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancerStatus:
    """``status.loadBalancer`` of a Service."""

    ingress: tuple[LoadBalancerIngress, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ingress": [i.to_dict() for i in self.ingress]} if self.ingress else {}
