"""The pure decisions of the route controller: which action a Node's pod CIDR needs given the
cloud's routes (upstream ``getRouteAction``, ``equalNodeAddrs``), how pod CIDRs are read and
compared, and when a Node change triggers a pass in the watch-based mode (KEP-5237)."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ccm import wellknown
from ccm.cloudprovider import NodeAddress, Route
from ccm.kube import workqueue

__all__ = [
    "MAX_CONCURRENT_ROUTE_OPERATIONS",
    "MIN_ROUTE_RESYNC_INTERVAL",
    "ROUTES_KEY",
    "WATCH_BASED_FEATURE_GATE",
    "IPNetwork",
    "RouteAction",
    "equal_node_addresses",
    "route_action",
    "watch_based_enabled",
]

_log = logging.getLogger("ccm.controllers.route")

#: Upstream ``maxConcurrentRouteOperations``: create+delete cloud calls in flight per reconcile.
MAX_CONCURRENT_ROUTE_OPERATIONS = 200

#: KEP-5237: the feature gate of the watch-based mode, its single queue key, and the least time
#: between two reconciles in that mode (a token bucket of 1 per 10 s, waits capped at 10 s).
WATCH_BASED_FEATURE_GATE = wellknown.FEATURE_GATE_WATCH_BASED_ROUTES
ROUTES_KEY = "routes"
MIN_ROUTE_RESYNC_INTERVAL = 10.0

RouteAction = Literal["keep", "add", "remove", "update"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def cidr_key(cidr: str) -> str:
    """The canonical spelling of ``cidr`` when it parses, else ``cidr`` itself."""
    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        return cidr


def check_pod_cidr(cidr: str) -> str | None:
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
    key = cidr_key(cidr)
    for route in routes:
        if cidr_key(route.destination_cidr) == key:
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
class RouteNode:
    """Upstream ``routeNode``: a target Node's listed routes and the action per pod CIDR."""

    routes: list[Route] = dataclasses.field(default_factory=list)
    actions: dict[str, RouteAction] = dataclasses.field(default_factory=dict)


def pod_cidrs(node: Mapping[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    out: list[str] = []
    for c in cidrs:
        if isinstance(c, str) and c not in out:
            out.append(c)
    return out


def node_name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", ""))


def watch_based_enabled(feature_gates: str) -> bool:
    """Whether ``--feature-gates`` (``Name=true,Other=false``) enables the KEP-5237 mode."""
    for item in feature_gates.split(","):
        name, _, value = item.partition("=")
        if name.strip() == WATCH_BASED_FEATURE_GATE:
            return value.strip().lower() == "true"
    return False


class MaxWaitRateLimiter:
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


def routing_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Upstream ``handleNodeUpdate``: pod CIDRs or addresses changed, or an informer resync."""
    if (old.get("metadata") or {}).get("resourceVersion") == (new.get("metadata") or {}).get(
        "resourceVersion"
    ):
        return True
    if (old.get("spec") or {}).get("podCIDRs") != (new.get("spec") or {}).get("podCIDRs"):
        return True
    return (old.get("status") or {}).get("addresses") != (new.get("status") or {}).get("addresses")
