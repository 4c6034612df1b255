"""The route controller (``node-route-controller``): one cloud route per Node pod CIDR, and the
Node condition ``NetworkUnavailable`` telling whether the routes exist.

Ports ``controllers/route/route_controller.go`` of k8s.io/cloud-provider (UPSTREAM_SPEC §2.3).
Every ``--route-reconciliation-period`` (fixed rate) the whole cluster is reconciled: the cloud's
routes are listed, the Nodes come from the shared informer cache, and per Node per pod CIDR the
action is ``keep``, ``update`` (the provider opted in to address tracking and the addresses
differ) or ``add``. Routes inside the cluster CIDRs that are blackholed, stale, or need an update
are deleted; missing ones are created (name hint = Node UID). Routes outside the cluster CIDRs are
never touched. Create and delete calls share one bound of 200 calls in flight, kept by as many
workers over one list of jobs (:func:`ccm.controllers.base.run_bounded`, not a task per route); the
``NetworkUnavailable`` writes that follow are bounded the same way.

With the feature gate ``CloudControllerManagerWatchBasedRoutesReconciliation`` (KEP-5237) the pass
runs instead when a Node is added or deleted, or its pod CIDRs or addresses change (one queue key
``routes``, a token bucket of one pass per 10 s, waits capped at 10 s); ccm also runs one pass at
start, so stale routes are cleaned even in a cluster without Nodes.

Deliberate differences from upstream:
- every cloud call is bounded by ``cloud_timeout`` (a hung call becomes a failure of that call);
- a pod CIDR that does not parse as a canonical network (``10.244.1.5/24``, ``10.244.01.0/24``,
  garbage) is never sent to the cloud: the Node gets a Warning ``FailedToCreateRoute`` event, a log
  line, and ``NetworkUnavailable=True/NoRouteCreated``; the other Nodes are reconciled as usual;
- so is a pod CIDR outside the cluster CIDRs (``10.99.0.0/24`` in a ``10.244.0.0/16`` cluster, an
  IPv6 CIDR in an IPv4-only cluster): upstream creates its route and, since routes outside the
  cluster CIDRs are not its own, never deletes it again, so every such route leaked;
- CIDRs are compared as networks, not strings (``a00:100::/24`` equals ``0a00:0100::/24``), so a
  provider that spells CIDRs differently does not cause delete/create churn;
- a Node listing the same pod CIDR twice gets one create call, not two racing ones;
- the ``NetworkUnavailable`` condition is written as a strategic merge patch of ``nodes/status``
  (as upstream ``SetNodeCondition``); a Node deleted meanwhile is skipped quietly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from ccm import clock, logs, metrics, names, wellknown
from ccm.cloudprovider import NodeAddress, Route, Routes
from ccm.controllers import base, cloudapi, failures, nodeutil
from ccm.controllers.base import PeriodicLoop
from ccm.errors import NotFoundError
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube import workqueue

__all__ = [
    "MAX_CONCURRENT_ROUTE_OPERATIONS",
    "MIN_ROUTE_RESYNC_INTERVAL",
    "ROUTES_KEY",
    "WATCH_BASED_FEATURE_GATE",
    "RouteAction",
    "RouteController",
    "equal_node_addresses",
    "route_action",
    "watch_based_enabled",
]

_log = logging.getLogger("ccm.controllers.route")

#: Upstream ``maxConcurrentRouteOperations``: create+delete cloud calls in flight per reconcile.
MAX_CONCURRENT_ROUTE_OPERATIONS = 200
#: Upstream ``updateNetworkConditionBackoff``: 5 attempts, 100 ms, jitter 1.0.
_CONDITION_RETRIES = 5
_CONDITION_BACKOFF = 0.1

#: KEP-5237: the feature gate of the watch-based mode, its single queue key, and the least time
#: between two reconciles in that mode (a token bucket of 1 per 10 s, waits capped at 10 s).
WATCH_BASED_FEATURE_GATE = "CloudControllerManagerWatchBasedRoutesReconciliation"
ROUTES_KEY = "routes"
MIN_ROUTE_RESYNC_INTERVAL = 10.0

RouteAction = Literal["keep", "add", "remove", "update"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class KubeWriter(base.KubePatcher, Protocol):
    """The slice of ``ccm.kube.client.KubeClient`` this controller uses."""


Recorder = base.Recorder


def _cidr_key(cidr: str) -> str:
    """The canonical spelling of ``cidr`` when it parses, else ``cidr`` itself."""
    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        return cidr


def _check_pod_cidr(cidr: str) -> str | None:
    """None when ``cidr`` is a canonical network, else why it is not."""
    try:
        ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return str(exc)
    return None


def equal_node_addresses(a: Sequence[NodeAddress], b: Sequence[NodeAddress]) -> bool:
    """Upstream ``equalNodeAddrs``: same length and every address of ``a`` is in ``b``."""
    if len(a) != len(b):
        return False
    return all(addr in b for addr in a)


def route_action(
    routes: Iterable[Route], cidr: str, node_addresses: Sequence[NodeAddress]
) -> RouteAction:
    """Upstream ``getRouteAction``: what to do for ``cidr`` given the Node's listed routes."""
    key = _cidr_key(cidr)
    for route in routes:
        if _cidr_key(route.destination_cidr) == key:
            if not route.enable_node_addresses or equal_node_addresses(
                node_addresses, route.target_node_addresses
            ):
                return "keep"
            _log.info(
                "Node addresses have changed from %s to %s",
                list(route.target_node_addresses),
                list(node_addresses),
            )
            return "update"
    return "add"


