"""Pure helpers of the service load-balancer controller: which Services it owns, when a change
needs a new sync, which Nodes are load-balancer backends, and the finalizer/status patches.

Ports the predicates of ``controllers/service/controller.go`` (``wantsLoadBalancer``,
``needsCleanup``, ``needsUpdate``, the node predicates, ``shouldSyncUpdatedNode``,
``nodesSufficientlyEqual``) and ``service/helpers/helper.go`` (``HasLBFinalizer``,
``LoadBalancerStatusEqual``) of k8s.io/cloud-provider (UPSTREAM_SPEC §2.4). Everything here works on
plain dicts (informer objects) or on the read-only views, and never mutates its arguments.

The patches are strategic merge patches of the ``services/status`` subresource, as upstream's
``PatchService``: ``metadata.finalizers`` has merge semantics there, so adding our finalizer is a
set union and removing it is ``$deleteFromPrimitiveList`` — neither can drop another controller's
finalizer, and neither needs a resourceVersion precondition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccm import wellknown
from ccm.cloudprovider.strconv import parse_bool

__all__ = [
    "add_finalizer_patch",
    "has_lb_finalizer",
    "is_served",
    "load_balancer_status_equal",
    "loggable_node_names",
    "needs_cleanup",
    "needs_update",
    "node_included",
    "node_not_deleted",
    "node_untainted",
    "nodes_sufficiently_equal",
    "remove_finalizer_patch",
    "service_key",
    "should_delete_load_balancer",
    "should_sync_updated_node",
    "split_key",
    "stable_node_set",
    "status_patch",
    "wants_load_balancer",
    "wants_node_sync",
]

#: Upstream ``maxNodeNamesToLog``.
MAX_NODE_NAMES_TO_LOG = 20

_EMPTY: Mapping[str, Any] = {}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or _EMPTY


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or _EMPTY


def service_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a Service (upstream ``MetaNamespaceKeyFunc``)."""
    meta = _meta(obj)
    ns = meta.get("namespace") or ""
    name = meta.get("name") or ""
    return f"{ns}/{name}" if ns else str(name)


def split_key(key: str) -> tuple[str, str]:
    """Split ``namespace/name``; raise ValueError with upstream's message when malformed."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    raise ValueError(f'unexpected key format: "{key}"')


# -- which Services ------------------------------------------------------------------------------


def wants_load_balancer(svc: Mapping[str, Any]) -> bool:
    """``type: LoadBalancer`` and no ``loadBalancerClass`` (any class, even "", is not ours)."""
    spec = _spec(svc)
    return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") is None


def has_lb_finalizer(svc: Mapping[str, Any]) -> bool:
    return wellknown.FINALIZER_LOAD_BALANCER_CLEANUP in (_meta(svc).get("finalizers") or ())


def needs_cleanup(svc: Mapping[str, Any]) -> bool:
    """Our finalizer is set and the Service is being deleted or is no longer ``LoadBalancer``."""
    if not has_lb_finalizer(svc):
        return False
    if _meta(svc).get("deletionTimestamp"):
        return True
    return _spec(svc).get("type") != "LoadBalancer"


def should_delete_load_balancer(svc: Mapping[str, Any]) -> bool:
    """Whether a sync of this Service takes the delete branch: it no longer wants a load balancer,
    waits for the cleanup of one, or is being deleted (upstream ``syncLoadBalancerIfNeeded``;
    ccm also deletes for a Service being deleted without our finalizer)."""
    return (
        not wants_load_balancer(svc)
        or needs_cleanup(svc)
        or bool(_meta(svc).get("deletionTimestamp"))
    )


def wants_node_sync(svc: Mapping[str, Any]) -> bool:
    """Whether a node sync may update this Service's load balancer: it wants one and is neither
    being deleted nor waiting for the cleanup of one (those belong to the delete path)."""
    return not should_delete_load_balancer(svc)


def is_served(svc: Mapping[str, Any]) -> bool:
    """Whether a Service wanting a load balancer shows one already (a sync of it is a resync)."""
    ingress = ((svc.get("status") or _EMPTY).get("loadBalancer") or _EMPTY).get("ingress")
    return bool(ingress) and wants_node_sync(svc)


def _port_equal(x: Mapping[str, Any], y: Mapping[str, Any]) -> bool:
    for field in ("name", "protocol", "port", "nodePort", "targetPort", "appProtocol"):
        if x.get(field) != y.get(field):
            return False
    return True


def _ports_equal(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    xs = list(_spec(old).get("ports") or ())
    ys = list(_spec(new).get("ports") or ())
    return len(xs) == len(ys) and all(_port_equal(x, y) for x, y in zip(xs, ys, strict=True))


def _empty_none(value: Any) -> Any:
    """Go's reflect.DeepEqual on optional fields: a missing value and ``null`` are the same."""
    return None if value in (None, {}, []) else value


