"""The provider contract: ``CloudProvider`` and its optional capabilities.

Ports ``cloud.go`` of k8s.io/cloud-provider. Upstream accessors return ``(impl, supported)``; here
each accessor returns the capability object or ``None`` (unsupported), and the base class returns
``None`` for all of them, so a provider overrides only what it has. Capabilities are Protocols with
async methods; a provider may implement them on the provider object itself (``return self``) or on
separate objects.

Rules for every method:
- Node and Service arguments are read-only views (:mod:`ccm.cloudprovider.objects`).
- Raise errors from :mod:`ccm.errors` (translate SDK errors inside the provider, ``raise ... from
  exc``).
- Honour cancellation: the controllers cancel calls that exceed their timeouts.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ccm.cloudprovider.flags import NO_FLAGS
from ccm.cloudprovider.objects import Node, Service
from ccm.cloudprovider.types import InstanceMetadata, LoadBalancerStatus, NodeAddress, Route, Zone

__all__ = [
    "CAPABILITIES",
    "CloudProvider",
    "Clusters",
    "InitContext",
    "Instances",
    "InstancesBatch",
    "InstancesV2",
    "LoadBalancer",
    "Routes",
    "Zones",
]


@runtime_checkable
class InstancesV2(Protocol):
    """Instance queries keyed by the Node object (preferred for external providers).

    When a provider offers InstancesV2 the framework never calls ``Zones`` for Nodes.
    """

    async def instance_exists(self, node: Node) -> bool:
        """Whether the Node's instance exists. Look it up by ``node.provider_id``, falling back to
        the name.

        Return ``False`` (do not raise) when the instance is gone: the lifecycle controller then
        deletes the
        Node. A stopped instance still exists and must return ``True``. Raise on any doubt (API
        error,
        timeout): the Node is then left alone.
        """
        ...

    async def instance_shutdown(self, node: Node) -> bool:
        """Whether the Node's instance is shut down (stopped but existing)."""
        ...

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        """Metadata used to initialize the Node and refresh its addresses.

        Look at ``node.provider_id`` first, then the name, labels and annotations. A result with an
        empty
        ``provider_id`` is accepted only if the Node already has one. Return ``None`` to skip the
        Node
        (the taint stays). Raise InstanceNotFoundError when there is no such instance.
        """
        ...


@runtime_checkable
class InstancesBatch(Protocol):
    """Optional: answer the InstancesV2 questions for many Nodes with one cloud call.

    Offered through :meth:`CloudProvider.instances_batch` and used **only when the provider also
    offers InstancesV2** (the single calls stay the reference and the fallback). The node
    controller coalesces concurrent ``instance_metadata`` requests into one
    ``instance_metadata_batch`` call; the node lifecycle controller asks ``instance_exists_batch``
    (and ``instance_shutdown_batch`` for the Nodes that exist) in chunks of ``max_batch_size``.

    Rules, for every method:

    - ``nodes`` holds between 1 and ``max_batch_size`` read-only Node views (never empty; the same
      Node may appear twice, answer both).
    - Return exactly one result per input Node, **in input order**. Each result means exactly
      what the InstancesV2 single call would return for that Node; an ``Exception`` instance in
      place of a result means what the single call *raising* that exception means (for example
      ``InstanceNotFoundError`` from ``instance_metadata_batch``; any error from
      ``instance_exists_batch`` is doubt: that Node is never deleted). Return per-Node errors as
      values; do not raise for one Node.
    - Raising from the method fails every Node of the batch with that error (a whole-call
      failure: quota, network, timeout).
    - A result list of the wrong length is a provider bug: the framework logs it and treats every
      Node of that batch as an error (no Node is initialized or deleted on such an answer).
    - The whole call is bounded by ``--cloud-call-timeout``, like a single call; honour
      cancellation.
    """

    #: The most Nodes one call accepts (>= 1). Larger sets are split into chunks of this size.
    max_batch_size: int

    async def instance_metadata_batch(
        self, nodes: Sequence[Node]
    ) -> Sequence[InstanceMetadata | Exception | None]:
        """Per Node: what :meth:`InstancesV2.instance_metadata` returns (metadata, or ``None`` to
        skip the Node) or raises (the exception, e.g. ``InstanceNotFoundError``)."""
        ...

    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        """Per Node: :meth:`InstancesV2.instance_exists` (``False`` only when the instance is
        gone; a stopped instance exists; an exception is doubt and keeps the Node)."""
        ...

    async def instance_shutdown_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        """Per Node: :meth:`InstancesV2.instance_shutdown`."""
        ...


