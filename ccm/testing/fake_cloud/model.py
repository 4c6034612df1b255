"""The fake cloud's in-process model: capabilities, instances, recorded calls, load balancers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ccm import wellknown
from ccm.cloudprovider import Node, NodeAddress
from ccm.testing.fake_cloud.documents import DefaultInstanceSpec, InstanceSpec
from ccm.testing.fake_cloud.methods import _address_in, _digest


@dataclass(slots=True, kw_only=True)
class FakeCapabilities:
    """Which capability accessors answer; a False one returns None."""

    instances_v2: bool = True
    instances: bool = True
    zones: bool = True
    load_balancer: bool = True
    routes: bool = True
    clusters: bool = True
    #: InstancesBatch (off by default, so the single-call counters of existing tests keep their
    #: meaning; ``capabilities: {instancesBatch: true}`` in the config turns it on).
    instances_batch: bool = False


@dataclass(slots=True, kw_only=True)
class FakeInstance:
    """One instance of the fake cloud. ``provider_id`` empty means ``<provider>://<name>``."""

    name: str
    provider_id: str = ""
    instance_type: str = ""
    zone: str = ""
    region: str = ""
    addresses: tuple[NodeAddress, ...] = ()
    exists: bool = True
    shutdown: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, name: str, spec: InstanceSpec) -> FakeInstance:
        return cls(
            name=name,
            provider_id=spec.provider_id,
            instance_type=spec.instance_type,
            zone=spec.zone,
            region=spec.region,
            addresses=tuple(NodeAddress(type=a.type, address=a.address) for a in spec.addresses),
            exists=spec.exists,
            shutdown=spec.shutdown,
            labels=dict(spec.labels),
        )


@dataclass(slots=True, kw_only=True)
class DefaultInstance:
    """Generated answers for any node name not listed in ``FakeCloud.instance_table``.

    Addresses and the zone are derived from a hash of the node name, so they are stable across runs.
    """

    instance_type: str = "fake.medium"
    zones: tuple[str, ...] = ()
    region: str = ""
    internal_cidr: str = "10.0.0.0/8"
    external_cidr: str | None = None
    hostname_address: bool = True
    use_provided_node_ip: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    shutdown: bool = False

    @classmethod
    def from_spec(cls, spec: DefaultInstanceSpec) -> DefaultInstance:
        return cls(
            instance_type=spec.instance_type,
            zones=tuple(spec.zones),
            region=spec.region,
            internal_cidr=spec.internal_cidr,
            external_cidr=spec.external_cidr,
            hostname_address=spec.hostname_address,
            use_provided_node_ip=spec.use_provided_node_ip,
            labels=dict(spec.labels),
            shutdown=spec.shutdown,
        )

    def generate(self, name: str, provider_id: str, node: Node | None = None) -> FakeInstance:
        provided = ""
        if node is not None and self.use_provided_node_ip:
            provided = node.annotations.get(wellknown.ANNOTATION_PROVIDED_NODE_IP, "")
        if provided:
            addresses = [
                NodeAddress(type="InternalIP", address=ip.strip()) for ip in provided.split(",")
            ]
        else:
            addresses = [
                NodeAddress(type="InternalIP", address=_address_in(self.internal_cidr, name))
            ]
        if self.external_cidr:
            address = _address_in(self.external_cidr, "external/" + name)
            addresses.append(NodeAddress(type="ExternalIP", address=address))
        if self.hostname_address:
            addresses.append(NodeAddress(type="Hostname", address=name))
        zone = self.zones[_digest("zone/" + name) % len(self.zones)] if self.zones else ""
        return FakeInstance(
            name=name,
            provider_id=provider_id,
            instance_type=self.instance_type,
            zone=zone,
            region=self.region,
            addresses=tuple(addresses),
            shutdown=self.shutdown,
            labels=dict(self.labels),
        )


class FakeCall(NamedTuple):
    """One recorded call: ``(method, key)``; compares equal to a plain tuple."""

    method: str
    key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FakePort:
    name: str = ""
    protocol: str = "TCP"
    port: int = 0
    node_port: int = 0


@dataclass(slots=True, kw_only=True)
class FakeLoadBalancer:
    """A load balancer held by the fake cloud."""

    name: str
    service: str
    service_uid: str = ""
    cluster_name: str = ""
    ports: tuple[FakePort, ...] = ()
    nodes: tuple[str, ...] = ()
    ip: str = ""
    ensure_count: int = 0
    update_count: int = 0