@dataclasses.dataclass(slots=True)
class _RouteNode:
    """Upstream ``routeNode``: a target Node's listed routes and the action per pod CIDR."""

    routes: list[Route] = dataclasses.field(default_factory=list)
    actions: dict[str, RouteAction] = dataclasses.field(default_factory=dict)


def _pod_cidrs(node: Mapping[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    out: list[str] = []
    for c in cidrs:
        if isinstance(c, str) and c not in out:
            out.append(c)
    return out


def _name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", ""))


def watch_based_enabled(feature_gates: str) -> bool:
    """Whether ``--feature-gates`` (``Name=true,Other=false``) enables the KEP-5237 mode."""
    for item in feature_gates.split(","):
        name, _, value = item.partition("=")
        if name.strip() == WATCH_BASED_FEATURE_GATE:
            return value.strip().lower() == "true"
    return False


class _MaxWaitRateLimiter:
    """client-go ``WithMaxWaitRateLimiter``: the inner limiter's delay, capped at ``max_wait``."""

    def __init__(self, inner: workqueue.RateLimiter, max_wait: float) -> None:
        self._inner = inner
        self._max_wait = max_wait

    def when(self, item: Any) -> float:
        return min(self._inner.when(item), self._max_wait)

    def forget(self, item: Any) -> None:
        self._inner.forget(item)

    def num_requeues(self, item: Any) -> int:
        return self._inner.num_requeues(item)


def _routing_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Upstream ``handleNodeUpdate``: pod CIDRs or addresses changed, or an informer resync."""
    if (old.get("metadata") or {}).get("resourceVersion") == (new.get("metadata") or {}).get(
        "resourceVersion"
    ):
        return True
    if (old.get("spec") or {}).get("podCIDRs") != (new.get("spec") or {}).get("podCIDRs"):
        return True
    return (old.get("status") or {}).get("addresses") != (new.get("status") or {}).get("addresses")


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
        cluster_cidrs: Sequence[IPNetwork],
        period: float = 10.0,
        cloud_timeout: float = 60.0,
        max_concurrent_operations: int = MAX_CONCURRENT_ROUTE_OPERATIONS,
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
                rate_limiter=_MaxWaitRateLimiter(
                    workqueue.BucketRateLimiter(qps=1 / MIN_ROUTE_RESYNC_INTERVAL, burst=1),
                    MIN_ROUTE_RESYNC_INTERVAL,
                ),
            )
            nodes.add_handler(
                on_add=self._enqueue,
                on_update=self.handle_node_update,
                on_delete=self._enqueue,
            )

    def _enqueue(self, _obj: Mapping[str, Any] | None = None) -> None:
        if self.queue is not None:
            self.queue.add_rate_limited(ROUTES_KEY)

    def handle_node_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """Watch-based mode: reconcile when a Node update can change the routes."""
        if _routing_changed(old, new):
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
                        WATCH_BASED_FEATURE_GATE,
                        MIN_ROUTE_RESYNC_INTERVAL,
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
        queue.add(ROUTES_KEY)  # a first pass even when there is no Node to trigger one
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
            failed, controller="route", key=ROUTES_KEY, recorder=self._recorder, logger=_log
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
        nodes = sorted(self._nodes.list(), key=_name)
        await self.reconcile(nodes, list(routes))

    def _outside_cluster_cidrs(self, cidr: str) -> str | None:
        """None when a route for the (canonical) pod CIDR ``cidr`` would be one this controller is
        responsible for, else why not: a route it creates must be one it can also delete."""
        if self._in_cluster_cidrs(ipaddress.ip_network(cidr)):
            return None
        return "outside the cluster CIDRs " + ",".join(str(c) for c in self._cluster_cidrs)

    def _in_cluster_cidrs(self, net: IPNetwork) -> bool:
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
        route_map: dict[str, _RouteNode] = {}
        for route in routes:
            if not route.target_node:
                continue
            route_map.setdefault(route.target_node, _RouteNode()).routes.append(route)

        invalid: dict[str, dict[str, str]] = {}  # node → pod CIDR → why it is malformed
        for node in nodes:
            cidrs = _pod_cidrs(node)
            if not cidrs:
                continue
            name = _name(node)
            entry = route_map.setdefault(name, _RouteNode())
            addrs = nodeutil.node_addresses(node)
            for cidr in cidrs:
                problem = _check_pod_cidr(cidr) or self._outside_cluster_cidrs(cidr)
                if problem is not None:
                    invalid.setdefault(name, {})[cidr] = problem
                    entry.actions[cidr] = "add"  # never satisfied: NetworkUnavailable stays True
                    continue
                action = route_action(entry.routes, cidr, addrs)
                entry.actions[_cidr_key(cidr)] = action
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
            action = entry.actions.get(_cidr_key(route.destination_cidr))
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
        to_create: list[tuple[Mapping[str, Any], str, _RouteNode, str]] = []
        for node in nodes:
            name = _name(node)
            for cidr, problem in (invalid.get(name) or {}).items():
                self._report_invalid(node, cidr, problem)
            for cidr in _pod_cidrs(node):
                if cidr in (invalid.get(name) or {}):
                    continue
                key = _cidr_key(cidr)
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
            target = route_map.get(_name(node))
            if target is None:
                continue
            if not target.actions:
                _log.info(
                    "node %s has no routes assigned to it. NodeNetworkUnavailable will be "
                    "set to true",
                    _name(node),
                )
                created = False
            else:
                created = all(a not in ("add", "update") for a in target.actions.values())
            conditions.append(functools.partial(self.update_networking_condition, node, created))
        await base.run_bounded(conditions, self._max_ops, "route/condition")

    def _report_invalid(self, node: Mapping[str, Any], cidr: str, problem: str) -> None:
        name = _name(node)
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
        entry: _RouteNode,
        key: str,
        start: float,
    ) -> None:
        """Create one route; ``start`` is when the pass queued it (the wait for a free slot of
        the bound is logged as "throttled", as upstream)."""
        with logs.bind(node=_name(node)):
            await self._create_one(node, cidr, entry, key, start)

    async def _create_one(
        self,
        node: Mapping[str, Any],
        cidr: str,
        entry: _RouteNode,
        key: str,
        start: float,
    ) -> None:
        name = _name(node)
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
        with logs.bind(node=_name(node)):
            await self._update_condition(node, routes_created)

    async def _update_condition(self, node: Mapping[str, Any], routes_created: bool) -> None:
        name = _name(node)
        current = nodeutil.node_condition(node, wellknown.CONDITION_NETWORK_UNAVAILABLE)
        if routes_created:
            status, reason, message = (
                "False",
                wellknown.ROUTE_CONDITION_REASON_CREATED,
                wellknown.ROUTE_CONDITION_MESSAGE_CREATED,
            )
        else:
            status, reason, message = (
                "True",
                wellknown.ROUTE_CONDITION_REASON_NOT_CREATED,
                wellknown.ROUTE_CONDITION_MESSAGE_NOT_CREATED,
            )
        if (
            current is not None
            and current.get("status") == status
            and current.get("reason") == reason
        ):
            _log.log(
                logs.v(2),
                "set node %s with NodeNetworkUnavailable=%s was canceled because it is already set",
                name,
                status.lower(),
            )
            return
        _log.info(
            "Patching node status %s with %s previous condition was: %s",
            name,
            routes_created,
            dict(current) if current is not None else None,
        )

        async def write() -> None:
            now = clock.now_rfc3339()
            condition = {
                "type": wellknown.CONDITION_NETWORK_UNAVAILABLE,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }
            await self._client.patch(
                kclient.NODES,
                name,
                {"status": {"conditions": [condition]}},
                subresource="status",
                patch_type="strategic",
            )

        try:
            await failures.retry_on_conflict(
                write,
                attempts=_CONDITION_RETRIES,
                backoff=lambda _attempt: _CONDITION_BACKOFF * (1 + random.random()),
                what=f"node {name}",
            )
        except NotFoundError:
            _log.info("Node %s is gone, not updating its network condition", name)
        except Exception as exc:
            _log.error("Error updating node %s: %s", name, exc, extra=logs.err(exc))
