"""The node lifecycle controller itself: the sweep over every cached Node, the decision per Node
on the cloud's answers (:mod:`.cloud`) and the Kubernetes writes it leads to (delete the Node,
add or remove the shutdown taint). See the package docstring for the behaviour."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ccm import clock, logs, names, wellknown
from ccm.cloudprovider import CloudProvider, InstancesBatch, Node, split_provider_id
from ccm.controllers import base, batching, cloudapi, failures
from ccm.controllers.base import PeriodicLoop
from ccm.controllers.nodelifecycle import cloud, rules
from ccm.errors import CCMError, ConflictError, NotFoundError
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer

__all__ = ["DEFAULT_CONCURRENCY", "CloudNodeLifecycleController", "KubeWriter"]

_log = logging.getLogger("ccm.controllers.nodelifecycle")

#: Cached Nodes looked at per step of a sweep before the loop is let go once.
_SWEEP_SLICE = 500

#: Nodes whose cloud state is checked at the same time within one sweep (ccm addition).
DEFAULT_CONCURRENCY = 10

#: Attempts of a taint write (upstream: 5 conflict retries, 100 ms apart).
_TAINT_ATTEMPTS = 5
_TAINT_BACKOFF = 0.1


class KubeWriter(base.KubeGetter, base.KubePatcher, base.KubeDeleter, Protocol):
    """The slice of ``ccm.kube.client.KubeClient`` this controller uses."""


Recorder = failures.Recorder


class CloudNodeLifecycleController:
    """Deletes Nodes whose instance is gone and taints Nodes whose instance is shut down."""

    name = names.CLOUD_NODE_LIFECYCLE_CONTROLLER

    def __init__(
        self,
        *,
        client: KubeWriter,
        nodes: kinformer.Informer,
        cloud: CloudProvider,
        recorder: Recorder,
        node_monitor_period: float = 5.0,
        cloud_timeout: float = 60.0,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if cloud.instances_v2() is None and cloud.instances() is None:
            raise CCMError("cloud provider does not support instances")
        if node_monitor_period <= 0:
            raise ValueError("node_monitor_period must be > 0")
        self._client = client
        self._nodes = nodes
        self._cloud = cloud
        self._recorder = recorder
        self._period = node_monitor_period
        self._cloud_timeout = cloud_timeout
        self._concurrency = max(1, concurrency)
        # (uid, providerID) of Nodes already reported for a malformed providerID
        self._reported_bad_ids: set[tuple[str, str]] = set()

    async def run(self) -> None:
        """Wait for the Node cache, then sweep every ``node_monitor_period`` until cancelled."""
        with logs.bind(controller=names.CLOUD_NODE_LIFECYCLE_CONTROLLER):
            await self._run()

    async def _run(self) -> None:
        _log.info("Waiting for informer caches to sync")
        await self._nodes.wait_for_sync()
        with base.running(self.name):
            await PeriodicLoop(
                name="cloud-node-lifecycle/monitor",
                period=self._period,
                step=self.monitor_nodes,
                sliding=True,
                logger=_log,
            ).run()

    # --- the sweep ------------------------------------------------------------------------------

    async def monitor_nodes(self) -> None:
        """One sweep over every cached Node (upstream ``MonitorNodes``)."""
        start = clock.monotonic()
        nodes = self._nodes.list()
        seen: set[tuple[str, str]] = set()

        async def check(node: Mapping[str, Any]) -> None:
            try:
                await self.monitor_node(node)
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("unexpected error monitoring node %s", node["metadata"].get("name"))

        batch = self._cloud.instances_batch() if self._cloud.instances_v2() is not None else None
        jobs: list[Callable[[], Awaitable[None]]] = []
        to_ask: list[Mapping[str, Any]] = []  # NotReady Nodes, asked in batches
        for i, node in enumerate(nodes, 1):
            if i % _SWEEP_SLICE == 0:
                await asyncio.sleep(0)  # 20,000 Nodes in one step would hold the loop
            # Read from the cached dict: a provider's view (Node) deep-freezes the whole object.
            meta, spec = node.get("metadata") or {}, node.get("spec") or {}
            seen.add((str(meta.get("uid", "")), str(spec.get("providerID", "") or "")))
            if rules.ready_status(node) == "True" and not rules.has_shutdown_taint(node):
                continue  # the common case: nothing to do
            if batch is not None and rules.ready_status(node) != "True":
                to_ask.append(node)
                continue
            jobs.append(functools.partial(check, node))
        if batch is not None and to_ask:
            size = max(1, int(batch.max_batch_size))
            for i in range(0, len(to_ask), size):
                jobs.append(functools.partial(self._monitor_batch, batch, to_ask[i : i + size]))
        await base.run_bounded(jobs, self._concurrency, "cloud-node-lifecycle/sweep")
        self._reported_bad_ids &= seen  # forget Nodes that are gone or fixed
        _log.log(
            logs.v(4),
            "Monitored %d nodes in %.3fs",
            len(nodes),
            clock.monotonic() - start,
        )

    async def monitor_node(self, node: Mapping[str, Any]) -> None:
        """Check one (cached) Node against the cloud and act on the answer."""
        with logs.bind(node=Node(node).name):
            await self._monitor_node(node)

    async def _monitor_node(self, node: Mapping[str, Any]) -> None:
        view = Node(node)
        name = view.name
        if rules.ready_status(node) == "True":
            try:
                await self._update_taints(node, rules.without_shutdown_taint)
            except (CCMError, TimeoutError) as exc:
                _log.error("error patching node taints: %s", exc, extra=logs.err(exc))
            return

        try:
            exists = await self._instance_exists(view)
        except (CCMError, TimeoutError) as exc:
            _log.error(
                "error checking if node %s exists: %s", name, rules.reason(exc), extra=logs.err(exc)
            )
            return

        if not exists:
            if self._malformed_provider_id(node):
                return
            await self._delete_node(node)
            return

        try:
            shutdown = await self._instance_shutdown(view)
        except (CCMError, TimeoutError) as exc:
            _log.error(
                "error checking if node %s is shutdown: %s",
                name,
                rules.reason(exc),
                extra=logs.err(exc),
            )
            return
        await self._set_shutdown_taint(node, shutdown)

    async def _monitor_batch(self, batch: InstancesBatch, chunk: list[Mapping[str, Any]]) -> None:
        """The NotReady branch of :meth:`monitor_node` for a chunk of Nodes, with one
        ``instance_exists_batch`` call and one ``instance_shutdown_batch`` call for those that
        exist. Per Node the semantics are those of the single calls: an Exception is doubt."""
        views = [Node(node) for node in chunk]
        exists = await batching.call_batch(
            batch.instance_exists_batch,
            views,
            self._cloud_timeout,
            "instance_exists_batch",
            capability=cloudapi.INSTANCES,
        )
        alive: list[tuple[Mapping[str, Any], Node]] = []
        for node, view, answer in zip(chunk, views, exists, strict=True):
            with logs.bind(node=view.name):
                if await self._after_exists(node, view, answer):
                    alive.append((node, view))
        if not alive:
            return
        shutdown = await batching.call_batch(
            batch.instance_shutdown_batch,
            [view for _, view in alive],
            self._cloud_timeout,
            "instance_shutdown_batch",
            capability=cloudapi.INSTANCES,
        )
        for (node, view), answer in zip(alive, shutdown, strict=True):
            with logs.bind(node=view.name):
                await self._after_shutdown(node, view, answer)

    async def _after_exists(
        self, node: Mapping[str, Any], view: Node, answer: bool | BaseException
    ) -> bool:
        """Act on one Node's ``instance_exists_batch`` answer; True when it exists."""
        if isinstance(answer, BaseException):
            _log.error(
                "error checking if node %s exists: %s",
                view.name,
                rules.reason(answer),
                extra=logs.err(answer),
            )
            return False
        if answer:
            return True
        try:
            if not self._malformed_provider_id(node):
                await self._delete_node(node)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("unexpected error monitoring node %s", view.name)
        return False

    async def _after_shutdown(
        self, node: Mapping[str, Any], view: Node, answer: bool | BaseException
    ) -> None:
        """Act on one Node's ``instance_shutdown_batch`` answer."""
        if isinstance(answer, BaseException):
            _log.error(
                "error checking if node %s is shutdown: %s",
                view.name,
                rules.reason(answer),
                extra=logs.err(answer),
            )
            return
        try:
            await self._set_shutdown_taint(node, bool(answer))
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("unexpected error monitoring node %s", view.name)

    async def _set_shutdown_taint(self, node: Mapping[str, Any], shutdown: bool) -> None:
        """Add the shutdown taint to a NotReady Node whose instance is shut down; remove it from
        one whose instance exists and runs again, without waiting for Ready. Errors are logged."""
        name = Node(node).name
        if not shutdown:
            if not rules.has_shutdown_taint(node):
                return  # the common case: no API call
            try:
                await self._update_taints(node, rules.without_shutdown_taint)
            except (CCMError, TimeoutError) as exc:
                _log.error("error patching node taints: %s", exc, extra=logs.err(exc))
            return
        try:
            await self._update_taints(node, rules.with_shutdown_taint)
        except (CCMError, TimeoutError) as exc:
            _log.error(
                "failed to apply shutdown taint to node %s, it may have been deleted. (%s)",
                name,
                exc,
                extra=logs.err(exc),
            )

    # --- cloud ----------------------------------------------------------------------------------

    async def _instance_exists(self, node: Node) -> bool:
        return await cloud.instance_exists(self._cloud, node, call_timeout=self._cloud_timeout)

    async def _instance_shutdown(self, node: Node) -> bool:
        return await cloud.instance_shutdown(self._cloud, node, call_timeout=self._cloud_timeout)

    # --- Kubernetes -----------------------------------------------------------------------------

    def _malformed_provider_id(self, node: Mapping[str, Any]) -> bool:
        """True (after reporting it) when the Node's non-empty providerID is malformed."""
        view = Node(node)
        provider_id = view.provider_id
        if not provider_id:
            return False
        try:
            split_provider_id(provider_id)
        except ValueError as exc:
            key = (view.uid, provider_id)
            message = (
                f"Not deleting node {view.name}: the cloud provider reports no instance for it, "
                f"but its providerID is malformed: {exc}"
            )
            if key in self._reported_bad_ids:
                _log.log(logs.v(2), "%s", message)
            else:
                self._reported_bad_ids.add(key)
                _log.error("%s", message)
                self._recorder.event(
                    node,
                    wellknown.EVENT_WARNING,
                    wellknown.EVENT_REASON_INVALID_PROVIDER_ID,
                    message,
                )
            return True
        return False

    async def _delete_node(self, cached: Mapping[str, Any]) -> None:
        """Delete the Node the cloud reports gone, unless it changed since the sweep read it.

        The cloud's answer may have taken seconds, during which the kubelet may have reported
        Ready: the Node is read afresh from the apiserver (not the cache) and deleted only when it
        is still the same Node (UID, providerID) and still not Ready, with preconditions on its UID
        and resourceVersion so that any change after that read makes the DELETE fail. A Node that
        changed is left for the next sweep to decide, without a retry here.
        """
        name = Node(cached).name
        try:
            current = await self._client.get(kclient.NODES, name)
        except NotFoundError:
            _log.info("node %s was already deleted", name)
            return
        except CCMError as exc:
            _log.error(
                "not deleting node %s: unable to read it again: %s", name, exc, extra=logs.err(exc)
            )
            return
        changed = rules.changed_since(cached, current)
        if changed:
            _log.info(
                "not deleting node %r although the cloud provider reports no instance: %s; "
                "deciding again on the next sweep",
                name,
                changed,
            )
            return
        view = Node(current)
        _log.log(
            logs.v(2), "deleting node since it is no longer present in cloud provider: %s", name
        )
        self._recorder.event(
            current,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_DELETING_NODE,
            f"Deleting node {name} because it does not exist in the cloud provider",
        )
        preconditions: dict[str, str] = {}
        if view.uid:
            preconditions["uid"] = view.uid
        rv = (current.get("metadata") or {}).get("resourceVersion")
        if rv:
            preconditions["resourceVersion"] = str(rv)
        try:
            await self._client.delete(kclient.NODES, name, preconditions=preconditions or None)
        except NotFoundError:
            _log.info("node %s was already deleted", name)
        except ConflictError as exc:
            _log.info(
                "not deleting node %r: it changed meanwhile, deciding again on the next sweep (%s)",
                name,
                exc,
            )
        except CCMError as exc:
            _log.error("unable to delete node %r: %s", name, exc, extra=logs.err(exc))
            self._recorder.event(
                current,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_DELETING_NODE_FAILED,
                f"Failed deleting node {name}: {exc}",
            )

    async def _update_taints(
        self,
        cached: Mapping[str, Any],
        change: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None],
    ) -> None:
        """Write ``change(node)`` as the Node's taints, guarded by its resourceVersion; starts from
        the cached Node (no API call when it needs no change) and re-reads it after a conflict."""
        name = str(cached["metadata"]["name"])
        current: Mapping[str, Any] = cached

        async def write() -> None:
            taints = change(current)
            if taints is None:
                return
            body = {
                "metadata": {"resourceVersion": current["metadata"].get("resourceVersion")},
                "spec": {"taints": taints or None},
            }
            await self._client.patch(kclient.NODES, name, body, patch_type="strategic")

        async def reread() -> None:
            nonlocal current
            current = await self._client.get(kclient.NODES, name)

        try:
            await failures.retry_on_conflict(
                write,
                attempts=_TAINT_ATTEMPTS,
                backoff=lambda _attempt: _TAINT_BACKOFF,
                reread=reread,
                what=f"the taints of node {name}",
            )
        except NotFoundError:
            return
