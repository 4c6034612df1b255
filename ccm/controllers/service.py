"""The service load-balancer controller (``service-lb-controller``): a cloud load balancer for every
``type: LoadBalancer`` Service without a ``loadBalancerClass``, its ingress in the Service status,
and a finalizer that guarantees the load balancer is deleted with the Service.

Ports ``controllers/service/controller.go`` of k8s.io/cloud-provider (UPSTREAM_SPEC §2.4); the pure
predicates live in :mod:`ccm.controllers.servicehelpers`. Two queues as upstream: ``service``
(``--concurrent-service-syncs`` workers, per-key backoff 5 s → 300 s, RetryAfterError requeued after
exactly its delay by the WorkQueueLoop switch) and ``node`` (one worker; any Node key re-syncs the
backends of every load balancer, failures fall back to a full ensure via the service queue).

Deliberate differences from upstream:
- a Service being deleted (deletionTimestamp) always takes the delete branch, even without our
  finalizer (upstream tries to add the finalizer, which the apiserver forbids, and retries forever);
- a Service delete event enqueues the key when the controller has handled that Service before, so a
  load balancer is deleted even when someone stripped our finalizer (upstream ignores deletes);
- ensure/delete of a Service and the node-sync update of the same Service are serialized by a
  per-Service lock, and the node-sync backend set is computed under it (upstream can race a slow
  ``UpdateLoadBalancer`` with stale hosts against a newer ensure);
- the node sync skips a Service that is being deleted or no longer wants a load balancer,
  judged on both the version the controller last processed and the informer's current one (upstream
  still calls ``UpdateLoadBalancer`` for it until the service worker gets to it, racing the
  delete); a Service gone from the informer is left to the delete path too;
- a Service without a load balancer yet comes first: its key goes to the service queue's high lane,
  while a Service that already shows an ingress (re-added by a start-up or relist) and the retries
  of a node sync go to the low lane; while such a first sync runs, the node sync makes one cloud
  call at a time (:class:`ccm.controllers.priority.PriorityGate`);
- every cloud call is bounded by ``--cloud-call-timeout``;
- providers get read-only views (:mod:`ccm.cloudprovider.objects`), never cache objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ccm import clock, logs, metrics, names, wellknown
from ccm.cloudprovider import CloudProvider, LoadBalancer, LoadBalancerStatus, Node, Service
from ccm.controllers import base, cloudapi, failures, priority
from ccm.controllers import servicehelpers as helpers
from ccm.controllers.base import WorkQueueLoop
from ccm.errors import CCMError, CloudCallTimeoutError, ImplementedElsewhereError, NotFoundError
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube import workqueue

__all__ = ["CloudCallTimeoutError", "ServiceController", "ServiceSyncError"]

_log = logging.getLogger("ccm.controllers.service")

T = TypeVar("T")

#: Upstream ``minRetryDelay`` / ``maxRetryDelay``.
MIN_RETRY_DELAY = 5.0
MAX_RETRY_DELAY = 300.0


class ServiceSyncError(CCMError):
    """A sync of one Service failed; the message is what the Warning event shows."""


class Operation(enum.Enum):
    DELETE = "delete"
    ENSURE = "ensure"


class KubeWriter(base.KubePatcher, Protocol):
    """The slice of ``ccm.kube.client.KubeClient`` this controller uses."""


Recorder = base.Recorder


def _wants_node_sync(svc: Mapping[str, Any]) -> bool:
    """Whether a node sync may update this Service's load balancer: it wants one and is neither
    being deleted nor waiting for the cleanup of one (those belong to the delete path)."""
    if (svc.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return helpers.wants_load_balancer(svc) and not helpers.needs_cleanup(svc)


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _served(svc: Mapping[str, Any]) -> bool:
    """Whether a Service wanting a load balancer shows one already (a sync of it is a resync)."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    return (
        bool(ingress)
        and helpers.wants_load_balancer(svc)
        and not helpers.needs_cleanup(svc)
        and not (svc.get("metadata") or {}).get("deletionTimestamp")
    )


