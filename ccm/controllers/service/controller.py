"""The wiring of the service controller: its two queues and their workers, and the informer event
handlers that feed them (see the package docstring for the behaviour)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ccm import logs, names
from ccm.cloudprovider import CloudProvider
from ccm.controllers import base, servicehelpers
from ccm.controllers.base import WorkQueueLoop
from ccm.controllers.service.nodesync import NodeSync
from ccm.controllers.service.state import KubeWriter, Recorder
from ccm.controllers.service.sync import ServiceSync
from ccm.kube import informer as kinformer
from ccm.kube import workqueue

__all__ = [
    "MAX_RETRY_DELAY",
    "MIN_RETRY_DELAY",
    "NODE_SYNC_KEY",
    "KubeWriter",
    "ServiceController",
]

_log = logging.getLogger("ccm.controllers.service")

#: Upstream ``minRetryDelay`` / ``maxRetryDelay``.
MIN_RETRY_DELAY = 5.0
MAX_RETRY_DELAY = 300.0


#: The one key of the node queue: any Node change asks for one pass over every Service, so changes
#: that arrive while a pass is queued or running coalesce into one more pass (as upstream, whose
#: node queue holds a single constant key), instead of one pass per Node.
NODE_SYNC_KEY = "node-sync"


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class ServiceController(ServiceSync, NodeSync):
    """Keeps cloud load balancers in sync with LoadBalancer Services and their backend Nodes: the
    Service path is :class:`~ccm.controllers.service.sync.ServiceSync`, the node path
    :class:`~ccm.controllers.service.nodesync.NodeSync`."""

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
        super().__init__(
            client=client,
            services=services,
            nodes=nodes,
            cloud=cloud,
            recorder=recorder,
            cluster_name=cluster_name,
            workers=workers,
            cloud_timeout=cloud_timeout,
        )
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
            recorder=recorder,
        )
        self._node_loop = WorkQueueLoop(
            name="service-node",
            queue=self.node_queue,
            reconcile=self._process_node_key,
            workers=1,  # one node sync at a time, as upstream
            logger=_log,
            recorder=recorder,
        )
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
        if servicehelpers.wants_load_balancer(svc) or servicehelpers.needs_cleanup(svc):
            self.service_queue.add(
                servicehelpers.service_key(svc), low=servicehelpers.is_served(svc)
            )

    def _on_service_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if servicehelpers.needs_update(old, new) or servicehelpers.needs_cleanup(new):
            self.service_queue.add(servicehelpers.service_key(new))

    def _on_service_delete(self, svc: Mapping[str, Any]) -> None:
        key = servicehelpers.service_key(svc)
        if key in self.cache:
            self.service_queue.add(key)

    def _on_node_add(self, _node: Mapping[str, Any]) -> None:
        self.node_queue.add(NODE_SYNC_KEY)

    def _on_node_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if servicehelpers.should_sync_updated_node(old, new):
            self.node_queue.add(NODE_SYNC_KEY)

    def _on_node_delete(self, node: Mapping[str, Any]) -> None:
        self._node_views.pop(_name(node), None)
        self.node_queue.add(NODE_SYNC_KEY)

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
