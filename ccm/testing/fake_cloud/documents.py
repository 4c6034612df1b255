"""The fake cloud's documents: the config, state file and status file schemas (pydantic), parsed
with a one-line error."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from ccm.cloudprovider import split_provider_id
from ccm.errors import ConfigError
from ccm.testing.fake_cloud.methods import DEFAULT_IP_POOL, _check_cidr, _check_method


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, defer_build=True
    )


AddressType = Literal["Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS"]
ErrorKind = Literal[
    "cloud", "retryAfter", "instanceNotFound", "implementedElsewhere", "notImplemented", "generic"
]


class AddressSpec(_Model):
    type: AddressType
    address: str = Field(min_length=1)


class InstanceSpec(_Model):
    provider_id: str = Field("", alias="providerID")
    instance_type: str = ""
    zone: str = ""
    region: str = ""
    addresses: list[AddressSpec] = Field(default_factory=list)
    exists: bool = True
    shutdown: bool = False
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("provider_id")
    @classmethod
    def _provider_id(cls, value: str) -> str:
        if value:
            split_provider_id(value)
        return value


class DefaultInstanceSpec(_Model):
    instance_type: str = "fake.medium"
    zones: list[str] = Field(default_factory=list)
    region: str = ""
    internal_cidr: str = Field("10.0.0.0/8", alias="internalCIDR")
    external_cidr: str | None = Field(None, alias="externalCIDR")
    hostname_address: bool = True
    use_provided_node_ip: bool = Field(True, alias="useProvidedNodeIP")
    labels: dict[str, str] = Field(default_factory=dict)
    shutdown: bool = False

    @field_validator("internal_cidr", "external_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        return None if value is None else _check_cidr(value)


class ErrorSpec(_Model):
    method: str
    id: str = ""  # a label; a new one makes an otherwise identical rule new (re-armed)
    key: str | None = None
    kind: ErrorKind = "cloud"
    message: str | None = None
    retry_after: float = Field(1.0, ge=0)
    times: int | None = Field(None, ge=1)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return _check_method(value)


class RateLimitSpec(_Model):
    qps: float = Field(gt=0)
    burst: int = Field(1, ge=1)
    reject: bool = False


class RouteSpec(_Model):
    cluster: str = "kubernetes"
    name: str = ""
    target_node: str = Field(min_length=1)
    destination_cidr: str = Field(alias="destinationCIDR")
    blackhole: bool = False
    target_node_addresses: list[AddressSpec] = Field(default_factory=list)

    @field_validator("destination_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return _check_cidr(value)


class FakeCloudStateSpec(_Model):
    """The reloadable sections (state file, and the initial state part of the config)."""

    instances: dict[str, InstanceSpec] | None = None
    default_instance: DefaultInstanceSpec | None = None
    errors: list[ErrorSpec] | None = None
    latency: dict[str, float] | None = None
    ignore_cancellation: list[str] | None = None
    rate_limit: RateLimitSpec | None = None
    routes: list[RouteSpec] | None = None

    @field_validator("ignore_cancellation")
    @classmethod
    def _ignore_cancellation(cls, value: list[str] | None) -> list[str] | None:
        for method in value or ():
            _check_method(method)
        return value

    @field_validator("latency")
    @classmethod
    def _latency(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for method, seconds in (value or {}).items():
            _check_method(method)
            if seconds < 0:
                raise ValueError(f"latency of {method!r} must be >= 0")
        return value


class CapabilitiesSpec(_Model):
    instances_v2: bool = True
    instances: bool = True
    instances_batch: bool = False
    zones: bool = True
    load_balancer: bool = True
    routes: bool = True
    clusters: bool = True


class LoadBalancerSettings(_Model):
    ip_pool: str = DEFAULT_IP_POOL
    ip_mode: Literal["VIP", "Proxy"] | None = None
    reject_protocols: list[str] = Field(default_factory=lambda: ["SCTP"])
    report_ports: bool = False

    @field_validator("ip_pool")
    @classmethod
    def _pool(cls, value: str) -> str:
        return _check_cidr(value)


class ZoneSpec(_Model):
    failure_domain: str = ""
    region: str = ""


class ClustersSpec(_Model):
    names: list[str] = Field(default_factory=lambda: ["kubernetes"])
    master: str = "127.0.0.1"


class FakeCloudConfig(FakeCloudStateSpec):
    """The ``--cloud-config`` document of the fake provider (see :mod:`ccm.testing.fake_cloud`)."""

    provider_name: str = Field("fake", pattern=r"^[a-z0-9]([a-z0-9.+-]*[a-z0-9])?$")
    has_cluster_id: bool = Field(True, alias="hasClusterID")
    capabilities: CapabilitiesSpec = Field(default_factory=CapabilitiesSpec)
    load_balancer: LoadBalancerSettings = Field(default_factory=LoadBalancerSettings)
    local_zone: ZoneSpec = Field(default_factory=ZoneSpec)
    clusters: ClustersSpec = Field(default_factory=ClustersSpec)
    routes_enable_node_addresses: bool = False
    routes_auto_blackhole: bool = False
    max_batch_size: int = Field(100, ge=1)
    state_file: str | None = None
    status_file: str | None = None
    status_interval: float = Field(0.1, ge=0)
    restore_from_status: bool = True
    shared_status: bool = False
    record_calls: bool = True


class _StatusModel(BaseModel):
    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, alias_generator=to_camel, defer_build=True
    )


class StatusPort(_StatusModel):
    name: str = ""
    protocol: str = "TCP"
    port: int
    node_port: int = 0


class StatusLoadBalancer(_StatusModel):
    name: str
    service: str
    service_uid: str = Field("", alias="serviceUID")
    cluster_name: str = ""
    ports: list[StatusPort] = Field(default_factory=list)
    nodes: list[str] = Field(default_factory=list)
    ip: str = ""
    ingress: list[dict[str, Any]] = Field(default_factory=list)


class StatusRoute(_StatusModel):
    name: str = ""
    target_node: str = ""
    destination_cidr: str = Field("", alias="destinationCIDR")
    blackhole: bool = False
    target_node_addresses: list[AddressSpec] = Field(default_factory=list)


class FakeCloudStatus(_StatusModel):
    """The status file written by the fake; read it with :meth:`read` (None until first written)."""

    provider: str = "fake"
    initialized: bool = False
    cluster_name: str = ""
    closed: bool = False
    load_balancers: dict[str, StatusLoadBalancer] = Field(default_factory=dict)
    routes: dict[str, list[StatusRoute]] = Field(default_factory=dict)
    calls: dict[str, int] = Field(default_factory=dict)
    calls_by_key: dict[str, dict[str, int]] = Field(default_factory=dict)
    total_calls: int = 0
    batch_items: dict[str, int] = Field(default_factory=dict)
    state_generation: int = 0
    state_error: str | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> FakeCloudStatus | None:
        """Parse the status file; None if it does not exist yet."""
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        return cls.model_validate(json.loads(raw))

    def load_balancer_for(self, service_key: str) -> StatusLoadBalancer | None:
        """The load balancer of Service ``namespace/name``, if the cloud holds one."""
        for lb in self.load_balancers.values():
            if lb.service == service_key:
                return lb
        return None

    def call_count(self, method: str, key: str | None = None) -> int:
        if key is None:
            return self.calls.get(method, 0)
        return self.calls_by_key.get(method, {}).get(key, 0)


def _loc_part(part: object) -> str:
    text = str(part)
    return text if text and text.isprintable() else repr(part)


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    # a key may hold a newline or be empty: quote such parts so the message stays one line
    loc = ".".join(_loc_part(part) for part in first["loc"]) or "(document)"
    msg = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return f"{loc}: {msg}" + (more if len(errors) > 1 else "")


def _parse_document(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{what} is not valid YAML or JSON: {detail}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} must be a mapping, not {type(doc).__name__}")
    return doc


def _validate_config(data: bytes | str | Mapping[str, Any] | None) -> FakeCloudConfig:
    what = "fake cloud config"
    doc = {} if data is None else data if isinstance(data, Mapping) else _parse_document(data, what)
    try:
        return FakeCloudConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}: {_one_line(exc)}") from None


def _read_state_file(path: Path) -> FakeCloudStateSpec:
    what = f"fake cloud state file {path}"
    raw = path.read_bytes()
    try:
        doc: Any = json.loads(raw) if path.suffix == ".json" else None
    except ValueError:
        doc = None
    if doc is None:
        doc = _parse_document(raw, what)
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} must be a mapping, not {type(doc).__name__}")
    try:
        return FakeCloudStateSpec.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}: {_one_line(exc)}") from None