class ServiceController:
    """Keeps cloud load balancers in sync with LoadBalancer Services and their backend Nodes."""

    name = names.SERVICE_LB_CONTROLLER

    def __init__(
        self,
        *,
        client: KubeWriter,
        services: kinformer.Informer,
        nodes: kinformer.Informer,
        cloud: CloudProvider,
        recorder: Recorder,
        cluster_name: str = "kubernetes",
        workers: int = 1,
        cloud_timeout: float = 60.0,
        service_queue: workqueue.WorkQueue[str] | None = None,
        node_queue: workqueue.WorkQueue[str] | None = None,
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
        self.service_queue: workqueue.WorkQueue[str] = service_queue or workqueue.WorkQueue(
            names.QUEUE_SERVICE,
            rate_limiter=workqueue.ItemExponentialFailureRateLimiter(
                MIN_RETRY_DELAY, MAX_RETRY_DELAY
            ),
        )
        self.node_queue: workqueue.WorkQueue[str] = node_queue or workqueue.WorkQueue(
            names.QUEUE_SERVICE_NODES,
            rate_limiter=workqueue.ItemExponentialFailureRateLimiter(
                MIN_RETRY_DELAY, MAX_RETRY_DELAY
            ),
        )
        self._service_loop = WorkQueueLoop(
            name="service",
            queue=self.service_queue,
            reconcile=self.sync_service,
            workers=self._workers,
            logger=_log,
            key_field="service",
        )
        self._node_loop = WorkQueueLoop(
            name="service-node",
            queue=self.node_queue,
            reconcile=self._process_node_key,
            workers=1,  # one node sync at a time, as upstream
            logger=_log,
            key_field="node",
        )
        #: The last version of each Service this controller processed (upstream ``serviceCache``):
        #: the source of node syncs and of deletes whose Service is already gone.
        self.cache: dict[str, Mapping[str, Any]] = {}
        #: The backend Nodes each load balancer was last given (upstream ``lastSyncedNodes``).
        self.last_synced_nodes: dict[str, list[Mapping[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._node_views: dict[str, tuple[str, Node]] = {}
        #: First syncs of Services are urgent; the node sync yields to them.
        self.gate = priority.PriorityGate()
        services.add_handler(
            on_add=self._on_service_add,
            on_update=self._on_service_update,
            on_delete=self._on_service_delete,
        )
        nodes.add_handler(
            on_add=self._on_node_add, on_update=self._on_node_update, on_delete=self._on_node_delete
        )

    # --- event handlers ---------------------------------------------------------------------------

    def _on_service_add(self, svc: Mapping[str, Any]) -> None:
        # needs_cleanup here is the remedy for changes missed while ccm was down.
        if helpers.wants_load_balancer(svc) or helpers.needs_cleanup(svc):
            self.service_queue.add(helpers.service_key(svc), low=_served(svc))

    def _on_service_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if helpers.needs_update(old, new) or helpers.needs_cleanup(new):
            self.service_queue.add(helpers.service_key(new))

    def _on_service_delete(self, svc: Mapping[str, Any]) -> None:
        key = helpers.service_key(svc)
        if key in self.cache:
            self.service_queue.add(key)

    def _on_node_add(self, node: Mapping[str, Any]) -> None:
        self.node_queue.add(_name(node))

    def _on_node_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if helpers.should_sync_updated_node(old, new):
            self.node_queue.add(_name(new))

    def _on_node_delete(self, node: Mapping[str, Any]) -> None:
        self._node_views.pop(_name(node), None)
        self.node_queue.add(_name(node))

    # --- running ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Wait for the Service and Node caches, then run the service and node workers."""
        with logs.bind(controller=names.SERVICE_LB_CONTROLLER):
            await self._run()

    async def _run(self) -> None:
        _log.info("Starting service controller")
        await self._services.wait_for_sync()
        await self._nodes.wait_for_sync()
        try:
            with base.running(self.name):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._service_loop.run(), name="service/workers")
                    tg.create_task(self._node_loop.run(), name="service/node-worker")
        finally:
            _log.info("Shutting down service controller")

    async def process_service_key(self, key: str) -> None:
        """Run one service key through the worker's retry switch (for tests)."""
        await self._service_loop.process(key)

    # --- helpers ----------------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _forget(self, key: str) -> None:
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

    def _node_view(self, node: Mapping[str, Any]) -> Node:
        """A read-only view of ``node``, reused while its resourceVersion stays the same."""
        name = _name(node)
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

    # --- service sync -----------------------------------------------------------------------------

    async def sync_service(self, key: str) -> None:
        """Reconcile one Service key (upstream ``syncService``)."""
        start = clock.monotonic()
        try:
            helpers.split_key(key)
            svc = self._services.get(key)
            if svc is None:
                await self._process_service_deletion(key)
            else:
                await self._process_service_create_or_update(svc, key)
        finally:
            _log.log(
                logs.v(4),
                'Finished syncing service "%s" (%.3fs)',
                key,
                clock.monotonic() - start,
            )

    async def _process_service_deletion(self, key: str) -> None:
        cached = self.cache.get(key)
        if cached is None:
            return  # never had a load balancer, or it is deleted already
        _log.log(
            logs.v(2),
            "Service %s has been deleted. Attempting to cleanup load balancer resources",
            key,
        )
        async with self._lock(key):
            await self._process_load_balancer_delete(cached, key)
        self._forget(key)

    async def _process_load_balancer_delete(self, svc: Mapping[str, Any], key: str) -> None:
        """Delete the load balancer of a Service we no longer see (legacy, cache-based path)."""
        if not helpers.wants_load_balancer(svc):
            return
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_DELETING_LB,
            wellknown.EVENT_MESSAGE_DELETING_LB,
        )
        try:
            await self._call(
                self._balancer.ensure_load_balancer_deleted(self._cluster_name, Service(svc)),
                "ensure_load_balancer_deleted",
            )
        except Exception as exc:
            self._event(
                svc,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_DELETE_LB_FAILED,
                f"Error deleting load balancer: {exc}",
            )
            raise
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_DELETED_LB,
            wellknown.EVENT_MESSAGE_DELETED_LB,
        )

    async def _process_service_create_or_update(self, svc: Mapping[str, Any], key: str) -> None:
        async with self._lock(key):
            cached = self.cache.get(key)
            if cached is not None and _uid(cached) != _uid(svc):
                # Deleted and re-created under the same name (possible without the finalizer):
                # the old load balancer goes first.
                await self._process_load_balancer_delete(cached, key)
            # Always cache: a delete whose Service is already gone needs this copy.
            self.cache[key] = svc
            urgent = self.gate.urgent() if not _served(svc) else contextlib.nullcontext()
            try:
                with urgent:
                    op = await self._sync_load_balancer_if_needed(svc, key)
            except Exception as exc:
                self._event(
                    svc,
                    wellknown.EVENT_WARNING,
                    wellknown.EVENT_REASON_SYNC_LB_FAILED,
                    f"Error syncing load balancer: {exc}",
                )
                raise
        if op is Operation.DELETE:
            self._forget(key)  # only after the load balancer is really gone

    async def _sync_load_balancer_if_needed(self, svc: Mapping[str, Any], key: str) -> Operation:
        previous: Mapping[str, Any] = (svc.get("status") or {}).get("loadBalancer") or {}
        view = Service(svc)
        deleting = bool((svc.get("metadata") or {}).get("deletionTimestamp"))
        new_status: Mapping[str, Any]
        if not helpers.wants_load_balancer(svc) or helpers.needs_cleanup(svc) or deleting:
            op = Operation.DELETE
            new_status = {}
            try:
                exists = (
                    await self._call(
                        self._balancer.get_load_balancer(self._cluster_name, view),
                        "get_load_balancer",
                    )
                    is not None
                )
            except Exception as exc:
                raise failures.with_context(
                    f"failed to check if load balancer exists before cleanup: {exc}",
                    exc,
                    ServiceSyncError,
                ) from exc
            if exists:
                _log.log(logs.v(2), "Deleting existing load balancer for service %s", key)
                self._event(
                    svc,
                    wellknown.EVENT_NORMAL,
                    wellknown.EVENT_REASON_DELETING_LB,
                    wellknown.EVENT_MESSAGE_DELETING_LB,
                )
                try:
                    await self._call(
                        self._balancer.ensure_load_balancer_deleted(self._cluster_name, view),
                        "ensure_load_balancer_deleted",
                    )
                except ImplementedElsewhereError:
                    _log.log(
                        logs.v(4),
                        "LoadBalancer for service %s implemented by a different controller %s, "
                        "Ignoring error on deletion",
                        key,
                        self._cloud.provider_name,
                    )
                except Exception as exc:
                    raise failures.with_context(
                        f"failed to delete load balancer: {exc}", exc, ServiceSyncError
                    ) from exc
            # The finalizer goes only once the load balancer is gone.
            try:
                await self._remove_finalizer(svc)
            except Exception as exc:
                raise failures.with_context(
                    f"failed to remove load balancer cleanup finalizer: {exc}",
                    exc,
                    ServiceSyncError,
                ) from exc
            self._event(
                svc,
                wellknown.EVENT_NORMAL,
                wellknown.EVENT_REASON_DELETED_LB,
                wellknown.EVENT_MESSAGE_DELETED_LB,
            )
        else:
            op = Operation.ENSURE
            _log.log(logs.v(2), "Ensuring load balancer for service %s", key)
            self._event(
                svc,
                wellknown.EVENT_NORMAL,
                wellknown.EVENT_REASON_ENSURING_LB,
                wellknown.EVENT_MESSAGE_ENSURING_LB,
            )
            # The finalizer comes before any cloud call: no load balancer can outlive its Service.
            try:
                await self._add_finalizer(svc)
            except Exception as exc:
                raise failures.with_context(
                    f"failed to add load balancer cleanup finalizer: {exc}", exc, ServiceSyncError
                ) from exc
            try:
                status = await self._ensure_load_balancer(svc, view, key)
            except ImplementedElsewhereError:
                _log.log(
                    logs.v(4),
                    "LoadBalancer for service %s implemented by a different controller %s, "
                    "Ignoring error",
                    key,
                    self._cloud.provider_name,
                )
                return op
            except Exception as exc:
                raise failures.with_context(
                    f"failed to ensure load balancer: {exc}", exc, ServiceSyncError
                ) from exc
            if status is None:
                raise ServiceSyncError("service status returned by EnsureLoadBalancer is nil")
            new_status = status.to_dict()
            self._event(
                svc,
                wellknown.EVENT_NORMAL,
                wellknown.EVENT_REASON_ENSURED_LB,
                wellknown.EVENT_MESSAGE_ENSURED_LB,
            )
        try:
            await self._patch_status(svc, previous, new_status)
        except NotFoundError:
            pass  # the Service went away right after its finalizer was removed
        except Exception as exc:
            raise failures.with_context(
                f"failed to update load balancer status: {exc}", exc, ServiceSyncError
            ) from exc
        return op

    async def _ensure_load_balancer(
        self, svc: Mapping[str, Any], view: Service, key: str
    ) -> LoadBalancerStatus | None:
        nodes = helpers.stable_node_set(self._nodes.list())
        if not nodes:
            self._event(
                svc,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_UNAVAILABLE_LB,
                wellknown.EVENT_MESSAGE_UNAVAILABLE_LB,
            )
        self.last_synced_nodes[key] = nodes
        status: LoadBalancerStatus | None = await self._call(
            self._balancer.ensure_load_balancer(self._cluster_name, view, self._views(nodes)),
            "ensure_load_balancer",
        )
        return status

    async def _patch(self, svc: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        meta = svc.get("metadata") or {}
        await self._client.patch(
            kclient.SERVICES,
            str(meta.get("name")),
            body,
            namespace=str(meta.get("namespace")),
            subresource="status",
            patch_type="strategic",
        )

    async def _add_finalizer(self, svc: Mapping[str, Any]) -> None:
        if helpers.has_lb_finalizer(svc):
            return
        _log.log(logs.v(2), "Adding finalizer to service %s", helpers.service_key(svc))
        await self._patch(svc, helpers.add_finalizer_patch())

    async def _remove_finalizer(self, svc: Mapping[str, Any]) -> None:
        if not helpers.has_lb_finalizer(svc):
            return
        _log.log(logs.v(2), "Removing finalizer from service %s", helpers.service_key(svc))
        await self._patch(svc, helpers.remove_finalizer_patch())

    async def _patch_status(
        self, svc: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        if helpers.load_balancer_status_equal(previous, new):
            return
        _log.log(logs.v(2), "Patching status for service %s", helpers.service_key(svc))
        await self._patch(svc, helpers.status_patch(new))

    # --- node sync --------------------------------------------------------------------------------

    async def _process_node_key(self, _key: str) -> None:
        for key in sorted(await self.sync_nodes()):
            self.service_queue.add(key, low=True)

    async def sync_nodes(self) -> set[str]:
        """Update the backends of every cached LoadBalancer Service; return the keys to retry."""
        start = clock.monotonic()
        try:
            _log.log(logs.v(2), "Syncing backends for all LB services.")
            services = list(self.cache.values())
            retry = await self.update_load_balancer_hosts(services, self._workers)
            _log.log(
                logs.v(2),
                "Successfully updated %d out of %d load balancers to direct traffic to the "
                "updated set of nodes",
                len(services) - len(retry),
                len(services),
            )
            return retry
        finally:
            metrics.SERVICE_NODESYNC_LATENCY.observe(clock.monotonic() - start)

    async def update_load_balancer_hosts(
        self, services: Sequence[Mapping[str, Any] | None], workers: int
    ) -> set[str]:
        """Run :meth:`node_sync_service` over ``services`` with ``workers`` in parallel."""
        retry: set[str] = set()

        async def one(svc: Mapping[str, Any]) -> None:
            if await self.node_sync_service(svc):
                retry.add(helpers.service_key(svc))

        await base.run_bounded(
            (functools.partial(one, svc) for svc in services if svc is not None),
            workers,
            "service/node-sync",
        )
        return retry

    async def node_sync_service(self, svc: Mapping[str, Any]) -> bool:
        """Sync the backends of one Service's load balancer; True when it must be retried."""
        key = helpers.service_key(svc)
        async with self._lock(key):
            svc = self.cache.get(key, svc)
            current = self._services.get(key)
            if current is None and key in self.cache:
                return False  # deleted: the delete path owns its load balancer
            if not _wants_node_sync(svc) or (current is not None and not _wants_node_sync(current)):
                return False
            new_nodes = helpers.stable_node_set(self._nodes.list())
            old_nodes = helpers.stable_node_set(self.last_synced_nodes.get(key, ()))
            # Stored whether or not the update succeeds: a failure is retried as a full ensure.
            self.last_synced_nodes[key] = new_nodes
            if helpers.nodes_sufficiently_equal(old_nodes, new_nodes):
                return False
            _log.log(logs.v(4), "nodeSyncService started for service %s", key)
            try:
                async with self.gate.background():
                    await self._update_load_balancer_hosts(svc, new_nodes)
            except Exception as exc:
                _log.error(
                    "failed to update load balancer hosts for service %s: %s",
                    key,
                    exc,
                    extra=logs.err(exc),
                )
                metrics.SERVICE_NODESYNC_ERROR.inc()
                return True
            _log.log(logs.v(4), "nodeSyncService finished successfully for service %s", key)
            return False

    async def _update_load_balancer_hosts(
        self, svc: Mapping[str, Any], hosts: Sequence[Mapping[str, Any]]
    ) -> None:
        start = clock.monotonic()
        metrics.SERVICE_LOADBALANCER_SYNC.inc()
        key = helpers.service_key(svc)
        view = Service(svc)
        try:
            _log.log(
                logs.v(2),
                "Updating backends for load balancer %s with %d nodes: %s",
                key,
                len(hosts),
                helpers.loggable_node_names(hosts),
            )
            try:
                await self._call(
                    self._balancer.update_load_balancer(
                        self._cluster_name, view, self._views(hosts)
                    ),
                    "update_load_balancer",
                )
            except ImplementedElsewhereError:
                return
            except Exception as exc:
                # It is only an error if the load balancer still exists.
                try:
                    exists = (
                        await self._call(
                            self._balancer.get_load_balancer(self._cluster_name, view),
                            "get_load_balancer",
                        )
                        is not None
                    )
                except Exception as get_exc:
                    _log.error(
                        "failed to check if load balancer exists for service %s: %s",
                        key,
                        get_exc,
                        extra=logs.err(get_exc),
                    )
                else:
                    if not exists:
                        return
                shown = " ".join(helpers.loggable_node_names(hosts))
                self._event(
                    svc,
                    wellknown.EVENT_WARNING,
                    wellknown.EVENT_REASON_UPDATE_LB_FAILED,
                    f"Error updating load balancer with new hosts [{shown}] [node names limited, "
                    f"total number of nodes: {len(hosts)}], error: {exc}",
                )
                raise
            if not hosts:
                self._event(
                    svc,
                    wellknown.EVENT_WARNING,
                    wellknown.EVENT_REASON_UNAVAILABLE_LB,
                    wellknown.EVENT_MESSAGE_UNAVAILABLE_LB,
                )
            else:
                self._event(
                    svc,
                    wellknown.EVENT_NORMAL,
                    wellknown.EVENT_REASON_UPDATED_LB,
                    wellknown.EVENT_MESSAGE_UPDATED_LB,
                )
        finally:
            metrics.SERVICE_UPDATE_LB_HOST_LATENCY.observe(clock.monotonic() - start)
