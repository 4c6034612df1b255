"""The route controller (``node-route-controller``): one cloud route per Node pod CIDR, and the
Node condition ``NetworkUnavailable`` telling whether the routes exist.

Ports ``controllers/route/route_controller.go`` of k8s.io/cloud-provider (UPSTREAM_SPEC §2.3):
:mod:`.controller` (the loop, the pass, the cloud calls), :mod:`.plan` (the pure decisions) and
:mod:`.condition` (the ``NetworkUnavailable`` write).
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

from ccm.controllers.route.controller import KubeWriter, Recorder, RouteController
from ccm.controllers.route.plan import (
    MAX_CONCURRENT_ROUTE_OPERATIONS,
    MIN_ROUTE_RESYNC_INTERVAL,
    ROUTES_KEY,
    WATCH_BASED_FEATURE_GATE,
    RouteAction,
    equal_node_addresses,
    route_action,
    watch_based_enabled,
)

__all__ = [
    "MAX_CONCURRENT_ROUTE_OPERATIONS",
    "MIN_ROUTE_RESYNC_INTERVAL",
    "ROUTES_KEY",
    "WATCH_BASED_FEATURE_GATE",
    "KubeWriter",
    "Recorder",
    "RouteAction",
    "RouteController",
    "equal_node_addresses",
    "route_action",
    "watch_based_enabled",
]