@runtime_checkable
class Instances(Protocol):
    """Legacy instance queries keyed by node name or provider ID (upstream ``Instances``)."""

    async def node_addresses(self, name: str) -> Sequence[NodeAddress]:
        """Addresses of the instance backing Node ``name``."""
        ...

    async def node_addresses_by_provider_id(self, provider_id: str) -> Sequence[NodeAddress]:
        """Addresses of the instance ``provider_id`` (never answered from local metadata)."""
        ...

    async def instance_id(self, name: str) -> str:
        """The cloud ID of Node ``name``; raise InstanceNotFoundError if the instance is gone
        (never for a stopped instance)."""
        ...

    async def instance_type(self, name: str) -> str:
        """Instance type of Node ``name``."""
        ...

    async def instance_type_by_provider_id(self, provider_id: str) -> str:
        """Instance type of instance ``provider_id``."""
        ...

    async def add_ssh_key_to_all_instances(self, user: str, key: bytes) -> None:
        """Add an SSH key to all instances; raise NotImplementedByProviderError if unsupported."""
        ...

    async def current_node_name(self, hostname: str) -> str:
        """The Node name of the local host."""
        ...

    async def instance_exists_by_provider_id(self, provider_id: str) -> bool:
        """``False`` (not an error) when the instance is gone; a stopped instance returns
        ``True``."""
        ...

    async def instance_shutdown_by_provider_id(self, provider_id: str) -> bool:
        """Whether instance ``provider_id`` is shut down."""
        ...


@runtime_checkable
class Zones(Protocol):
    """Deprecated zone queries; only used when InstancesV2 is not offered."""

    async def get_zone(self) -> Zone:
        """Zone of the local host (kubelet-era; the framework does not call it for Nodes)."""
        ...

    async def get_zone_by_provider_id(self, provider_id: str) -> Zone:
        """Zone of instance ``provider_id``."""
        ...

    async def get_zone_by_node_name(self, name: str) -> Zone:
        """Zone of Node ``name``."""
        ...


@runtime_checkable
class LoadBalancer(Protocol):
    """Cloud load balancers for ``type: LoadBalancer`` Services.

    ``cluster_name`` is ``--cluster-name``. Services and Nodes are read-only views.
    """

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        """The status of the Service's load balancer, or ``None`` when it does not exist. Must
        answer a status (equal to the one ensure returned) for any load balancer that ensure
        created."""
        ...

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        """The cloud name of the Service's load balancer (see
        helpers.default_load_balancer_name)."""
        ...

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        """Create or update the load balancer; idempotent. Raise RetryAfterError to be requeued
        after a fixed delay, ImplementedElsewhereError when another controller owns this Service."""
        ...

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        """Only the backend Nodes changed: update the host set."""
        ...

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        """Delete the load balancer; return normally if it is already gone. Never raise
        ImplementedElsewhereError here: teardown must always happen."""
        ...


@runtime_checkable
class Routes(Protocol):
    """The cloud route table for pod CIDRs."""

    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        """Routes owned by this cluster (ownership tagging is the provider's job)."""
        ...

    async def create_route(self, cluster_name: str, name_hint: str, route: Route) -> None:
        """Create ``route``; ``name_hint`` is the Node UID and ``route.name`` is ignored."""
        ...

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        """Delete ``route`` as returned by list_routes."""
        ...


