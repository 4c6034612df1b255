"""The fake cloud provider: an in-memory cloud for unit tests, e2e tests, demos and benchmarks.

Plays the role of upstream ``fake/fake.go`` (k8s.io/cloud-provider), written afresh for ccm. It is
the entry point ``fake`` (``ccm --cloud-provider=fake --cloud-config=fake.yaml``) and is used
in-process by controller tests (``FakeCloud(...)``). It implements every capability of the
contract: InstancesV2, Instances (legacy), Zones, LoadBalancer, Routes and Clusters; each can be
switched off (its accessor then returns ``None``). The optional InstancesBatch capability is
implemented too, but off unless switched on (``FakeCapabilities(instances_batch=True)``, or
``capabilities: {instancesBatch: true}`` in the config); ``max_batch_size`` (config
``maxBatchSize``, default 100) is its ``max_batch_size``.

In-process API (details in the class docstrings)
================================================
``FakeCloud(provider_name="fake", capabilities=FakeCapabilities(routes=False),
instances=[FakeInstance(...)], default_instance=DefaultInstance(...), ...)``; every constructor
argument is also a public attribute (``capabilities.routes = False`` works at any time).

* Instances: ``add_instance(name, ...)``, ``remove_instance(name)``, ``instance_table[name]`` (a
  mutable :class:`FakeInstance`), ``default_instance`` (answers any other node name with generated
  metadata), ``find_instance(name, provider_id)``. (``instances()`` is the capability accessor.)
* Errors: ``inject_error(method, error, key=None, times=None)`` returns an :class:`ErrorRule`;
  ``clear_errors()``.
* Timing: ``set_latency(method, seconds)`` (an ``asyncio.sleep``, so looptime skips it),
  ``ignore_cancellation`` (a set of methods, ``"*"`` for every cloud call, whose latency sleep
  ignores cancellation: a misbehaving provider that answers late instead of stopping),
  ``set_rate_limit(qps, burst, reject=False)`` (token bucket; ``reject=True``: a call finding no
  token is refused at once with a RetryAfterError whose delay is when the next token comes, like
  an HTTP 429 with ``Retry-After``), ``call_hook`` (called, and awaited if it returns
  an awaitable, inside every call: block a call on an Event, observe concurrency, ...).
* Recorded calls: ``calls`` (list of :class:`FakeCall` ``(method, key)`` named tuples),
  ``call_counts`` (Counter per method), ``call_count(method, key=None)``, ``total_calls``,
  ``clear_calls()``.
* Load balancers: ``load_balancers`` (name → :class:`FakeLoadBalancer`),
  ``load_balancer_for(service_key)``.
* Routes: ``route_table`` (cluster → route name → :class:`~ccm.cloudprovider.Route`),
  ``add_route(cluster, route)``, ``set_route_blackhole(cluster, name_or_node)``.
* Lifecycle: ``initialized``, ``init_context``, ``initialized_cluster_name``, ``closed``.
* ``status()`` returns the status document described below; ``reload_state()`` forces a check.

Method names (for ``calls``, errors and latency)
================================================
InstancesV2: ``instance-exists``, ``instance-shutdown``, ``instance-metadata``.
InstancesBatch: ``instance-exists-batch``, ``instance-shutdown-batch``,
``instance-metadata-batch`` (one record, rate-limit charge and latency per batch call, recorded
with key ``""``; the call's identifiers are every node name and provider ID of the batch, so a
keyed rule of a batch method fails the whole call. Per Node, an error rule of the single method,
e.g. ``instance-metadata`` with ``key: node-1``, makes that Node's result the exception.
``batch_items`` / status ``batchItems`` counts the Nodes answered per batch method).
Instances: ``node-addresses``, ``node-addresses-by-provider-id``, ``instance-id``,
``instance-type``, ``instance-type-by-provider-id``, ``instance-exists-by-provider-id``,
``instance-shutdown-by-provider-id``, ``add-ssh-key-to-all-instances``, ``current-node-name``.
Zones: ``get-zone``, ``get-zone-by-provider-id``, ``get-zone-by-node-name``.
LoadBalancer: ``get``, ``create`` (ensure), ``update``, ``delete`` (ensure deleted).
Routes: ``list-routes``, ``create-route``, ``delete-route``. Clusters: ``list-clusters``,
``master``. Lifecycle: ``initialize``, ``aclose``. ``get_load_balancer_name`` is synchronous and
not recorded.

The key recorded with a call is the node name (InstancesV2 and name-keyed legacy methods), the
provider ID (``*-by-provider-id``), the service key ``namespace/name`` (load balancers), the target
node name (``create-route``, ``delete-route``), the cluster name (``list-routes``, ``master``,
``initialize``), the user (``add-ssh-key-to-all-instances``), the hostname (``current-node-name``)
or ``""``. An error rule with a ``key`` matches a call when the key equals any identifier of the
call: node name or provider ID; service key, service UID or load-balancer name; cluster name,
target node, route name or destination CIDR. Method ``"*"`` matches every cloud call but not
``initialize``/``aclose``.

Every call re-reads the state file if it changed, records the call, waits for the rate limiter,
sleeps its latency (at least ``asyncio.sleep(0)``: it suspends like real I/O), calls
``call_hook``, raises an injected error if a rule matches, and then does its work.

Config file (``--cloud-config``, YAML or JSON; every key is optional)
=====================================================================
::

    providerName: fake              # providerID prefix "<providerName>://"
    hasClusterID: true
    capabilities: {instancesV2: true, instances: true, zones: true, loadBalancer: true,
                   routes: true, clusters: true, instancesBatch: false}
    maxBatchSize: 100                 # InstancesBatch.max_batch_size
    loadBalancer:
      ipPool: 192.0.2.0/24          # ingress IP hashed from the service key, probing on collision
      ipMode: null                  # or VIP / Proxy (status.loadBalancer.ingress[].ipMode)
      rejectProtocols: [SCTP]       # ensure fails for a Service with a port of these protocols
      reportPorts: false            # fill status.loadBalancer.ingress[].ports
    localZone: {failureDomain: "", region: ""}     # Zones.get_zone()
    clusters: {names: [kubernetes], master: 127.0.0.1}
    routesEnableNodeAddresses: false  # listed routes opt in to node-address change detection
    routesAutoBlackhole: false        # listed routes whose target instance is gone are blackhole
    stateFile: /tmp/t/state.json      # written by the test, re-read on change (relative: to cwd)
    statusFile: /tmp/t/status.json    # written by the fake (temporary file + rename)
    statusInterval: 0.1               # seconds; changes reach the status file this late
    restoreFromStatus: true           # initialize() reloads LBs and routes from statusFile
    sharedStatus: false               # statusFile is the cloud of several processes (replicas)
    recordCalls: true                 # keep the (method, key) list; counters are always kept
    # the initial state: the same sections as the state file
    instances:
      node-1:
        providerID: fake://i-0001     # default: fake://<node name>
        instanceType: m5.large
        zone: zone-a
        region: region-1
        addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: node-1}]
        exists: true                  # false: gone (exists → False, metadata → InstanceNotFound)
        shutdown: false
        labels: {example.com/rack: r1}  # InstanceMetadata.additional_labels
    defaultInstance:                  # answers ANY node name not under instances
      instanceType: fake.medium
      zones: [zone-a, zone-b]         # picked by a hash of the node name
      region: region-1
      internalCIDR: 10.0.0.0/8        # InternalIP hashed from the node name
      externalCIDR: null              # optional ExternalIP, hashed too
      hostnameAddress: true           # add a Hostname address equal to the node name
      useProvidedNodeIP: true         # InstancesV2: alpha.kubernetes.io/provided-node-ip wins
      labels: {}
      shutdown: false
    errors:
      - {method: instance-metadata, key: node-1, kind: cloud, message: boom, times: 3}
      - {method: create, kind: retryAfter, retryAfter: 5}      # no times: forever
      # optional per rule: id (a label; FakeCloudState gives each injection a new one)
    latency: {"*": 0.01, instance-metadata: 0.2}
    ignoreCancellation: [instance-exists]   # or ["*"]: these calls sleep their whole latency even
                                            # when cancelled, then answer as if nothing happened
    rateLimit: {qps: 50, burst: 10}   # reject: true answers 429 + hint instead of waiting
    routes:
      - {cluster: kubernetes, name: r1, targetNode: node-1, destinationCIDR: 10.244.1.0/24}

Error kinds: ``cloud`` (CloudProviderError), ``retryAfter`` (RetryAfterError after ``retryAfter``
seconds, default 1), ``instanceNotFound``, ``implementedElsewhere``, ``notImplemented``
(NotImplementedByProviderError), ``generic`` (RuntimeError: the "any other exception" path).
A malformed config raises ConfigError with one line naming the first problem; the registry
prefixes ``could not init cloud provider "fake": ``.

State file (``stateFile``: written by tests, usually with :class:`FakeCloudState`)
==================================================================================
The sections ``instances``, ``defaultInstance``, ``errors``, ``latency``, ``ignoreCancellation``,
``rateLimit`` and ``routes``, with the schema above. The fake stats the file on every call (mtime,
size, inode) and re-reads it when it changed. A section is applied, replacing the fake's current
value, when it appears or its content differs from the version applied last; ``null`` clears it. An
unchanged section is left alone, so rewriting the file to change the latency neither resets the
``times`` counters of errors nor drops the routes the controllers created (an error rule is re-armed
when its ``id`` changes: ``FakeCloudState.inject_error`` gives every injection a new one). A section
removed from the file leaves the current value in place; a missing file changes nothing. A malformed
file fails the factory at start-up; later it is ignored (the previous state stays) and reported as
``stateError`` in the status file. Write it atomically (``FakeCloudState.write`` does, and moves the
mtime forward so that quick rewrites are never missed).

Status file (``statusFile``: written by the fake, read with :class:`FakeCloudStatus`)
=====================================================================================
JSON, replaced atomically. Nothing is written before the first call (so a standby replica leaves
the leader's file alone). ``initialize`` and ``aclose`` write it at once; any other change (a call,
a load balancer, a route, a state reload) reaches it within ``statusInterval`` seconds: writes are
coalesced, so thousands of changes do not rewrite a large file thousands of times (0: write after
every change). Tests poll it::

    {"provider": "fake", "initialized": true, "clusterName": "kubernetes", "closed": false,
     "loadBalancers": {"a1b2...": {"name": "a1b2...", "service": "default/web",
         "serviceUID": "1b2...", "clusterName": "kubernetes",
         "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}],
         "nodes": ["node-1"], "ip": "192.0.2.17", "ingress": [{"ip": "192.0.2.17"}]}},
     "routes": {"kubernetes": [{"name": "...", "targetNode": "node-1",
         "destinationCIDR": "10.244.1.0/24", "blackhole": false, "targetNodeAddresses": []}]},
     "calls": {"instance-metadata": 3}, "callsByKey": {"instance-metadata": {"node-1": 3}},
     "totalCalls": 3, "batchItems": {"instance-metadata-batch": 0}, "stateGeneration": 1,
     "stateError": null}

Several processes, one cloud (``sharedStatus: true``)
=====================================================
Replicas of a daemon each hold their own fake; with ``sharedStatus`` the status file is their
common cloud. Each call first reloads the load balancers and routes from the status file when
another process changed it (before the latency sleep and again after it, so the change a call
makes applies to the current cloud), and every change is written at once (as with
``statusInterval: 0``). A deposed leader that keeps calling therefore acts on the same cloud as
the new leader, as it would on a real cloud. A reload, the change that follows and the write are
one step under a lock on ``<statusFile>.lock`` (``flock``), so two processes that change the cloud
at the same moment lose neither change.

Load balancers and routes
=========================
Load balancers are keyed by ``default_load_balancer_name(service)`` (``a-<namespace>-<name>`` for
a Service without a UID). Ensure is idempotent (same IP every time; ``spec.loadBalancerIP`` is
honoured) and replaces ports and backends. It fails with CloudProviderError(message) when the
Service has the annotation ``fake.ccm.io/reject: "<message>"`` or a port of a rejected protocol.
Update replaces the backends and fails when the load balancer does not exist. Delete is
idempotent. Routes are named ``<cluster>-<name hint>-<cidr>``. Create is idempotent for the same
target and CIDR and fails for a CIDR already routed to another node. Delete removes the route of
that name (else of that target and CIDR) and is a no-op when none matches: upstream's fake fails
there and poisons every later call, while a real cloud's delete is idempotent.

Everything runs in one event loop; no locks are needed because state changes happen between
awaits. File I/O is synchronous and small (a test double, not a production provider).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import inspect
import ipaddress
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from ccm import clock, wellknown
from ccm.cloudprovider import (
    CloudProvider,
    Clusters,
    InitContext,
    InstanceMetadata,
    Instances,
    InstancesBatch,
    InstancesV2,
    LoadBalancer,
    LoadBalancerIngress,
    LoadBalancerStatus,
    Node,
    NodeAddress,
    PortStatus,
    Route,
    Routes,
    Service,
    Zone,
    Zones,
    default_load_balancer_name,
    split_provider_id,
)
from ccm.errors import (
    CloudProviderError,
    ConfigError,
    ImplementedElsewhereError,
    InstanceNotFoundError,
    NotImplementedByProviderError,
    RetryAfterError,
)

__all__ = [
    "ALL_METHODS",
    "CLOUD_METHODS",
    "DEFAULT_IP_POOL",
    "REJECT_ANNOTATION",
    "DefaultInstance",
    "ErrorRule",
    "FakeCall",
    "FakeCapabilities",
    "FakeCloud",
    "FakeCloudConfig",
    "FakeCloudFactory",
    "FakeCloudState",
    "FakeCloudStatus",
    "FakeInstance",
    "FakeLoadBalancer",
    "FakePort",
    "make_error",
]

_log = logging.getLogger("ccm.testing.fake_cloud")

#: Annotation on a Service that makes ensure_load_balancer fail with its value as the message.
REJECT_ANNOTATION = "fake.ccm.io/reject"
DEFAULT_IP_POOL = "192.0.2.0/24"  # RFC 5737 documentation range

#: Every cloud API method name (matched by ``"*"``).
CLOUD_METHODS: frozenset[str] = frozenset(
    {
        "instance-exists",
        "instance-shutdown",
        "instance-metadata",
        "instance-exists-batch",
        "instance-shutdown-batch",
        "instance-metadata-batch",
        "node-addresses",
        "node-addresses-by-provider-id",
        "instance-id",
        "instance-type",
        "instance-type-by-provider-id",
        "instance-exists-by-provider-id",
        "instance-shutdown-by-provider-id",
        "add-ssh-key-to-all-instances",
        "current-node-name",
        "get-zone",
        "get-zone-by-provider-id",
        "get-zone-by-node-name",
        "get",
        "create",
        "update",
        "delete",
        "list-routes",
        "create-route",
        "delete-route",
        "list-clusters",
        "master",
    }
)
_LIFECYCLE_METHODS: frozenset[str] = frozenset({"initialize", "aclose"})
#: Every recorded method name.
ALL_METHODS: frozenset[str] = CLOUD_METHODS | _LIFECYCLE_METHODS
_WILDCARD = "*"


def _check_method(method: str) -> str:
    if method != _WILDCARD and method not in ALL_METHODS:
        raise ValueError(
            f"unknown fake cloud method {method!r} (known: {', '.join(sorted(ALL_METHODS))})"
        )
    return method


@functools.lru_cache(maxsize=64)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=True)


def _check_cidr(value: str) -> str:
    try:
        return str(_network(value.strip()))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc})") from None


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _address_in(cidr: str, seed: str) -> str:
    """A host address of ``cidr`` chosen by a hash of ``seed`` (deterministic)."""
    net = _network(cidr)
    size = net.num_addresses
    offset = 1 + _digest(seed) % (size - 2) if size > 2 else _digest(seed) % size
    return str(net.network_address + offset)


# ----------------------------------------------------------------------------------------------
# Config, state and status documents (pydantic)
# ----------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


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
    """The ``--cloud-config`` document of the fake provider (schema in the module docstring)."""

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
    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)


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


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: How long a call waits for another process's hold of the shared status lock (sharedStatus).
SHARED_LOCK_WAIT = 1.0


def _file_key(path: Path) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of ``path``, None if it does not exist: a change detector."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _atomic_write(path: Path, data: bytes, *, newer: bool = False) -> None:
    """Replace ``path`` with ``data`` via a temporary file and rename.

    ``newer``: give the new file an mtime strictly after the old one's. File times come from a
    coarse clock and a freed inode number may be reused at once, so two quick writes of the same
    size could otherwise look unchanged to a reader that compares (mtime, size, inode).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if newer:
            try:
                previous = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                previous = 0
            stamp = max(time.time_ns(), previous + 1_000)
            os.utime(tmp, ns=(stamp, stamp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# In-process model
# ----------------------------------------------------------------------------------------------


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


ErrorSource = BaseException | type[BaseException] | Callable[[], BaseException]


def make_error(
    kind: ErrorKind, message: str | None = None, retry_after: float = 1.0
) -> BaseException:
    """Build the exception for an error rule ``kind`` (see the module docstring)."""
    if kind == "retryAfter":
        return RetryAfterError(message or "injected: retry later", retry_after)
    if kind == "generic":
        return RuntimeError(message or "injected generic error")
    cls: type[CloudProviderError] = {
        "cloud": CloudProviderError,
        "instanceNotFound": InstanceNotFoundError,
        "implementedElsewhere": ImplementedElsewhereError,
        "notImplemented": NotImplementedByProviderError,
    }[kind]
    return cls(message)


@dataclass(slots=True, kw_only=True)
class ErrorRule:
    """Raise ``error`` from calls of ``method`` (or ``"*"``) whose identifiers include ``key``
    (None: every call).

    ``times`` is how many more calls fail (None: forever); ``fired`` counts the failures raised so
    far. ``error`` may be an exception instance (raised each time), an exception class (called with
    no arguments) or a factory returning one.
    """

    method: str
    error: ErrorSource
    key: str | None = None
    times: int | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        _check_method(self.method)
        if self.times is not None and self.times < 0:
            raise ValueError("ErrorRule.times must be >= 0 or None")

    @classmethod
    def from_spec(cls, spec: ErrorSpec) -> ErrorRule:
        return cls(
            method=spec.method,
            error=functools.partial(make_error, spec.kind, spec.message, spec.retry_after),
            key=spec.key,
            times=spec.times,
        )

    def matches(self, method: str, keys: Iterable[str]) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method == _WILDCARD:
            if method in _LIFECYCLE_METHODS:
                return False
        elif self.method != method:
            return False
        return self.key is None or self.key in keys

    def build(self) -> BaseException:
        error = self.error
        if isinstance(error, BaseException):
            return error.with_traceback(None)
        built = error()
        if not isinstance(built, BaseException):
            raise TypeError(
                f"error factory for {self.method!r} returned {built!r}, not an exception"
            )
        return built


async def _sleep_ignoring_cancellation(seconds: float) -> None:
    """Sleep ``seconds`` even when cancelled meanwhile: the injected fault of a provider that
    ignores cancellation (a blocking SDK call that cannot be interrupted, a swallowed
    ``CancelledError``). The caller then gets the answer late, as if it had never been cancelled;
    the framework must not use it."""
    deadline = clock.monotonic() + seconds
    while (remaining := deadline - clock.monotonic()) > 0:
        try:
            await clock.sleep(remaining)
        except asyncio.CancelledError:  # swallowed on purpose: the fault being modelled
            left = deadline - clock.monotonic()
            _log.info("fake cloud call ignores its cancellation (%.3g s left)", left)
            continue


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


class _TokenBucket:
    """A token bucket on the loop clock; ``reserve()`` returns how long the caller must wait."""

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("rate limit needs qps > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    def reserve(self, now: float) -> float:
        if self._stamp is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def take(self, now: float) -> float:
        """Take a token if there is one (0.0), else take nothing and return when there will be."""
        wait = self.reserve(now)
        if wait > 0:
            self._tokens += 1.0
            return (1.0 - self._tokens) / self.qps
        return 0.0


# ----------------------------------------------------------------------------------------------
# The provider
# ----------------------------------------------------------------------------------------------


_STATE_SECTIONS: tuple[str, ...] = tuple(FakeCloudStateSpec.model_fields)
_EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


class FakeCloud(CloudProvider):
    """An in-memory cloud implementing every capability of the contract (see the module docstring).

    The capability objects are the provider itself; each accessor returns ``self``, or None when
    switched off in ``capabilities``.
    """

    name = "fake"

    def __init__(
        self,
        *,
        provider_name: str = "fake",
        capabilities: FakeCapabilities | Mapping[str, bool] | None = None,
        instances: Iterable[FakeInstance] | Mapping[str, FakeInstance] = (),
        default_instance: DefaultInstance | None = None,
        ip_pool: str = DEFAULT_IP_POOL,
        ip_mode: str | None = None,
        reject_protocols: Iterable[str] = ("SCTP",),
        report_port_status: bool = False,
        local_zone: Zone | None = None,
        cluster_names: Iterable[str] = ("kubernetes",),
        master_address: str = "127.0.0.1",
        cluster_id: bool = True,
        routes_enable_node_addresses: bool = False,
        routes_auto_blackhole: bool = False,
        max_batch_size: int = 100,
        latency: Mapping[str, float] | None = None,
        rate_limit: tuple[float, int] | tuple[float, int, bool] | None = None,
        record_calls: bool = True,
        state_file: str | os.PathLike[str] | None = None,
        status_file: str | os.PathLike[str] | None = None,
        status_interval: float = 0.1,
        restore_from_status: bool = True,
        shared_status: bool = False,
        call_hook: Callable[[FakeCall], Awaitable[None] | None] | None = None,
    ) -> None:
        if not provider_name:
            raise ValueError("provider_name cannot be empty")
        self.name = provider_name
        if capabilities is None:
            capabilities = FakeCapabilities()
        elif not isinstance(capabilities, FakeCapabilities):
            capabilities = FakeCapabilities(**dict(capabilities))
        self.capabilities: FakeCapabilities = capabilities
        if isinstance(instances, Mapping):
            instances = instances.values()
        self.instance_table: dict[str, FakeInstance] = {i.name: i for i in instances}
        self.default_instance = default_instance
        self.ip_pool = _check_cidr(ip_pool)
        self.ip_mode = ip_mode
        self.reject_protocols: set[str] = {p.upper() for p in reject_protocols}
        self.report_port_status = report_port_status
        self.local_zone = local_zone or Zone()
        self.cluster_names: list[str] = list(cluster_names)
        self.master_address = master_address
        self.cluster_id = cluster_id
        self.routes_enable_node_addresses = routes_enable_node_addresses
        self.routes_auto_blackhole = routes_auto_blackhole
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        #: InstancesBatch.max_batch_size
        self.max_batch_size = max_batch_size
        #: Nodes answered by the batch methods, per method (the status file's ``batchItems``).
        self.batch_items: collections.Counter[str] = collections.Counter()
        self.errors: list[ErrorRule] = []
        self.latency: dict[str, float] = {}
        for method, seconds in (latency or {}).items():
            self.set_latency(method, seconds)
        #: Methods (``"*"``: every cloud call) whose latency sleep ignores cancellation.
        self.ignore_cancellation: set[str] = set()
        self._bucket: _TokenBucket | None = None
        self._reject = False
        if rate_limit is not None:
            self.set_rate_limit(*rate_limit)
        self.record_calls = record_calls
        #: Configurations applied by :meth:`reload` since start-up.
        self.config_reloads = 0
        self.call_hook = call_hook

        self.load_balancers: dict[str, FakeLoadBalancer] = {}
        self._lb_ips: dict[str, str] = {}
        self.route_table: dict[str, dict[str, Route]] = {}

        self._calls: list[FakeCall] = []
        self.call_counts: collections.Counter[str] = collections.Counter()
        self._calls_by_key: dict[str, collections.Counter[str]] = {}
        self.total_calls = 0

        self.initialized = False
        self.init_context: InitContext | None = None
        self.initialized_cluster_name: str | None = None
        self.closed = False

        self.state_file = Path(state_file) if state_file is not None else None
        self.state_generation = 0
        self.state_error: str | None = None
        self._state_key: tuple[int, int, int] | None = None
        self._applied: dict[str, str] = {}
        self.status_file = Path(status_file) if status_file is not None else None
        self.status_interval = status_interval
        self.restore_from_status = restore_from_status
        self.shared_status = shared_status
        self._status_key: tuple[int, int, int] | None = None  # the status file we last saw
        self._status_handle: asyncio.TimerHandle | None = None
        self._active = (
            False  # no status file writes before the first call (standby replicas stay quiet)
        )
        self._status_dirty = False
        self._lock_fd: int | None = None  # the shared status file's lock (sharedStatus)
        self._lock_held = False

    # ---- construction from a config document

    @classmethod
    def from_config(
        cls, config: bytes | str | Mapping[str, Any] | FakeCloudConfig | None
    ) -> FakeCloud:
        """Build a fake from a config document: YAML/JSON bytes or text, a mapping, or a parsed one.

        Raises ConfigError with one line naming the problem.
        """
        cfg = config if isinstance(config, FakeCloudConfig) else _validate_config(config)
        caps = cfg.capabilities
        lb = cfg.load_balancer
        cloud = cls(
            provider_name=cfg.provider_name,
            capabilities=FakeCapabilities(
                instances_v2=caps.instances_v2,
                instances=caps.instances,
                zones=caps.zones,
                load_balancer=caps.load_balancer,
                routes=caps.routes,
                clusters=caps.clusters,
                instances_batch=caps.instances_batch,
            ),
            max_batch_size=cfg.max_batch_size,
            ip_pool=lb.ip_pool,
            ip_mode=lb.ip_mode,
            reject_protocols=lb.reject_protocols,
            report_port_status=lb.report_ports,
            local_zone=Zone(
                failure_domain=cfg.local_zone.failure_domain, region=cfg.local_zone.region
            ),
            cluster_names=cfg.clusters.names,
            master_address=cfg.clusters.master,
            cluster_id=cfg.has_cluster_id,
            routes_enable_node_addresses=cfg.routes_enable_node_addresses,
            routes_auto_blackhole=cfg.routes_auto_blackhole,
            record_calls=cfg.record_calls,
            state_file=cfg.state_file,
            status_file=cfg.status_file,
            status_interval=cfg.status_interval,
            restore_from_status=cfg.restore_from_status,
            shared_status=cfg.shared_status,
        )
        for section in _STATE_SECTIONS:
            if section in cfg.model_fields_set:
                cloud._apply_section(section, cfg)
        if cloud.state_file is not None:
            cloud._reload_state(strict=True)
        return cloud

    async def reload(self, config: bytes) -> None:
        """The contract's optional reload hook: apply a new ``--cloud-config`` document's state
        sections (``instances``, ``defaultInstance``, ...) and ``recordCalls``; the other
        settings keep their start-up values. A malformed document raises ConfigError and changes
        nothing. Each reload applied is counted in :attr:`config_reloads`."""
        cfg = _validate_config(config)
        for section in _STATE_SECTIONS:
            if section in cfg.model_fields_set:
                self._apply_section(section, cfg)
        self.record_calls = cfg.record_calls
        self.config_reloads += 1

    # ---- capability accessors

    def has_cluster_id(self) -> bool:
        return self.cluster_id

    def instances_v2(self) -> InstancesV2 | None:
        return self if self.capabilities.instances_v2 else None

    def instances(self) -> Instances | None:
        return self if self.capabilities.instances else None

    def instances_batch(self) -> InstancesBatch | None:
        return self if self.capabilities.instances_batch else None

    def zones(self) -> Zones | None:
        return self if self.capabilities.zones else None

    def load_balancer(self) -> LoadBalancer | None:
        return self if self.capabilities.load_balancer else None

    def routes(self) -> Routes | None:
        return self if self.capabilities.routes else None

    def clusters(self) -> Clusters | None:
        return self if self.capabilities.clusters else None

    # ---- in-process mutators

    def add_instance(
        self,
        name: str,
        *,
        provider_id: str = "",
        instance_type: str = "",
        zone: str = "",
        region: str = "",
        addresses: Iterable[NodeAddress] = (),
        exists: bool = True,
        shutdown: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> FakeInstance:
        """Add (or replace) instance ``name`` and return it (a mutable :class:`FakeInstance`)."""
        if provider_id:
            split_provider_id(provider_id)
        instance = FakeInstance(
            name=name,
            provider_id=provider_id,
            instance_type=instance_type,
            zone=zone,
            region=region,
            addresses=tuple(addresses),
            exists=exists,
            shutdown=shutdown,
            labels=dict(labels or {}),
        )
        self.instance_table[name] = instance
        return instance

    def remove_instance(self, name: str) -> None:
        """Delete instance ``name`` (a no-op when absent)."""
        self.instance_table.pop(name, None)

    def inject_error(
        self,
        method: str,
        error: ErrorSource | None = None,
        *,
        key: str | None = None,
        times: int | None = None,
    ) -> ErrorRule:
        """Make calls of ``method`` (or ``"*"``) fail with ``error`` (default CloudProviderError).

        ``key`` narrows it to one node name, provider ID, service key, ...; ``times`` fails that
        many calls and then succeeds (None: forever). Rules are checked in order; the first match
        fires.
        """
        rule = ErrorRule(
            method=method,
            error=error
            if error is not None
            else CloudProviderError("injected cloud provider error"),
            key=key,
            times=times,
        )
        self.errors.append(rule)
        return rule

    def clear_errors(self, method: str | None = None) -> None:
        """Remove every error rule (or those of ``method``)."""
        self.errors = [] if method is None else [r for r in self.errors if r.method != method]

    def set_latency(self, method: str, seconds: float) -> None:
        """Calls of ``method`` sleep ``seconds`` (``"*"``: cloud calls without their own value)."""
        _check_method(method)
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.latency[method] = float(seconds)

    def set_rate_limit(self, qps: float | None, burst: int = 1, reject: bool = False) -> None:
        """Throttle cloud calls to ``qps`` per second with bursts of ``burst`` (None: unlimited).

        A call beyond the limit waits for its turn, or with ``reject`` is refused at once with
        ``RetryAfterError("429 Too Many Requests ...", delay)``, ``delay`` being when the next
        token comes (a cloud API answering 429 with a ``Retry-After`` hint).
        """
        self._bucket = None if qps is None else _TokenBucket(qps, burst)
        self._reject = reject

    def add_route(self, cluster_name: str, route: Route) -> Route:
        """Put ``route`` as is in ``cluster_name``'s table (named if unnamed) and return it."""
        if not route.name:
            route = dataclasses.replace(
                route,
                name=self._route_name(cluster_name, route.target_node, route.destination_cidr),
            )
        self.route_table.setdefault(cluster_name, {})[route.name] = route
        self._status_changed()
        return route

    def set_route_blackhole(self, cluster_name: str, name: str, blackhole: bool = True) -> None:
        """Mark route ``name`` (or every route targeting node ``name``) as blackhole (or not)."""
        table = self.route_table.get(cluster_name, {})
        matched = [r for r in table.values() if name in (r.name, r.target_node)]
        if not matched:
            raise KeyError(f"no route {name!r} in cluster {cluster_name!r}")
        for route in matched:
            table[route.name] = dataclasses.replace(route, blackhole=blackhole)
        self._status_changed()

    def load_balancer_for(self, service_key: str) -> FakeLoadBalancer | None:
        """The load balancer of Service ``namespace/name``, if any."""
        for lb in self.load_balancers.values():
            if lb.service == service_key:
                return lb
        return None

    # ---- recorded calls

    @property
    def calls(self) -> list[FakeCall]:
        """The recorded ``(method, key)`` calls in order (a copy; empty unless ``record_calls``)."""
        return list(self._calls)

    def call_count(self, method: str | None = None, key: str | None = None) -> int:
        """Calls of ``method`` (all methods when None), optionally only those with ``key``."""
        if method is None:
            return self.total_calls
        if key is None:
            return self.call_counts[method]
        by_key = self._calls_by_key.get(method)
        return by_key[key] if by_key else 0

    def clear_calls(self) -> None:
        """Forget every recorded call and reset the counters."""
        self._calls.clear()
        self.call_counts.clear()
        self._calls_by_key.clear()
        self.total_calls = 0
        self.batch_items.clear()

    def _record(self, method: str, key: str) -> FakeCall:
        call = FakeCall(method, key)
        if self.record_calls:
            self._calls.append(call)
        self.call_counts[method] += 1
        self._calls_by_key.setdefault(method, collections.Counter())[key] += 1
        self.total_calls += 1
        return call

    async def _call(self, method: str, key: str, *identifiers: str) -> None:
        """The prologue of every method: reload, record, throttle, delay, hook, injected error."""
        self._active = True
        self._reload_state(strict=False)
        self._sync_shared()
        call = self._record(method, key)
        self._status_changed()
        cloud_call = method in CLOUD_METHODS
        if cloud_call and self._bucket is not None:
            if self._reject:
                hint = self._bucket.take(clock.monotonic())
                if hint > 0:
                    await clock.sleep(0)  # an answer, even a refusal, suspends like real I/O
                    raise RetryAfterError(
                        f"429 Too Many Requests: {method} exceeds {self._bucket.qps:g} calls/s",
                        hint,
                    )
            else:
                wait = self._bucket.reserve(clock.monotonic())
                if wait > 0:
                    await clock.sleep(wait)
        delay = self.latency.get(method)
        if delay is None and cloud_call:
            delay = self.latency.get(_WILDCARD)
        if delay and (
            method in self.ignore_cancellation
            or (cloud_call and _WILDCARD in self.ignore_cancellation)
        ):
            await _sleep_ignoring_cancellation(delay)
        else:
            await clock.sleep(delay or 0.0)  # a real call always suspends at least once
        if self.call_hook is not None:
            result = self.call_hook(call)
            if inspect.isawaitable(result):
                await result
        keys = {key, *identifiers}
        keys.discard("")
        for rule in self.errors:
            if rule.matches(method, keys):
                if rule.times is not None:
                    rule.times -= 1
                rule.fired += 1
                raise rule.build()
        self._sync_shared()  # the work that follows (no await) changes the current cloud

    # ---- instance resolution

    def provider_id_of(self, instance: FakeInstance) -> str:
        """The effective provider ID of ``instance``."""
        return instance.provider_id or f"{self.name}://{instance.name}"

    def find_instance(
        self, name: str = "", provider_id: str = "", node: Node | None = None
    ) -> FakeInstance | None:
        """The instance for a provider ID (authoritative when given) or a node name, or None.

        Instances with ``exists=False`` are returned too; unknown names (and provider IDs of this
        provider) are answered by ``default_instance`` when it is set.
        """
        if provider_id:
            scheme, _, ident = provider_id.partition("://")
            candidate = self.instance_table.get(ident)
            if candidate is not None and self.provider_id_of(candidate) == provider_id:
                return candidate
            for instance in self.instance_table.values():
                if self.provider_id_of(instance) == provider_id:
                    return instance
            if (
                self.default_instance is not None
                and scheme == self.name
                and ident
                and ident not in self.instance_table
            ):
                return self.default_instance.generate(ident, provider_id, node)
            return None
        if not name:
            return None
        known = self.instance_table.get(name)
        if known is not None:
            return known
        if self.default_instance is not None:
            return self.default_instance.generate(name, f"{self.name}://{name}", node)
        return None

    def _existing(
        self, name: str = "", provider_id: str = "", node: Node | None = None
    ) -> FakeInstance:
        instance = self.find_instance(name, provider_id, node)
        if instance is None or not instance.exists:
            what = f"provider ID {provider_id!r}" if provider_id else f"node {name!r}"
            raise InstanceNotFoundError(f"instance not found: {what}")
        return instance

    # ---- lifecycle

    async def initialize(self, context: InitContext) -> None:
        if self.restore_from_status and not self._active:
            # Before the first call writes the status file (at once with statusInterval 0).
            self._restore_from_status()
        await self._call("initialize", context.cluster_name)
        self.initialized = True
        self.init_context = context
        self.initialized_cluster_name = context.cluster_name
        self._status_changed(urgent=True)

    async def aclose(self) -> None:
        try:
            await self._call("aclose", "")
        finally:
            self.closed = True
            if self._status_handle is not None:
                self._status_handle.cancel()
                self._status_handle = None
            if self.initialized or self._status_dirty:
                self._write_status()

    # ---- InstancesV2

    async def instance_exists(self, node: Node) -> bool:
        await self._call("instance-exists", node.name, node.provider_id)
        return self._exists_answer(node)

    async def instance_shutdown(self, node: Node) -> bool:
        await self._call("instance-shutdown", node.name, node.provider_id)
        return self._shutdown_answer(node)

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        await self._call("instance-metadata", node.name, node.provider_id)
        return self._metadata_answer(node)

    # ---- InstancesBatch: one call (one record, rate-limit charge and latency) per batch; the
    # per-Node answers are those of the single calls, and an error rule of the single method
    # (e.g. ``instance-metadata`` with a node key) makes that Node's result an exception.

    async def _batch(
        self, method: str, single: str, nodes: Sequence[Node], answer: Callable[[Node], Any]
    ) -> list[Any]:
        nodes = list(nodes)
        idents = [i for n in nodes for i in (n.name, n.provider_id) if i]
        await self._call(method, "", *idents)
        self.batch_items[method] += len(nodes)
        self._status_changed()
        results: list[Any] = []
        for node in nodes:
            failure = self._item_error(single, node.name, node.provider_id)
            if failure is not None:
                results.append(failure)
                continue
            try:
                results.append(answer(node))
            except Exception as exc:
                results.append(exc)
        return results

    def _item_error(self, method: str, *keys: str) -> Exception | None:
        present = {k for k in keys if k}
        for rule in self.errors:
            if rule.method != _WILDCARD and rule.matches(method, present):
                if rule.times is not None:
                    rule.times -= 1
                rule.fired += 1
                error = rule.build()
                if isinstance(error, Exception):
                    return error
                raise error
        return None

    def _exists_answer(self, node: Node) -> bool:
        instance = self.find_instance(node.name, node.provider_id, node)
        return instance is not None and instance.exists

    def _shutdown_answer(self, node: Node) -> bool:
        return self._existing(node.name, node.provider_id, node).shutdown

    def _metadata_answer(self, node: Node) -> InstanceMetadata | None:
        instance = self._existing(node.name, node.provider_id, node)
        return InstanceMetadata(
            provider_id=self.provider_id_of(instance),
            instance_type=instance.instance_type,
            node_addresses=tuple(instance.addresses),
            zone=instance.zone,
            region=instance.region,
            additional_labels=MappingProxyType(dict(instance.labels))
            if instance.labels
            else _EMPTY_LABELS,
        )

    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        return await self._batch(
            "instance-exists-batch", "instance-exists", nodes, self._exists_answer
        )

    async def instance_shutdown_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        return await self._batch(
            "instance-shutdown-batch", "instance-shutdown", nodes, self._shutdown_answer
        )

    async def instance_metadata_batch(
        self, nodes: Sequence[Node]
    ) -> Sequence[InstanceMetadata | Exception | None]:
        return await self._batch(
            "instance-metadata-batch", "instance-metadata", nodes, self._metadata_answer
        )

    # ---- Instances (legacy)

    async def node_addresses(self, name: str) -> Sequence[NodeAddress]:
        await self._call("node-addresses", name)
        return self._existing(name=name).addresses

    async def node_addresses_by_provider_id(self, provider_id: str) -> Sequence[NodeAddress]:
        await self._call("node-addresses-by-provider-id", provider_id)
        return self._existing(provider_id=provider_id).addresses

    async def instance_id(self, name: str) -> str:
        await self._call("instance-id", name)
        return split_provider_id(self.provider_id_of(self._existing(name=name)))[1]

    async def instance_type(self, name: str) -> str:
        await self._call("instance-type", name)
        return self._existing(name=name).instance_type

    async def instance_type_by_provider_id(self, provider_id: str) -> str:
        await self._call("instance-type-by-provider-id", provider_id)
        return self._existing(provider_id=provider_id).instance_type

    async def add_ssh_key_to_all_instances(self, user: str, key: bytes) -> None:
        await self._call("add-ssh-key-to-all-instances", user)
        raise NotImplementedByProviderError()

    async def current_node_name(self, hostname: str) -> str:
        await self._call("current-node-name", hostname)
        return hostname

    async def instance_exists_by_provider_id(self, provider_id: str) -> bool:
        await self._call("instance-exists-by-provider-id", provider_id)
        instance = self.find_instance(provider_id=provider_id)
        return instance is not None and instance.exists

    async def instance_shutdown_by_provider_id(self, provider_id: str) -> bool:
        await self._call("instance-shutdown-by-provider-id", provider_id)
        if not provider_id:
            raise CloudProviderError("cannot check shutdown state: empty provider ID")
        return self._existing(provider_id=provider_id).shutdown

    # ---- Zones

    async def get_zone(self) -> Zone:
        await self._call("get-zone", "")
        return self.local_zone

    async def get_zone_by_provider_id(self, provider_id: str) -> Zone:
        await self._call("get-zone-by-provider-id", provider_id)
        instance = self._existing(provider_id=provider_id)
        return Zone(failure_domain=instance.zone, region=instance.region)

    async def get_zone_by_node_name(self, name: str) -> Zone:
        await self._call("get-zone-by-node-name", name)
        instance = self._existing(name=name)
        return Zone(failure_domain=instance.zone, region=instance.region)

    # ---- LoadBalancer

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        if not service.uid:
            return f"a-{service.namespace}-{service.name}"
        return default_load_balancer_name(service)

    def _lb_identifiers(self, cluster_name: str, service: Service) -> tuple[str, ...]:
        return (service.uid, self.get_load_balancer_name(cluster_name, service))

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        await self._call("get", service.key, *self._lb_identifiers(cluster_name, service))
        lb = self.load_balancers.get(self.get_load_balancer_name(cluster_name, service))
        if lb is None:
            return None
        return self._lb_status(lb)

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        await self._call("create", service.key, *self._lb_identifiers(cluster_name, service))
        ports = self._check_service(service)
        name = self.get_load_balancer_name(cluster_name, service)
        lb = self.load_balancers.get(name)
        ip = self._choose_ip(service, name, lb)
        if lb is None:
            lb = FakeLoadBalancer(name=name, service=service.key)
            self.load_balancers[name] = lb
        if lb.ip and lb.ip != ip:
            self._lb_ips.pop(lb.ip, None)
        lb.service = service.key
        lb.service_uid = service.uid
        lb.cluster_name = cluster_name
        lb.ports = ports
        lb.nodes = tuple(sorted({n.name for n in nodes}))
        lb.ip = ip
        lb.ensure_count += 1
        self._lb_ips[ip] = name
        self._status_changed()
        return self._lb_status(lb)

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        await self._call("update", service.key, *self._lb_identifiers(cluster_name, service))
        name = self.get_load_balancer_name(cluster_name, service)
        lb = self.load_balancers.get(name)
        if lb is None:
            raise CloudProviderError(
                f"load balancer {name} for service {service.key} does not exist"
            )
        lb.nodes = tuple(sorted({n.name for n in nodes}))
        lb.update_count += 1
        self._status_changed()

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        await self._call("delete", service.key, *self._lb_identifiers(cluster_name, service))
        lb = self.load_balancers.pop(self.get_load_balancer_name(cluster_name, service), None)
        if lb is not None:
            if self._lb_ips.get(lb.ip) == lb.name:
                del self._lb_ips[lb.ip]
            self._status_changed()

    def _check_service(self, service: Service) -> tuple[FakePort, ...]:
        """Reject what the fake cloud cannot build; return the Service's ports."""
        if REJECT_ANNOTATION in service.annotations:
            message = service.annotations[REJECT_ANNOTATION] or "rejected by the fake cloud"
            raise CloudProviderError(message)
        ports = []
        for raw in service.ports:
            port = FakePort(
                name=str(raw.get("name", "") or ""),
                protocol=str(raw.get("protocol", "") or "TCP"),
                port=int(raw.get("port", 0) or 0),
                node_port=int(raw.get("nodePort", 0) or 0),
            )
            if port.protocol.upper() in self.reject_protocols:
                raise CloudProviderError(
                    f"fake cloud load balancers do not support protocol {port.protocol} "
                    f"(service {service.key}, port {port.name or port.port})"
                )
            ports.append(port)
        return tuple(ports)

    def _ip_taken(self, ip: str, name: str) -> bool:
        owner = self._lb_ips.get(ip)
        if owner is None or owner == name:
            return False
        holder = self.load_balancers.get(owner)
        return (
            holder is not None and holder.ip == ip
        )  # stale entries (LB removed by a test) are free

    def _choose_ip(self, service: Service, name: str, lb: FakeLoadBalancer | None) -> str:
        requested = str(service.spec.get("loadBalancerIP", "") or "")
        if requested:
            try:
                requested = str(ipaddress.ip_address(requested))
            except ValueError:
                raise CloudProviderError(
                    f"invalid loadBalancerIP {requested!r} for service {service.key}"
                ) from None
            if self._ip_taken(requested, name):
                raise CloudProviderError(
                    f"loadBalancerIP {requested} of service {service.key} is already in use"
                )
            return requested
        if lb is not None and lb.ip:
            return lb.ip
        net = _network(self.ip_pool)
        first, count = (
            (1, net.num_addresses - 2) if net.num_addresses > 2 else (0, net.num_addresses)
        )
        start = _digest(service.key)
        for step in range(count):
            ip = str(net.network_address + first + (start + step) % count)
            if not self._ip_taken(ip, name):
                return ip
        raise CloudProviderError(
            f"load balancer IP pool {self.ip_pool} is exhausted ({count} addresses); "
            "set loadBalancer.ipPool to a larger CIDR"
        )

    def _lb_status(self, lb: FakeLoadBalancer) -> LoadBalancerStatus:
        ports: tuple[PortStatus, ...] = ()
        if self.report_port_status:
            ports = tuple(PortStatus(port=p.port, protocol=p.protocol) for p in lb.ports)
        ingress = LoadBalancerIngress(ip=lb.ip, ip_mode=self.ip_mode, ports=ports)
        return LoadBalancerStatus(ingress=(ingress,))

    # ---- Routes

    @staticmethod
    def _route_name(cluster_name: str, hint: str, cidr: str) -> str:
        return f"{cluster_name}-{hint}-{cidr.replace('/', '-').replace(':', '-')}"

    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        await self._call("list-routes", cluster_name)
        routes = sorted(self.route_table.get(cluster_name, {}).values(), key=lambda r: r.name)
        if self.routes_enable_node_addresses:
            routes = [dataclasses.replace(r, enable_node_addresses=True) for r in routes]
        if self.routes_auto_blackhole:
            routes = [
                r
                if r.blackhole or self._target_exists(r.target_node)
                else dataclasses.replace(r, blackhole=True)
                for r in routes
            ]
        return tuple(routes)

    def _target_exists(self, node_name: str) -> bool:
        instance = self.find_instance(name=node_name)
        return instance is not None and instance.exists

    async def create_route(self, cluster_name: str, name_hint: str, route: Route) -> None:
        await self._call(
            "create-route", route.target_node, cluster_name, name_hint, route.destination_cidr
        )
        try:
            cidr = _check_cidr(route.destination_cidr)
        except ValueError as exc:
            raise CloudProviderError(f"cannot create route: {exc}") from None
        table = self.route_table.setdefault(cluster_name, {})
        for existing in table.values():
            if existing.destination_cidr == cidr:
                if existing.target_node == route.target_node:
                    return  # already there: idempotent
                raise CloudProviderError(
                    f"route for {cidr} already exists in cluster {cluster_name} "
                    f"and targets node {existing.target_node}"
                )
        name = self._route_name(cluster_name, name_hint or route.target_node, cidr)
        table[name] = Route(
            name=name,
            target_node=route.target_node,
            destination_cidr=cidr,
            target_node_addresses=tuple(route.target_node_addresses),
        )
        self._status_changed()

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        await self._call(
            "delete-route", route.target_node, cluster_name, route.name, route.destination_cidr
        )
        table = self.route_table.get(cluster_name, {})
        name = route.name if route.name in table else None
        if name is None:
            name = next(
                (
                    r.name
                    for r in table.values()
                    if r.target_node == route.target_node
                    and r.destination_cidr == route.destination_cidr
                ),
                None,
            )
        if name is not None:
            del table[name]
            self._status_changed()

    # ---- Clusters

    async def list_clusters(self) -> Sequence[str]:
        await self._call("list-clusters", "")
        return tuple(self.cluster_names)

    async def master(self, cluster_name: str) -> str:
        await self._call("master", cluster_name)
        return self.master_address

    # ---- state file

    def _apply_section(self, section: str, spec: FakeCloudStateSpec) -> None:
        if section == "instances":
            specs = spec.instances or {}
            self.instance_table = {n: FakeInstance.from_spec(n, s) for n, s in specs.items()}
        elif section == "default_instance":
            default = spec.default_instance
            self.default_instance = None if default is None else DefaultInstance.from_spec(default)
        elif section == "errors":
            self.errors = [ErrorRule.from_spec(s) for s in spec.errors or ()]
        elif section == "latency":
            self.latency = dict(spec.latency or {})
        elif section == "ignore_cancellation":
            self.ignore_cancellation = set(spec.ignore_cancellation or ())
        elif section == "rate_limit":
            limit = spec.rate_limit
            if limit is None:
                self.set_rate_limit(None)
            else:
                self.set_rate_limit(limit.qps, limit.burst, reject=limit.reject)
        elif section == "routes":
            self.route_table = {}
            for r in spec.routes or ():
                name = r.name or self._route_name(r.cluster, r.target_node, r.destination_cidr)
                self.route_table.setdefault(r.cluster, {})[name] = Route(
                    name=name,
                    target_node=r.target_node,
                    destination_cidr=r.destination_cidr,
                    blackhole=r.blackhole,
                    target_node_addresses=tuple(
                        NodeAddress(type=a.type, address=a.address) for a in r.target_node_addresses
                    ),
                )
        else:  # pragma: no cover - guarded by _STATE_SECTIONS
            raise AssertionError(section)

    def reload_state(self) -> bool:
        """Re-read the state file now if it changed; True when a new version was applied."""
        return self._reload_state(strict=False)

    def _reload_state(self, *, strict: bool) -> bool:
        path = self.state_file
        if path is None:
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._state_key = None
            return False
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._state_key:
            return False
        self._state_key = key
        try:
            spec = _read_state_file(path)
        except (ConfigError, OSError) as exc:
            message = str(exc)
            if strict:
                raise ConfigError(message) from None
            _log.warning("ignoring fake cloud state file: %s", message)
            self.state_error = message
            self._status_changed()
            return False
        for section in spec.model_fields_set:
            canonical = json.dumps(
                spec.model_dump(include={section}, mode="json"), sort_keys=True, default=str
            )
            if self._applied.get(section) != canonical:
                self._apply_section(section, spec)
                self._applied[section] = canonical
        for section in set(self._applied) - spec.model_fields_set:
            del self._applied[section]  # gone from the file: re-applied if it comes back
        self.state_generation += 1
        self.state_error = None
        _log.info("applied fake cloud state file %s (generation %d)", path, self.state_generation)
        self._status_changed()
        return True

    # ---- status file

    def status(self) -> dict[str, Any]:
        """The status document (the status file's content)."""
        return {
            "provider": self.name,
            "initialized": self.initialized,
            "clusterName": self.initialized_cluster_name or "",
            "closed": self.closed,
            "loadBalancers": {
                lb.name: {
                    "name": lb.name,
                    "service": lb.service,
                    "serviceUID": lb.service_uid,
                    "clusterName": lb.cluster_name,
                    "ports": [
                        {
                            "name": p.name,
                            "protocol": p.protocol,
                            "port": p.port,
                            "nodePort": p.node_port,
                        }
                        for p in lb.ports
                    ],
                    "nodes": list(lb.nodes),
                    "ip": lb.ip,
                    "ingress": self._lb_status(lb).to_dict().get("ingress", []),
                }
                for lb in sorted(self.load_balancers.values(), key=lambda lb: lb.name)
            },
            "routes": {
                cluster: [
                    {
                        "name": r.name,
                        "targetNode": r.target_node,
                        "destinationCIDR": r.destination_cidr,
                        "blackhole": r.blackhole,
                        "targetNodeAddresses": [a.to_dict() for a in r.target_node_addresses],
                    }
                    for r in sorted(table.values(), key=lambda r: r.name)
                ]
                for cluster, table in sorted(self.route_table.items())
            },
            "calls": dict(sorted(self.call_counts.items())),
            "callsByKey": {
                m: dict(sorted(c.items())) for m, c in sorted(self._calls_by_key.items())
            },
            "totalCalls": self.total_calls,
            "batchItems": dict(sorted(self.batch_items.items())),
            "stateGeneration": self.state_generation,
            "stateError": self.state_error,
        }

    def _status_changed(self, *, urgent: bool = False) -> None:
        """Schedule a status write (coalesced over ``status_interval``; at once when urgent)."""
        if self.status_file is None or not self._active:
            return
        self._status_dirty = True
        if urgent or self.status_interval <= 0 or self.shared_status:
            self._write_status()
            return
        if self._status_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write_status()
                return
            self._status_handle = loop.call_later(self.status_interval, self._flush_status)

    def _flush_status(self) -> None:
        self._status_handle = None
        if self._status_dirty:
            self._write_status()

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        if self._status_handle is not None:
            self._status_handle.cancel()
            self._status_handle = None
        self._status_dirty = False
        # Shared: under the lock, and over the current cloud (a change made in this step holds
        # the lock since its reload, so nothing is reloaded over it).
        self._sync_shared()
        data = json.dumps(self.status(), indent=1, sort_keys=False).encode() + b"\n"
        try:
            _atomic_write(self.status_file, data, newer=self.shared_status)
            self._status_key = _file_key(self.status_file)
        except OSError as exc:
            _log.warning("cannot write fake cloud status file %s: %s", self.status_file, exc)
        finally:
            if not _in_event_loop():
                self._unlock_shared()  # no step to wait for

    def _lock_shared(self) -> None:
        """With ``shared_status``: hold the status file's lock (``flock`` on ``<status>.lock``)
        until the current step of the event loop ends.

        A change is one synchronous step (reload, change, write), so holding the lock for the step
        makes it atomic across processes: without it, two processes could each reload, change and
        write, and the later write would drop the other's change. Waits at most
        :data:`SHARED_LOCK_WAIT` seconds (a process stopped while holding it must not freeze the
        others), then goes on without it.
        """
        if not self.shared_status or self.status_file is None or self._lock_held:
            return
        if self._lock_fd is None:
            lock_path = self.status_file.with_name(self.status_file.name + ".lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + SHARED_LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    _log.warning("fake cloud status lock busy for %ss; going on", SHARED_LOCK_WAIT)
                    return
                time.sleep(0.001)
        self._lock_held = True
        if _in_event_loop():  # else the write that follows releases it
            asyncio.get_running_loop().call_soon(self._unlock_shared)

    def _unlock_shared(self) -> None:
        if self._lock_held and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._lock_held = False

    def _sync_shared(self) -> None:
        """With ``shared_status``: reload load balancers and routes if another process wrote (under
        the lock, held until the end of this step, so the change that follows is not lost)."""
        if not self.shared_status or self.status_file is None:
            return
        self._lock_shared()
        current = _file_key(self.status_file)
        if current is not None and current != self._status_key:
            self._restore_from_status()
            self._status_key = current

    def _restore_from_status(self) -> None:
        if self.status_file is None:
            return
        try:
            status = FakeCloudStatus.read(self.status_file)
        except (OSError, ValueError) as exc:
            _log.warning("cannot restore from fake cloud status file %s: %s", self.status_file, exc)
            return
        if status is None:
            return
        self.load_balancers = {}
        self._lb_ips = {}
        self.route_table = {}
        for saved in status.load_balancers.values():
            lb = FakeLoadBalancer(
                name=saved.name,
                service=saved.service,
                service_uid=saved.service_uid,
                cluster_name=saved.cluster_name,
                ports=tuple(
                    FakePort(name=p.name, protocol=p.protocol, port=p.port, node_port=p.node_port)
                    for p in saved.ports
                ),
                nodes=tuple(saved.nodes),
                ip=saved.ip,
            )
            self.load_balancers[lb.name] = lb
            if lb.ip:
                self._lb_ips[lb.ip] = lb.name
        for cluster, routes in status.routes.items():
            table = self.route_table.setdefault(cluster, {})
            for r in routes:
                table[r.name] = Route(
                    name=r.name,
                    target_node=r.target_node,
                    destination_cidr=r.destination_cidr,
                    blackhole=r.blackhole,
                    target_node_addresses=tuple(
                        NodeAddress(type=a.type, address=a.address) for a in r.target_node_addresses
                    ),
                )


def FakeCloudFactory(config: bytes | None) -> FakeCloud:
    """The ``fake`` entry point: a :class:`FakeCloud` from ``--cloud-config`` bytes (or None)."""
    return FakeCloud.from_config(config)


# ----------------------------------------------------------------------------------------------
# Test-side helper for the state file
# ----------------------------------------------------------------------------------------------


_rule_ids = itertools.count(1)


def _spec_dump(model: type[_Model], fields: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parsed = model.model_validate(dict(fields))
    except ValidationError as exc:
        raise ValueError(f"invalid {model.__name__}: {_one_line(exc)}") from None
    dumped: dict[str, Any] = parsed.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    return dumped


class FakeCloudState:
    """Build and write the fake's state file from a test, without hand-writing JSON.

    ::

        state = FakeCloudState()
        state.add_instance("node-1", instance_type="m5.large", zone="zone-a")
        state.inject_error("instance-metadata", key="node-2", message="boom", times=2)
        state.write(tmp_path / "state.json")  # atomic; the fake picks it up on its next call
        state.remove_instance("node-1"); state.clear_errors(); state.write(...)

    Keyword arguments are the snake_case field names of the config schema. Only the sections
    touched are written, so the fake leaves the others alone (see the module docstring).
    """

    _SECTION_ALIASES: ClassVar[dict[str, str]] = {
        name: info.alias or name for name, info in FakeCloudStateSpec.model_fields.items()
    }

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        doc = json.loads(json.dumps(dict(document or {})))
        try:
            FakeCloudStateSpec.model_validate(doc)
        except ValidationError as exc:
            raise ValueError(f"invalid fake cloud state: {_one_line(exc)}") from None
        # normalise snake_case section names to the aliases
        self._doc: dict[str, Any] = {self._SECTION_ALIASES.get(k, k): v for k, v in doc.items()}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FakeCloudState:
        """Read a state file (JSON or YAML)."""
        return cls(_parse_document(Path(path).read_bytes(), f"fake cloud state file {path}"))

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(json.dumps(self._doc))
        return result

    def write(self, path: str | os.PathLike[str]) -> None:
        """Validate and write the state atomically: YAML for ``.yaml``/``.yml``, JSON otherwise."""
        FakeCloudStateSpec.model_validate(self._doc)
        target = Path(path)
        if target.suffix in (".yaml", ".yml"):
            data = yaml.safe_dump(self._doc, sort_keys=True).encode()
        else:
            data = json.dumps(self._doc, indent=1, sort_keys=True).encode() + b"\n"
        _atomic_write(target, data, newer=True)

    # instances

    def add_instance(self, name: str, **fields: Any) -> FakeCloudState:
        """Add or replace instance ``name``.

        Fields: provider_id, instance_type, zone, region, addresses (dicts ``{"type", "address"}``
        or NodeAddress), exists, shutdown, labels.
        """
        if "addresses" in fields:
            fields["addresses"] = [
                a.to_dict() if isinstance(a, NodeAddress) else dict(a) for a in fields["addresses"]
            ]
        instances = self._doc.get("instances") or {}
        instances[name] = _spec_dump(InstanceSpec, fields)
        self._doc["instances"] = instances
        return self

    def update_instance(self, name: str, **changes: Any) -> FakeCloudState:
        """Change some fields of instance ``name`` (which must exist in this state)."""
        current = (self._doc.get("instances") or {}).get(name)
        if current is None:
            raise KeyError(f"no instance {name!r} in this state")
        merged = {**InstanceSpec.model_validate(current).model_dump(), **changes}
        return self.add_instance(name, **merged)

    def remove_instance(self, name: str) -> FakeCloudState:
        instances = self._doc.get("instances") or {}
        instances.pop(name, None)
        self._doc["instances"] = instances
        return self

    def set_default_instance(self, **fields: Any) -> FakeCloudState:
        self._doc["defaultInstance"] = _spec_dump(DefaultInstanceSpec, fields)
        return self

    def clear_default_instance(self) -> FakeCloudState:
        self._doc["defaultInstance"] = None
        return self

    # errors, latency, rate limit

    def inject_error(
        self,
        method: str,
        kind: ErrorKind = "cloud",
        *,
        key: str | None = None,
        message: str | None = None,
        times: int | None = None,
        retry_after: float | None = None,
    ) -> FakeCloudState:
        """Append an error rule (kinds: see the module docstring).

        Each call labels its rule with a new ``id``, so injecting a rule identical to one that has
        already fired arms it again, while rewriting the file for other reasons does not.
        """
        fields: dict[str, Any] = {
            "method": method,
            "id": f"e{next(_rule_ids)}",
            "kind": kind,
            "key": key,
            "message": message,
        }
        fields["times"] = times
        if retry_after is not None:
            fields["retry_after"] = retry_after
        rule = _spec_dump(ErrorSpec, fields)
        self._doc["errors"] = [*(self._doc.get("errors") or []), rule]
        return self

    def clear_errors(self, method: str | None = None, key: str | None = None) -> FakeCloudState:
        """Remove every error rule, or those of ``method`` and/or ``key``."""
        kept = [
            r
            for r in self._doc.get("errors") or []
            if not (
                (method is None or r.get("method") == method)
                and (key is None or r.get("key") == key)
            )
        ]
        self._doc["errors"] = kept
        return self

    def set_latency(self, method: str, seconds: float) -> FakeCloudState:
        _check_method(method)
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._doc["latency"] = {**(self._doc.get("latency") or {}), method: seconds}
        return self

    def clear_latency(self) -> FakeCloudState:
        self._doc["latency"] = {}
        return self

    def set_ignore_cancellation(self, *methods: str) -> FakeCloudState:
        """The latency of these methods (``"*"``: every cloud call) ignores cancellation; no
        methods: every call honours it again."""
        for method in methods:
            _check_method(method)
        self._doc["ignoreCancellation"] = sorted(methods)
        return self

    def set_rate_limit(self, qps: float, burst: int = 1, reject: bool = False) -> FakeCloudState:
        self._doc["rateLimit"] = _spec_dump(
            RateLimitSpec, {"qps": qps, "burst": burst, "reject": reject}
        )
        return self

    def clear_rate_limit(self) -> FakeCloudState:
        self._doc["rateLimit"] = None
        return self

    # routes (setting them replaces the fake's whole route table when written)

    def add_route(
        self,
        target_node: str,
        destination_cidr: str,
        *,
        cluster: str = "kubernetes",
        name: str = "",
        blackhole: bool = False,
    ) -> FakeCloudState:
        route = _spec_dump(
            RouteSpec,
            {
                "cluster": cluster,
                "name": name,
                "target_node": target_node,
                "destination_cidr": destination_cidr,
                "blackhole": blackhole,
            },
        )
        self._doc["routes"] = [*(self._doc.get("routes") or []), route]
        return self

    def clear_routes(self) -> FakeCloudState:
        self._doc["routes"] = []
        return self
