"""Controller names, their permanent aliases, client (service-account) names and event sources.

Ports ``names/controller_names.go`` and the client names of ``app/controllermanager.go``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CLOUD_NODE_CONTROLLER: Final = "cloud-node-controller"
CLOUD_NODE_LIFECYCLE_CONTROLLER: Final = "cloud-node-lifecycle-controller"
SERVICE_LB_CONTROLLER: Final = "service-lb-controller"
NODE_ROUTE_CONTROLLER: Final = "node-route-controller"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerName:
    """Every name one controller goes by upstream."""

    name: str  # canonical, accepted by --controllers
    alias: str  # permanent alias, accepted by --controllers
    client_name: str  # user agent / service account with --use-service-account-credentials
    event_source: str  # the ``source.component`` of the events it records
    metric_name: str  # the ``name`` label of running_managed_controllers


CONTROLLERS: Final[tuple[ControllerName, ...]] = (
    ControllerName(
        name=CLOUD_NODE_CONTROLLER,
        alias="cloud-node",
        client_name="node-controller",
        event_source="cloud-node-controller",
        metric_name="cloud-node",
    ),
    ControllerName(
        name=CLOUD_NODE_LIFECYCLE_CONTROLLER,
        alias="cloud-node-lifecycle",
        client_name="node-controller",
        event_source="cloud-node-lifecycle-controller",
        metric_name="cloud-node-lifecycle",
    ),
    ControllerName(
        name=SERVICE_LB_CONTROLLER,
        alias="service",
        client_name="service-controller",
        event_source="service-controller",
        metric_name="service",
    ),
    ControllerName(
        name=NODE_ROUTE_CONTROLLER,
        alias="route",
        client_name="route-controller",
        event_source="route_controller",  # underscore, as upstream
        metric_name="route",
    ),
)

BY_NAME: Final[dict[str, ControllerName]] = {c.name: c for c in CONTROLLERS}
ALIASES: Final[dict[str, str]] = {c.alias: c.name for c in CONTROLLERS}

#: Controllers off unless named explicitly in --controllers (upstream: none).
DISABLED_BY_DEFAULT: Final[frozenset[str]] = frozenset()

# Work queue names (the ``name`` label of workqueue_* metrics), as upstream.
QUEUE_NODES: Final = "Nodes"
QUEUE_SERVICE: Final = "service"
QUEUE_SERVICE_NODES: Final = "node"
QUEUE_ROUTES: Final = "Routes"
