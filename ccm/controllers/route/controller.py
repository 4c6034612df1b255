"""The route controller itself: its loop (periodic, or one queue key in the watch-based mode),
one reconcile pass over the cloud's routes and the cached Nodes, and the create and delete calls
(see the package docstring for the behaviour)."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ccm import clock, logs, metrics, names, wellknown
from ccm.cloudprovider import Route, Routes
from ccm.controllers import base, cloudapi, failures, nodeutil
from ccm.controllers.base import PeriodicLoop
from ccm.controllers.route import condition, plan
from ccm.kube import informer as kinformer
from ccm.kube import workqueue

__all__ = ["KubeWriter", "RouteController"]

_log = logging.getLogger("ccm.controllers.route")


class KubeWriter(base.KubePatcher, Protocol):
    """The slice of ``ccm.kube.client.KubeClient`` this controller uses."""


Recorder = failures.Recorder


class RouteController:
    """Reconciles cloud routes with the pod CIDRs of all Nodes, periodically."""

    name = names.NODE_ROUTE_CONTROLLER

    def __init__(
        self,
        *,
        client: KubeWriter,
        nodes: kinformer.Informer,
        routes: Routes,
        recorder: Recorder,
        cluster_name: str,
        cluster_cidrs: Sequence[plan.IPNetwork],
        period: float = 10.0,
        cloud_timeout: float = 60.0,
        max_concurrent_operations: int = plan.MAX_CONCURRENT_ROUTE_OPERATIONS,
        watch_based: bool = False,
    ) -> None:
        if not cluster_cidrs:
            raise ValueError("RouteController: must specify at least one cluster CIDR")
        self._client = client
        self._nodes = nodes
        self._routes = routes
        self._recorder = recorder
        self._cluster_name = cluster_name
        self._cluster_cidrs = tuple(cluster_cidrs)
        self._period = period
        self._cloud_timeout = cloud_timeout
        self._max_ops = max(1, max_concurrent_operations)
        self.watch_based = watch_based
        self.queue: workqueue.WorkQueue[str] | None = None
        if watch_based:
            self.queue = workqueue.WorkQueue(
                names.QUEUE_ROUTES,
                rate_limiter=plan.MaxWaitRateLimiter(
                    workqueue.BucketRateLimiter(qps=1 / plan.MIN_ROUTE_RESYNC_INTERVAL, burst=1),
                    plan.MIN_ROUTE_RESYNC_INTERVAL,
                ),
            )
            nodes.add_handler(
                on_add=self._enqueue,
                on_update=self.handle_node_update,
                on_delete=self._enqueue,
            )

    def _enqueue(self, _obj: Mapping[str, Any] | None = None) -> None:
        if self.queue is not None:
            self.queue.add_rate_limited(plan.ROUTES_KEY)

    def handle_node_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """Watch-based mode: reconcile when a Node update can change the routes."""
        if plan.routing_changed(old, new):
            self._enqueue(new)

    async def run(self) -> None:
        """Wait for the Node cache, then reconcile every ``period`` seconds (fixed rate)."""
        with logs.bind(controller=self.name):
            await self._run()

    async def _run(self) -> None:
        _log.info("Starting route controller")
        await self._nodes.wait_for_sync()
        try:
            with base.running(self.name):
                if self.queue is not None:
                    _log.info(
                        "Reconciling routes on Node changes (%s), at most every %gs",
                        plan.WATCH_BASED_FEATURE_GATE,
                        plan.MIN_ROUTE_RESYNC_INTERVAL,
                    )
                    await self._run_worker(self.queue)
                else:
                    await PeriodicLoop(
                        name="route/reconcile",
                        period=self._period,
                        step=self._reconcile_step,
                        sliding=False,
                        logger=_log,
                    ).run()
        finally:
            _log.info("Shutting down route controller")

    async def _run_worker(self, queue: workqueue.WorkQueue[str]) -> None:
        """The single worker of the watch-based mode (the whole cluster is one key). The key is
        forgotten before the pass, as upstream: an event queued during the pass is then
        rate-limited afresh instead of being forgotten with this one."""
        queue.add(plan.ROUTES_KEY)  # a first pass even when there is no Node to trigger one
        await base.WorkQueueLoop(
            name="route",
            queue=queue,
            reconcile=self._reconcile_key,
            logger=_log,
            recorder=self._recorder,
            forget_first=True,
        ).run()

    async def _reconcile_key(self, _key: str) -> None:
        await self.reconcile_node_routes()

    async def _reconcile_step(self) -> None:
        """One period of the periodic mode: the failure switch without a queue (every failure
        waits for the next period)."""
        try:
            await self.reconcile_node_routes()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed: Exception | None = exc
        else:
            failed = None
        failures.settle(
            failed, controller="route", key=plan.ROUTES_KEY, recorder=self._recorder, logger=_log
        )

    async def reconcile_node_routes(self) -> None:
        """One full pass: list the cloud's routes and the cached Nodes, then reconcile."""
        metrics.ROUTE_SYNC_TOTAL.inc()
        try:
            routes = await base.call_cloud(
                self._routes.list_routes(self._cluster_name),
                self._cloud_timeout,
                "list_routes",
                capability=cloudapi.ROUTES,
            )

        except Exception as exc:
            raise failures.with_context(f"error listing routes: {exc}", exc, RuntimeError) from exc
        nodes = sorted(self._nodes.list(), key=plan.node_name)
        await self.reconcile(nodes, list(routes))

    def _outside_cluster_cidrs(self, cidr: str) -> str | None:
        """None when a route for the (canonical) pod CIDR ``cidr`` would be one this controller is
        responsible for, else why not: a route it creates must be one it can also delete."""
        if self._in_cluster_cidrs(ipaddress.ip_network(cidr)):
            return None
        return "outside the cluster CIDRs " + ",".join(str(c) for c in self._cluster_cidrs)

    def _in_cluster_cidrs(self, net: plan.IPNetwork) -> bool:
        first, last = net.network_address, net.broadcast_address
        return any(
            c.version == net.version and (first in c or last in c) for c in self._cluster_cidrs
        )

    def is_responsible_for_route(self, route: Route) -> bool:
        """Upstream ``isResponsibleForRoute``: the route's first or last IP is in a cluster CIDR."""
        try:
            net = ipaddress.ip_network(route.destination_cidr.strip(), strict=False)
        except ValueError as exc:
            _log.error(
                "Ignoring route %s, unparsable CIDR: %s", route.name, exc, extra=logs.err(exc)
            )
            return False
        return self._in_cluster_cidrs(net)

    async def reconcile(self, nodes: Sequence[Mapping[str, Any]], routes: Sequence[Route]) -> None:
        """Upstream ``reconcile``: deletes, creates, then the Node conditions."""
        route_map: dict[str, plan.RouteNode] = {}
        for route in routes:
            if not route.target_node:
                continue
            route_map.setdefault(route.target_node, plan.RouteNode()).routes.append(route)

        invalid: dict[str, dict[str, str]] = {}  # node → pod CIDR → why it is malformed
        for node in nodes:
            cidrs = plan.pod_cidrs(node)
            if not cidrs:
                continue
            name = plan.node_name(node)
            entry = route_map.setdefault(name, plan.RouteNode())
            addrs = nodeutil.node_addresses(node)
            for cidr in cidrs:
                problem = plan.check_pod_cidr(cidr) or self._outside_cluster_cidrs(cidr)
                if problem is not None:
                    invalid.setdefault(name, {})[cidr] = problem
                    entry.actions[cidr] = "add"  # never satisfied: NetworkUnavailable stays True
                    continue
                action = plan.route_action(entry.routes, cidr, addrs)
                entry.actions[plan.cidr_key(cidr)] = action
                _log.log(
                    logs.v(4) if action == "keep" else logging.INFO,
                    'action for Node "%s" with CIDR "%s": "%s"',
                    name,
                    cidr,
                    action,
                )

        def should_delete(route: Route) -> bool:
            entry = route_map.get(route.target_node)
            if entry is None:
                return True
            action = entry.actions.get(plan.cidr_key(route.destination_cidr))
            if action is None or action in ("remove", "update"):
                _log.info(
                    'route should be deleted, spec: exist: %s, action: "%s", Node "%s", CIDR "%s"',
                    action is not None,
                    action or "",
                    route.target_node,
                    route.destination_cidr,
                )
                return True
            return False

        to_delete = [
            r
            for r in routes
            if self.is_responsible_for_route(r) and (r.blackhole or should_delete(r))
        ]
        to_create: list[tuple[Mapping[str, Any], str, plan.RouteNode, str]] = []
        for node in nodes:
            name = plan.node_name(node)
            for cidr, problem in (invalid.get(name) or {}).items():
                self._report_invalid(node, cidr, problem)
            for cidr in plan.pod_cidrs(node):
                if cidr in (invalid.get(name) or {}):
                    continue
                key = plan.cidr_key(cidr)
                if route_map[name].actions.get(key) in ("add", "update"):
                    to_create.append((node, cidr, route_map[name], key))

        def creates(queued: float) -> list[Callable[[], Awaitable[None]]]:
            return [functools.partial(self._create, *args, queued) for args in to_create]

        queued = clock.monotonic()
        deletes = [functools.partial(self._delete, r, queued) for r in to_delete]
        # Create and delete calls share one bound: ``max_ops`` workers over one list, deletes
        # first. kubernetes/kubernetes#98359: with address tracking an ``update`` deletes and
        # re-creates the same CIDR, so there the deletes must all finish before the creates start.
        if routes and routes[0].enable_node_addresses:
            await base.run_bounded(deletes, self._max_ops, "route/delete")
            await base.run_bounded(creates(clock.monotonic()), self._max_ops, "route/create")
        else:
            await base.run_bounded([*deletes, *creates(queued)], self._max_ops, "route/sync")

        conditions: list[Callable[[], Awaitable[None]]] = []
        for node in nodes:
            target = route_map.get(plan.node_name(node))
            if target is None:
                continue
            if not target.actions:
                _log.info(
                    "node %s has no routes assigned to it. NodeNetworkUnavailable will be "
                    "set to true",
                    plan.node_name(node),
                )
                created = False
            else:
                created = all(a not in ("add", "update") for a in target.actions.values())
            conditions.append(functools.partial(self.update_networking_condition, node, created))
        await base.run_bounded(conditions, self._max_ops, "route/condition")

    def _report_invalid(self, node: Mapping[str, Any], cidr: str, problem: str) -> None:
        name = plan.node_name(node)
        uid = str((node.get("metadata") or {}).get("uid", ""))
        msg = f"Could not create route {uid} {cidr} for node {name}: invalid pod CIDR: {problem}"
        _log.warning(
            "Node %s has an invalid pod CIDR %r, no route is created: %s",
            name,
            cidr,
            problem,
            extra={"node": name, "err": problem},
        )
        self._recorder.event(
            node, wellknown.EVENT_WARNING, wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE, msg
        )

    async def _delete(self, route: Route, start: float) -> None:
        """Delete one route; ``start`` is when the pass queued it (for the logged durations)."""
        with logs.bind(node=route.target_node, route=route.name):
            await self._delete_one(route, start)

    async def _delete_one(self, route: Route, start: float) -> None:
        _log.info("Deleting route %s %s", route.name, route.destination_cidr)
        try:
            await base.call_cloud(
                self._routes.delete_route(self._cluster_name, route),
                self._cloud_timeout,
                "delete_route",
                capability=cloudapi.ROUTES,
            )
        except Exception as exc:
            _log.error(
                "Could not delete route %s %s after %.3fs: %s",
                route.name,
                route.destination_cidr,
                clock.monotonic() - start,
                exc or type(exc).__name__,
                extra=logs.err(exc),
            )
            return
        _log.info(
            "Deleted route %s %s after %.3fs",
            route.name,
            route.destination_cidr,
            clock.monotonic() - start,
        )

    async def _create(
        self,
        node: Mapping[str, Any],
        cidr: str,
        entry: plan.RouteNode,
        key: str,
        start: float,
    ) -> None:
        """Create one route; ``start`` is when the pass queued it (the wait for a free slot of
        the bound is logged as "throttled", as upstream)."""
        with logs.bind(node=plan.node_name(node)):
            await self._create_one(node, cidr, entry, key, start)

    async def _create_one(
        self,
        node: Mapping[str, Any],
        cidr: str,
        entry: plan.RouteNode,
        key: str,
        start: float,
    ) -> None:
        name = plan.node_name(node)
        hint = str((node.get("metadata") or {}).get("uid", ""))
        route = Route(
            target_node=name,
            target_node_addresses=tuple(nodeutil.node_addresses(node)),
            destination_cidr=cidr,
        )
        _log.info(
            "Creating route for node %s %s with hint %s, throttled %.3fs",
            name,
            cidr,
            hint,
            clock.monotonic() - start,
        )
        try:
            await base.call_cloud(
                self._routes.create_route(self._cluster_name, hint, route),
                self._cloud_timeout,
                "create_route",
                capability=cloudapi.ROUTES,
            )
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            msg = (
                f"Could not create route {hint} {cidr} for node {name} after "
                f"{clock.monotonic() - start:.3f}s: {reason}"
            )
            self._recorder.event(
                node,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_FAILED_TO_CREATE_ROUTE,
                msg,
            )
            _log.error(
                "Could not create route %s %s for node %s: %s",
                hint,
                cidr,
                name,
                reason,
                extra=logs.err(exc),
            )
            return
        entry.actions[key] = "keep"
        _log.info(
            "Created route for node %s %s with hint %s after %.3fs",
            name,
            cidr,
            hint,
            clock.monotonic() - start,
        )

    async def update_networking_condition(
        self, node: Mapping[str, Any], routes_created: bool
    ) -> None:
        """Upstream ``updateNetworkingCondition``: set ``NetworkUnavailable`` unless it already has
        the wanted status with the route controller's reason. Errors are logged, not raised."""
        with logs.bind(node=plan.node_name(node)):
            await condition.update_networking_condition(self._client, node, routes_created)
