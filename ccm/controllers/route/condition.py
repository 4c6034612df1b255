"""The Node condition ``NetworkUnavailable`` written by the route controller after each pass: a
strategic merge patch of ``nodes/status`` (as upstream ``SetNodeCondition``), retried on conflict
like upstream ``updateNetworkConditionBackoff``; a Node deleted meanwhile is skipped quietly."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from ccm import clock, logs, wellknown
from ccm.controllers import base, failures, nodeutil
from ccm.controllers.route import plan
from ccm.errors import NotFoundError
from ccm.kube import client as kclient

__all__ = ["update_networking_condition"]

_log = logging.getLogger("ccm.controllers.route")

#: Upstream ``updateNetworkConditionBackoff``: 5 attempts, 100 ms, jitter 1.0.
_CONDITION_RETRIES = 5
_CONDITION_BACKOFF = 0.1


async def update_networking_condition(
    client: base.KubePatcher, node: Mapping[str, Any], routes_created: bool
) -> None:
    """Upstream ``updateNetworkingCondition``: set ``NetworkUnavailable`` unless it already has
    the wanted status with the route controller's reason. Errors are logged, not raised."""
    name = plan.node_name(node)
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
    if current is not None and current.get("status") == status and current.get("reason") == reason:
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
        await client.patch(
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
