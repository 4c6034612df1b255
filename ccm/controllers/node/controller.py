"""The cloud node controller itself: the work queue of Node keys, the initialization of a tainted
Node in one guarded write, and the periodic address refresh (see the package docstring)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, TypeVar

from ccm import clock, logs, metrics, names, wellknown
from ccm.cloudprovider import (
    CloudProvider,
    InstanceMetadata,
    InstancesBatch,
    InstancesV2,
    Node,
    NodeAddress,
)
from ccm.controllers import base, batching, cloudapi, failures, nodeutil, priority
from ccm.controllers.base import PeriodicLoop, WorkQueueLoop
from ccm.controllers.node import metadata
from ccm.controllers.node.metadata import NodeInitializationError
from ccm.errors import (
    CCMError,
    CloudCallTimeoutError,
    CloudProviderError,
    NotFoundError,
)
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube import workqueue

__all__ = ["CloudNodeController", "NodeInitializationError"]

_log = logging.getLogger("ccm.controllers.node")

T = TypeVar("T")

#: Conflict retries of the initialization write (upstream UpdateNodeSpecBackoff: 20 steps of
#: about 50 ms).
_CONFLICT_RETRIES = 20
_CONFLICT_BACKOFF = 0.05


class KubeWriter(base.KubeGetter, base.KubePatcher, Protocol):
    """The slice of ``ccm.kube.client.KubeClient`` this controller uses."""


Recorder = failures.Recorder


class CloudNodeController:
    """Initializes tainted Nodes from the cloud and refreshes Node addresses periodically."""

    name = names.CLOUD_NODE_CONTROLLER

    def __init__(
        self,
        *,
        client: KubeWriter,
        nodes: kinformer.Informer,
        cloud: CloudProvider,
        recorder: Recorder,
        workers: int = 1,
        status_update_workers: int = 0,
        status_update_frequency: float = 300.0,
        cloud_timeout: float = 60.0,
        queue: workqueue.WorkQueue[str] | None = None,
        batch_window: float = batching.DEFAULT_WINDOW,
    ) -> None:
        if cloud.instances_v2() is None and cloud.instances() is None:
            raise CCMError("cloud provider does not support instances")
        self._client = client
        self._nodes = nodes
        self._cloud = cloud
        self._recorder = recorder
        self._status_update_workers = (
            status_update_workers if status_update_workers > 0 else workers
        )
        self._status_update_frequency = status_update_frequency
        self._cloud_timeout = cloud_timeout
        self._batch_window = batch_window
        self._batch_cap: InstancesBatch | None = None
        self._coalescer: batching.Coalescer[Node, InstanceMetadata | None] | None = None
        #: Initializations are urgent; the address refresh yields to them.
        self.gate = priority.PriorityGate()
        self.queue: workqueue.WorkQueue[str] = queue or workqueue.WorkQueue(
            names.QUEUE_NODES, rate_limiter=workqueue.default_controller_rate_limiter()
        )
        self._loop = WorkQueueLoop(
            name="cloud-node",
            queue=self.queue,
            reconcile=self.sync_node,
            workers=workers,
            logger=_log,
            key_field="node",
            recorder=recorder,
        )
        nodes.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new))

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if name:
            # An initialized Node only has its labels re-checked: resync work.
            tainted = nodeutil.find_taint(obj, wellknown.TAINT_UNINITIALIZED) is not None
            self.queue.add(str(name), low=not tainted)

    async def run(self) -> None:
        """Wait for the Node cache, then run the workers and the periodic address refresh."""
        with logs.bind(controller=names.CLOUD_NODE_CONTROLLER):
            await self._run()

    async def _run(self) -> None:
        _log.info("Waiting for informer caches to sync")
        await self._nodes.wait_for_sync()
        try:
            with base.running(self.name):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._loop.run(), name="cloud-node/workers")
                    tg.create_task(
                        PeriodicLoop(
                            name="cloud-node/status",
                            period=self._status_update_frequency,
                            step=self.update_node_status,
                            logger=_log,
                        ).run(),
                        name="cloud-node/status",
                    )
        finally:
            if self._coalescer is not None:
                await self._coalescer.aclose()

    # --- initialization -------------------------------------------------------------------------

    async def sync_node(self, name: str) -> None:
        """Reconcile one Node: initialize it if tainted, else reconcile beta→GA labels."""
        node = self._nodes.get(name)
        if node is None:
            return
        if nodeutil.find_taint(node, wellknown.TAINT_UNINITIALIZED) is None:
            await self._reconcile_labels(node)
            return
        _log.info("Initializing node %s with cloud provider", name)
        try:
            with self.gate.urgent():
                await self._initialize(node)
        except (
            CloudProviderError,
            CloudCallTimeoutError,
            NodeInitializationError,
            ValueError,
            TimeoutError,
        ) as exc:
            self._recorder.event(
                node,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_FAILED_TO_INITIALIZE,
                f"Failed to initialize node with cloud provider: {exc}",
            )
            raise

    async def _initialize(self, node: Mapping[str, Any]) -> None:
        name = str(node["metadata"]["name"])
        try:
            metadata = await self._instance_metadata(node, urgent=True)
        except CloudProviderError as exc:
            raise failures.with_context(
                f"failed to get instance metadata for node {name}: {exc}",
                exc,
                NodeInitializationError,
            ) from exc
        if metadata is None:
            _log.info("Skip sync node %s because cloud provided nil metadata", name)
            return

        current: Mapping[str, Any] = node

        async def write() -> Mapping[str, Any] | None:
            if nodeutil.find_taint(current, wellknown.TAINT_UNINITIALIZED) is None:
                return None  # someone else initialized it meanwhile
            patch = nodeutil.initialization_patch(current, metadata)
            # The patch carries the resourceVersion it was computed from, so after a success the
            # stored Node is ``current`` with the patch applied (and a new resourceVersion): build
            # that here rather than decode the apiserver's answer (a whole Node), as upstream
            # records the Event on its own copy of the Node.
            await self._client.patch(
                kclient.NODES, name, patch, patch_type="strategic", decode=False
            )
            return nodeutil.apply_merge_patch(current, patch)

        async def reread() -> None:
            nonlocal current
            current = await self._client.get(kclient.NODES, name)

        try:
            updated = await failures.retry_on_conflict(
                write,
                attempts=_CONFLICT_RETRIES,
                backoff=lambda attempt: _CONFLICT_BACKOFF * (1 + attempt % 2),
                reread=reread,
                what=f"node {name}",
            )
        except NotFoundError:
            return
        if updated is None:
            return

        created = _creation_time(updated)
        if created is not None:
            metrics.NODE_TAINT_REMOVAL_DELAY.observe(max(0.0, clock.wall() - created))
        await self._update_addresses(updated, metadata.node_addresses)
        _log.info("Successfully initialized node %s with cloud provider", name)
        self._recorder.event(
            updated,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_SYNCED,
            wellknown.EVENT_MESSAGE_NODE_SYNCED,
        )
        if created is not None:
            metrics.NODE_INITIAL_SYNC_DELAY.observe(max(0.0, clock.wall() - created))

    async def _reconcile_labels(self, node: Mapping[str, Any]) -> None:
        patch = nodeutil.label_reconcile_patch(node)
        if patch is None:
            return
        name = str(node["metadata"]["name"])
        try:
            await self._client.patch(
                kclient.NODES, name, patch, patch_type="strategic", decode=False
            )
        except NotFoundError:
            return

    async def _call(
        self, awaitable: Awaitable[T], what: str, capability: str = cloudapi.INSTANCES
    ) -> T:
        return await base.call_cloud(awaitable, self._cloud_timeout, what, capability=capability)

    def _metadata_coalescer(self) -> batching.Coalescer[Node, InstanceMetadata | None] | None:
        """The coalescer of ``instance_metadata`` requests when the provider offers InstancesBatch
        (rebuilt if the provider hands out another batch object)."""
        cap = self._cloud.instances_batch()
        if cap is None:
            return None
        if cap is not self._batch_cap or self._coalescer is None:
            self._batch_cap = cap
            self._coalescer = batching.Coalescer(
                cap.instance_metadata_batch,
                max_size=cap.max_batch_size,
                seconds=self._cloud_timeout,
                what="instance_metadata_batch",
                window=self._batch_window,
                read_ahead=self._queued_tainted_nodes,
                key=_version_key,
            )
        return self._coalescer

    def _queued_tainted_nodes(self, limit: int) -> list[Node]:
        """The uninitialized Nodes next in the work queue: a metadata batch call with room asks
        for them too (read-ahead), so a burst of new Nodes takes one call per batch of Nodes
        rather than one per group of workers that happen to come back together."""
        views = []
        for name in self.queue.peek(limit):
            node = self._nodes.get(name)
            if (
                node is not None
                and nodeutil.find_taint(node, wellknown.TAINT_UNINITIALIZED) is not None
            ):
                views.append(Node(node))
        return views

    async def _v2_metadata(
        self, v2: InstancesV2, view: Node, *, urgent: bool = False
    ) -> InstanceMetadata | None:
        """InstancesV2 metadata of one Node: through the batch coalescer when offered (an
        ``urgent`` request ahead of the others)."""
        coalescer = self._metadata_coalescer()
        if coalescer is not None:
            return await coalescer.submit(view, urgent=urgent)
        return await self._call(v2.instance_metadata(view), "instance_metadata")

    async def _instance_metadata(
        self, node: Mapping[str, Any], *, urgent: bool = False
    ) -> InstanceMetadata | None:
        view = Node(node)
        v2 = self._cloud.instances_v2()
        if v2 is not None:
            md = await self._v2_metadata(v2, view, urgent=urgent)
            if md is not None and not md.provider_id:
                if not view.provider_id:
                    raise NodeInitializationError(
                        f"cloud provider does not set node provider ID for node {view.name}"
                    )
                md = dataclasses.replace(md, provider_id=view.provider_id)
            return md
        instances = self._cloud.instances()
        if instances is None:
            raise NodeInitializationError("failed to get instances from cloud provider")
        return await metadata.legacy_instance_metadata(
            self._cloud, instances, view, call_timeout=self._cloud_timeout
        )

    # --- addresses ------------------------------------------------------------------------------

    async def _update_addresses(
        self, node: Mapping[str, Any], cloud_addresses: tuple[NodeAddress, ...] | list[NodeAddress]
    ) -> None:
        """Patch ``status.addresses`` when the cloud's addresses differ (upstream
        ``updateNodeAddress``)."""
        name = str(node["metadata"]["name"])
        if nodeutil.find_taint(node, wellknown.TAINT_UNINITIALIZED) is not None:
            _log.log(logs.v(5), "This node %s is still tainted. Will not process.", name)
            return
        try:
            desired = nodeutil.desired_addresses(node, cloud_addresses)
        except ValueError as exc:
            _log.error(
                "Failed to update node addresses for node %r: %s", name, exc, extra=logs.err(exc)
            )
            return
        if desired is None:
            _log.log(
                logs.v(5),
                "Skipping node address update for node %r since cloud provider did not return any",
                name,
            )
            return
        if not nodeutil.addresses_changed(nodeutil.node_addresses(node), desired):
            return
        body = nodeutil.addresses_patch(desired)
        try:
            await self._client.patch(
                kclient.NODES,
                name,
                body,
                subresource="status",
                patch_type="strategic",
                decode=False,
            )
        except NotFoundError:
            return
        except CCMError as exc:
            _log.error(
                "Error patching node with cloud ip addresses = [%s]", exc, extra=logs.err(exc)
            )

    async def update_node_status(self) -> None:
        """One pass of the periodic address refresh over every initialized Node."""
        start = clock.monotonic()
        nodes = self._nodes.list()
        initialized = [
            n for n in nodes if nodeutil.find_taint(n, wellknown.TAINT_UNINITIALIZED) is None
        ]

        async def refresh(node: Mapping[str, Any]) -> None:
            name = node["metadata"]["name"]
            with logs.bind(node=name):
                try:
                    async with self.gate.background():
                        addresses = await self._instance_addresses(node)
                except (CCMError, TimeoutError) as exc:
                    _log.error(
                        "Error getting instance metadata for node addresses: %s",
                        exc,
                        extra=logs.err(exc),
                    )
                    return
                if addresses is None:
                    _log.info(
                        "Skipping address update of node %s: cloud provided nil metadata", name
                    )
                    return
                await self._update_addresses(node, addresses)

        await base.run_bounded(
            (functools.partial(refresh, n) for n in initialized),
            self._status_update_workers,
            "cloud-node/status",
        )
        _log.log(
            logs.v(2), "Update %d nodes status took %.3fs.", len(nodes), clock.monotonic() - start
        )

    async def _instance_addresses(self, node: Mapping[str, Any]) -> list[NodeAddress] | None:
        view = Node(node)
        v2 = self._cloud.instances_v2()
        if v2 is not None:
            md = await self._v2_metadata(v2, view)
            return None if md is None else list(md.node_addresses)
        instances = self._cloud.instances()
        if instances is None:
            raise NodeInitializationError("failed to get instances from cloud provider")
        return await metadata.legacy_addresses(
            instances, view.provider_id, view.name, call_timeout=self._cloud_timeout
        )


def _version_key(view: Node) -> tuple[str, str, str]:
    """The key of a read-ahead answer: this very version of this Node."""
    return (view.name, view.uid, str(view.metadata.get("resourceVersion", "")))


def _creation_time(node: Mapping[str, Any]) -> float | None:
    """The Node's creationTimestamp (``2026-11-25T16:00:00Z``, RFC 3339 in UTC to the second) in
    seconds since the epoch, or None when it has none or another shape."""
    ts = (node.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(ts, str) or len(ts) != 20 or ts[10] != "T" or ts[19] != "Z":
        return None
    try:
        # fromisoformat is ten times cheaper than strptime; the checks above keep to one format.
        created = dt.datetime.fromisoformat(ts[:19])
    except ValueError:
        return None
    return created.replace(tzinfo=dt.UTC).timestamp()