def needs_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a Service update needs a load-balancer sync (upstream ``needsUpdate``)."""
    old_wants, new_wants = wants_load_balancer(old), wants_load_balancer(new)
    if not old_wants and not new_wants:
        return False
    if old_wants != new_wants:
        return True
    os_, ns_ = _spec(old), _spec(new)
    if new_wants and _empty_none(os_.get("loadBalancerSourceRanges")) != _empty_none(
        ns_.get("loadBalancerSourceRanges")
    ):
        return True
    if not _ports_equal(old, new) or os_.get("sessionAffinity") != ns_.get("sessionAffinity"):
        return True
    if _empty_none(os_.get("sessionAffinityConfig")) != _empty_none(
        ns_.get("sessionAffinityConfig")
    ):
        return True
    if (os_.get("loadBalancerIP") or "") != (ns_.get("loadBalancerIP") or ""):
        return True
    if list(os_.get("externalIPs") or ()) != list(ns_.get("externalIPs") or ()):
        return True
    if _empty_none(_meta(old).get("annotations")) != _empty_none(_meta(new).get("annotations")):
        return True
    if _meta(old).get("uid") != _meta(new).get("uid"):
        return True
    if (os_.get("externalTrafficPolicy") or "") != (ns_.get("externalTrafficPolicy") or ""):
        return True
    if (os_.get("healthCheckNodePort") or 0) != (ns_.get("healthCheckNodePort") or 0):
        return True
    return len(os_.get("ipFamilies") or ()) != len(ns_.get("ipFamilies") or ())


# -- which Nodes ---------------------------------------------------------------------------------


def node_included(node: Mapping[str, Any]) -> bool:
    """The exclusion label is absent, or parses as false (an unparsable value excludes)."""
    labels = _meta(node).get("labels") or _EMPTY
    if wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB not in labels:
        return True
    try:
        return not parse_bool(str(labels[wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB]))
    except ValueError:
        return False


def node_untainted(node: Mapping[str, Any]) -> bool:
    """No ``ToBeDeletedByClusterAutoscaler`` taint."""
    return not any(
        (t or _EMPTY).get("key") == wellknown.TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER
        for t in _spec(node).get("taints") or ()
    )


def node_not_deleted(node: Mapping[str, Any]) -> bool:
    return not _meta(node).get("deletionTimestamp")


#: Upstream ``stableNodeSetPredicates`` (readiness is deliberately not considered, KEP-3458).
STABLE_NODE_SET_PREDICATES = (node_not_deleted, node_included, node_untainted)


def stable_node_set(nodes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Nodes that are load-balancer backends, sorted by name for stable provider input."""
    chosen = [n for n in nodes if all(p(n) for p in STABLE_NODE_SET_PREDICATES)]
    chosen.sort(key=lambda n: str(_meta(n).get("name") or ""))
    return chosen


def should_sync_updated_node(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A Node update triggers a backend sync only if the exclusion label verdict or the
    providerID changed (taints, readiness and deletion do not: upstream
    ``shouldSyncUpdatedNode``)."""
    if node_included(old) != node_included(new):
        return True
    return (_spec(old).get("providerID") or "") != (_spec(new).get("providerID") or "")


def _distill(nodes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(_meta(n).get("name") or ""): str(_spec(n).get("providerID") or "") for n in nodes}


def nodes_sufficiently_equal(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> bool:
    """Same count and the same name → providerID map (upstream ``nodesSufficientlyEqual``)."""
    return len(old) == len(new) and _distill(old) == _distill(new)


def loggable_node_names(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """At most 20 sorted names, then ``<N more>`` (upstream ``loggableNodeNames``)."""
    if len(nodes) > MAX_NODE_NAMES_TO_LOG:
        skipped = len(nodes) - MAX_NODE_NAMES_TO_LOG
        names = sorted({str(_meta(n).get("name") or "") for n in nodes[:MAX_NODE_NAMES_TO_LOG]})
        return [*names, f"<{skipped} more>"]
    return sorted({str(_meta(n).get("name") or "") for n in nodes})


# -- status and patches --------------------------------------------------------------------------


def _normalize(value: Any) -> Any:
    """apimachinery's Semantic.DeepEqual: empty and missing lists/maps compare equal."""
    if isinstance(value, Mapping):
        return {k: _normalize(v) for k, v in value.items() if _empty_none(v) is not None}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return value


def load_balancer_status_equal(left: Mapping[str, Any], right: Mapping[str, Any]) -> bool:
    """Compare two ``status.loadBalancer`` documents by their ``ingress`` only."""
    same: bool = _normalize(left.get("ingress") or []) == _normalize(right.get("ingress") or [])
    return same


def add_finalizer_patch() -> dict[str, Any]:
    """Strategic merge patch adding our finalizer (a set union with the existing ones)."""
    return {"metadata": {"finalizers": [wellknown.FINALIZER_LOAD_BALANCER_CLEANUP]}}


def remove_finalizer_patch() -> dict[str, Any]:
    """Strategic merge patch removing our finalizer and nothing else."""
    return {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": [wellknown.FINALIZER_LOAD_BALANCER_CLEANUP]
        }
    }


def status_patch(new_status: Mapping[str, Any]) -> dict[str, Any]:
    """Strategic merge patch setting ``status.loadBalancer.ingress`` (an atomic list)."""
    ingress = list(new_status.get("ingress") or ())
    return {"status": {"loadBalancer": {"ingress": ingress or None}}}
