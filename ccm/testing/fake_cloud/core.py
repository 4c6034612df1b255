"""The fake cloud's state: its settings, instances, faults and load balancers, and how a node
name or provider ID resolves to an instance; the layers above add the files, the calls and the
capabilities."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from ccm.cloudprovider import (
    CloudProvider,
    InitContext,
    LoadBalancerIngress,
    LoadBalancerStatus,
    Node,
    NodeAddress,
    PortStatus,
    Route,
    Zone,
    split_provider_id,
)
from ccm.errors import CloudProviderError, InstanceNotFoundError
from ccm.testing.fake_cloud.faults import ErrorRule, ErrorSource, _TokenBucket
from ccm.testing.fake_cloud.methods import DEFAULT_IP_POOL, _check_cidr, _check_method
from ccm.testing.fake_cloud.model import (
    DefaultInstance,
    FakeCall,
    FakeCapabilities,
    FakeInstance,
    FakeLoadBalancer,
)


class FakeCloudCore(CloudProvider):
    """The fake cloud's state and in-process mutators (the base of :class:`FakeCloud`)."""

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

    def load_balancer_for(self, service_key: str) -> FakeLoadBalancer | None:
        """The load balancer of Service ``namespace/name``, if any."""
        for lb in self.load_balancers.values():
            if lb.service == service_key:
                return lb
        return None

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

    # ---- load balancer status and route names (also written to the status file)

    def _lb_status(self, lb: FakeLoadBalancer) -> LoadBalancerStatus:
        ports: tuple[PortStatus, ...] = ()
        if self.report_port_status:
            ports = tuple(PortStatus(port=p.port, protocol=p.protocol) for p in lb.ports)
        ingress = LoadBalancerIngress(ip=lb.ip, ip_mode=self.ip_mode, ports=ports)
        return LoadBalancerStatus(ingress=(ingress,))

    @staticmethod
    def _route_name(cluster_name: str, hint: str, cidr: str) -> str:
        return f"{cluster_name}-{hint}-{cidr.replace('/', '-').replace(':', '-')}"