@runtime_checkable
class Clusters(Protocol):
    """Cluster listing; no ccm controller uses it (kept for parity)."""

    async def list_clusters(self) -> Sequence[str]:
        """Names of the clusters the provider knows."""
        ...

    async def master(self, cluster_name: str) -> str:
        """Address of the cluster's control plane."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class InitContext:
    """What ``CloudProvider.initialize`` receives on the elected leader.

    ``client_factory(name)`` returns a Kubernetes client for the named component (an object from
    ``ccm.kube``; typed loosely so the contract does not depend on Kubernetes plumbing).
    ``stopping`` is set when the controllers stop; background work the provider starts must end
    then. ``flags`` holds the values of the flags added to the command line
    (:mod:`ccm.cloudprovider.flags`), keyed by name without the leading dashes.
    """

    cluster_name: str = "kubernetes"
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    client_factory: Callable[[str], Any] | None = None
    flags: Mapping[str, Any] = field(default_factory=lambda: NO_FLAGS)


class CloudProvider(abc.ABC):  # noqa: B024 - every capability is optional
    """Base class of every provider. Subclass it and override the capabilities you offer.

    Lifecycle: the registry's factory builds the provider at process start (do not call the cloud
    there unless you must validate credentials); ``initialize`` runs on the leader after election,
    just before the controllers start; ``aclose`` runs at shutdown.
    """

    #: The provider name, used as the providerID prefix ``<name>://``.
    name: str = ""

    #: Optional hook, absent (``None``) by default: ``async def reload(self, config: bytes) ->
    #: None``, called with the new bytes of ``--cloud-config`` when the file changes (a rotated
    #: Secret; ccm polls its content). Validate all of it before applying any of it: raise
    #: :class:`ccm.errors.ConfigError` (one line naming the problem) to refuse it, and keep serving
    #: with the old configuration; ccm logs a warning and counts it. Return once the new
    #: configuration serves the calls that follow. Runs on every replica, leader or not, on the
    #: event loop like every other method (no blocking call). A provider without the hook is
    #: restarted instead: once the new file builds a provider (the factory accepts it), ccm gives
    #: the Lease up and exits 0, and its DaemonSet starts it again with the new file.
    reload: Callable[[bytes], Awaitable[None]] | None = None

    @property
    def provider_name(self) -> str:
        """Upstream ``ProviderName()``."""
        return self.name

    async def initialize(self, context: InitContext) -> None:  # noqa: B027 - optional hook
        """Called on the leader after election won, before the controllers start."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads and sessions. Called once at shutdown."""

    def has_cluster_id(self) -> bool:
        """True if a cluster ID is required and present; False aborts start-up unless
        ``--allow-untagged-cloud``."""
        return True

    def instances_v2(self) -> InstancesV2 | None:
        """The InstancesV2 capability, or None."""
        return None

    def instances(self) -> Instances | None:
        """The legacy Instances capability, or None."""
        return None

    def instances_batch(self) -> InstancesBatch | None:
        """The optional InstancesBatch capability (many Nodes per cloud call), or None.

        Used only together with :meth:`instances_v2`; see :class:`InstancesBatch`.
        """
        return None

    def zones(self) -> Zones | None:
        """The deprecated Zones capability, or None."""
        return None

    def load_balancer(self) -> LoadBalancer | None:
        """The LoadBalancer capability, or None."""
        return None

    def routes(self) -> Routes | None:
        """The Routes capability, or None."""
        return None

    def clusters(self) -> Clusters | None:
        """The Clusters capability, or None."""
        return None


# : Optional capability accessors, in the order the startup log reports them (upstream interface
# names).
CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("instances_v2", "InstancesV2"),
    ("instances", "Instances"),
    ("instances_batch", "InstancesBatch"),
    ("zones", "Zones"),
    ("load_balancer", "LoadBalancer"),
    ("routes", "Routes"),
    ("clusters", "Clusters"),
)
