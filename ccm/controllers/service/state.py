"""What the Service path and the node path of the service controller share: the collaborators, the
controller's own copy of each Service it processed, the per-Service locks that serialize the two
paths, the bounded load-balancer call, and the read-only Node views handed to the provider."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from ccm.cloudprovider import CloudProvider, LoadBalancer, Node
from ccm.controllers import base, cloudapi, failures, priority, servicehelpers
from ccm.errors import CCMError
from ccm.kube import informer as kinformer

__all__ = ["KubeWriter", "Recorder", "ServiceState", "ServiceSyncError"]

_log = logging.getLogger("ccm.controllers.service")

T = TypeVar("T")

Recorder = failures.Recorder


class ServiceSyncError(CCMError):
    """A sync of one Service failed; the message is what the Warning event shows."""


class KubeWriter(base.KubePatcher, Protocol):
    """The slice of ``ccm.kube.client.KubeClient`` this controller uses."""


class ServiceState:
    """The state both paths of the service controller work on (see the attributes)."""

    def __init__(
        self,
        *,
        client: KubeWriter,
        services: kinformer.Informer,
        nodes: kinformer.Informer,
        cloud: CloudProvider,
        recorder: Recorder,
        cluster_name: str,
        workers: int,
        cloud_timeout: float,
    ) -> None:
        balancer = cloud.load_balancer()
        if balancer is None:
            raise CCMError("the cloud provider does not support external load balancers")
        self._client = client
        self._services = services
        self._nodes = nodes
        self._cloud = cloud
        self._balancer: LoadBalancer = balancer
        self._recorder = recorder
        self._cluster_name = cluster_name
        self._workers = max(1, workers)
        self._cloud_timeout = cloud_timeout
        #: The last version of each Service this controller processed (upstream ``serviceCache``):
        #: the source of node syncs and of deletes whose Service is already gone.
        self.cache: dict[str, Mapping[str, Any]] = {}
        #: The backend Nodes each load balancer was last given (upstream ``lastSyncedNodes``).
        self.last_synced_nodes: dict[str, list[Mapping[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._node_views: dict[str, tuple[str, Node]] = {}
        self._backends: tuple[int, list[Mapping[str, Any]]] | None = None
        #: First syncs of Services are urgent; the node sync yields to them.
        self.gate = priority.PriorityGate()

    def _lock(self, key: str) -> asyncio.Lock:
        """The lock that serializes the syncs of one Service (ensure, delete, node sync)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _forget(self, key: str) -> None:
        """Drop everything kept about a Service whose load balancer is gone."""
        self.cache.pop(key, None)
        self.last_synced_nodes.pop(key, None)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    async def _call(self, awaitable: Awaitable[T], what: str) -> T:
        """Await one cloud call, bounded by the cloud call timeout (``CloudCallTimeoutError``)."""
        return await base.call_cloud(
            awaitable, self._cloud_timeout, what, capability=cloudapi.LOAD_BALANCER
        )

    def backend_nodes(self) -> list[Mapping[str, Any]]:
        """The load-balancer backend Nodes now (``stable_node_set`` of the Node cache), computed
        again only after the Node cache changed: a node sync over 20,000 Services asks once per
        Service, as upstream lists per Service, and each answer is one shared list. The list is
        not to be mutated (it is also what ``last_synced_nodes`` keeps)."""
        revision = self._nodes.revision
        if self._backends is None or self._backends[0] != revision:
            self._backends = (revision, servicehelpers.stable_node_set(self._nodes.list()))
        return self._backends[1]

    def _node_view(self, node: Mapping[str, Any]) -> Node:
        """A read-only view of ``node``, reused while its resourceVersion stays the same."""
        name = str((node.get("metadata") or {}).get("name") or "")
        rv = str((node.get("metadata") or {}).get("resourceVersion") or "")
        cached = self._node_views.get(name)
        if cached is not None and rv and cached[0] == rv:
            return cached[1]
        view = Node(node)
        if rv:
            self._node_views[name] = (rv, view)
        return view

    def _views(self, nodes: Iterable[Mapping[str, Any]]) -> list[Node]:
        return [self._node_view(n) for n in nodes]

    def _event(self, svc: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        self._recorder.event(svc, event_type, reason, message)
