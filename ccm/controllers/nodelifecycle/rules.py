"""The pure rules of the node lifecycle controller: a Node's Ready status, the shutdown taint and
the taint lists with and without it, and whether a Node changed too much since the sweep read it
to be deleted on the cloud's answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccm import wellknown
from ccm.cloudprovider import Node
from ccm.controllers import nodeutil
from ccm.errors import CloudCallTimeoutError

__all__ = [
    "SHUTDOWN_TAINT",
    "changed_since",
    "has_shutdown_taint",
    "ready_status",
    "reason",
    "with_shutdown_taint",
    "without_shutdown_taint",
]

#: The taint of a Node whose instance is shut down (upstream ``ShutdownTaint``).
SHUTDOWN_TAINT: Mapping[str, str] = {
    "key": wellknown.TAINT_SHUTDOWN,
    "effect": wellknown.TAINT_EFFECT_NO_SCHEDULE,
}


def ready_status(node: Mapping[str, Any]) -> str:
    """The status of the Node's Ready condition; ``Unknown`` when it has none."""
    cond = nodeutil.node_condition(node, wellknown.CONDITION_READY)
    if cond is None:
        return "Unknown"
    return str(cond.get("status") or "Unknown")


def has_shutdown_taint(node: Mapping[str, Any]) -> bool:
    return any(is_shutdown_taint(t) for t in (node.get("spec") or {}).get("taints") or ())


def with_shutdown_taint(node: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The Node's taints plus the shutdown taint, or None when it already has it or is Ready (the
    cloud's "shut down" answer may predate the kubelet's Ready report)."""
    if has_shutdown_taint(node) or ready_status(node) == "True":
        return None
    taints = [dict(t) for t in (node.get("spec") or {}).get("taints") or ()]
    taints.append(dict(SHUTDOWN_TAINT))
    return taints


def is_shutdown_taint(taint: Mapping[str, Any]) -> bool:
    """Upstream ``MatchTaint``: same key and effect."""
    return bool(
        taint.get("key") == SHUTDOWN_TAINT["key"]
        and taint.get("effect") == SHUTDOWN_TAINT["effect"]
    )


def without_shutdown_taint(node: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The Node's taints without the shutdown taint, or None when it has none."""
    if not has_shutdown_taint(node):
        return None
    return [
        dict(t) for t in (node.get("spec") or {}).get("taints") or () if not is_shutdown_taint(t)
    ]


def changed_since(cached: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """Why the apiserver's ``current`` Node must not be deleted on an answer about ``cached``
    (empty when nothing relevant changed)."""
    before, now = Node(cached), Node(current)
    if before.uid and now.uid != before.uid:
        return "it was replaced meanwhile by a Node with another UID"
    if now.provider_id != before.provider_id:
        return f"its providerID changed meanwhile to {now.provider_id!r}"
    if ready_status(current) == "True":
        return "it turned Ready meanwhile"
    return ""


def reason(exc: BaseException) -> str:
    if isinstance(exc, CloudCallTimeoutError):
        return f"timed out waiting for the cloud provider: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the cloud provider"
    return str(exc) or type(exc).__name__
