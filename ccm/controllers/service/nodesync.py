"""The node path of the service controller: when the set of backend Nodes changes, update the
backends of every load balancer (upstream ``nodeSyncInternal``, ``updateLoadBalancerHosts``,
``nodeSyncService``, ``lockedUpdateLoadBalancerHosts``).

A Node change queues the node queue's one key, and a pass of that key goes over every Service the
controller processed. A Service whose backend set is the same (names and providerIDs) is skipped;
a failed update is retried as a full ensure through the service queue (low lane). The pass runs
under each Service's lock and skips a Service that the delete path owns.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ccm import clock, logs, metrics, wellknown
from ccm.cloudprovider import Service
from ccm.controllers import base, servicehelpers
from ccm.controllers.service.state import ServiceState
from ccm.errors import ImplementedElsewhereError
from ccm.kube import workqueue

__all__ = ["NodeSync"]

_log = logging.getLogger("ccm.controllers.service")


class NodeSync(ServiceState):
    """The node path of the service controller."""

    service_queue: workqueue.WorkQueue[str]

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
                retry.add(servicehelpers.service_key(svc))

        await base.run_bounded(
            [functools.partial(one, svc) for svc in services if svc is not None],
            workers,
            "service/node-sync",
        )
        return retry

    async def node_sync_service(self, svc: Mapping[str, Any]) -> bool:
        """Sync the backends of one Service's load balancer; True when it must be retried."""
        key = servicehelpers.service_key(svc)
        async with self._lock(key):
            svc = self.cache.get(key, svc)
            current = self._services.get(key)
            if current is None and key in self.cache:
                return False  # deleted: the delete path owns its load balancer
            if not servicehelpers.wants_node_sync(svc) or (
                current is not None and not servicehelpers.wants_node_sync(current)
            ):
                return False
            new_nodes = self.backend_nodes()
            # What is kept came from backend_nodes() too: already the stable set.
            old_nodes = self.last_synced_nodes.get(key, ())
            # Stored whether or not the update succeeds: a failure is retried as a full ensure.
            self.last_synced_nodes[key] = new_nodes
            if old_nodes is new_nodes or servicehelpers.nodes_sufficiently_equal(
                old_nodes, new_nodes
            ):
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
        key = servicehelpers.service_key(svc)
        view = Service(svc)
        try:
            _log.log(
                logs.v(2),
                "Updating backends for load balancer %s with %d nodes: %s",
                key,
                len(hosts),
                servicehelpers.loggable_node_names(hosts),
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
                    status = await self._call(
                        self._balancer.get_load_balancer(self._cluster_name, view),
                        "get_load_balancer",
                    )
                except Exception as get_exc:
                    _log.error(
                        "failed to check if load balancer exists for service %s: %s",
                        key,
                        get_exc,
                        extra=logs.err(get_exc),
                    )
                else:
                    if status is None:
                        return
                shown = " ".join(servicehelpers.loggable_node_names(hosts))
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
