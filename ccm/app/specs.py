"""The controllers the daemon can run, as the manager sees them: what one is
(:class:`ControllerSpec`), what it gets on the leader (:class:`ControllerContext`, with the
:class:`SharedInformers`), ccm's own four (:func:`default_controllers`, upstream
``app/core.go``), and which of them run with a given provider and flags (:func:`plan_controllers`).

An embedding program or a provider adds its own ``ControllerSpec`` s (docs/providers.md); they are
also importable from :mod:`ccm.app.manager`. Each of ccm's controller packages is imported by its
constructor, on the leader: the daemon loads only the controllers it runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ccm import names
from ccm.app import options as appoptions
from ccm.cloudprovider import CAPABILITIES, CloudProvider
from ccm.kube import client as kclient
from ccm.kube import events as kevents
from ccm.kube import informer as kinformer

__all__ = [
    "ControllerContext",
    "ControllerInit",
    "ControllerSpec",
    "Precheck",
    "Runnable",
    "SharedInformers",
    "default_controllers",
    "plan_controllers",
    "report_capabilities",
]

_log = logging.getLogger("ccm.app")


@dataclass(slots=True, kw_only=True)
class ControllerContext:
    """What a controller constructor gets, on the leader: options, provider, a client and
    recorder for its own identity, the shared informers (started after every constructor ran),
    and the values of the added flags (``options.extension_flags``, keyed by flag name without the
    leading dashes)."""

    options: appoptions.Options
    cloud: CloudProvider
    client: kclient.KubeClient
    recorder: kevents.EventRecorder
    informers: SharedInformers

    @property
    def flags(self) -> Mapping[str, Any]:
        return MappingProxyType(self.options.extension_flags)


Runnable = Callable[[], Coroutine[Any, Any, None]]
#: Returns the controller's ``run`` coroutine function, or a skip reason (str).
ControllerInit = Callable[[ControllerContext], Runnable | str]
#: Returns a skip reason when the provider/options do not allow the controller; raises ConfigError
#: when the combination is invalid (the daemon refuses to start).
Precheck = Callable[[appoptions.Options, CloudProvider], str | None]


def _no_precheck(_opts: appoptions.Options, _cloud: CloudProvider) -> str | None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSpec:
    """One controller of the daemon (upstream's ``ControllerInitFuncConstructor`` with its
    aliases): ``init`` builds it on the leader from a :class:`ControllerContext` and returns its
    ``run`` coroutine function (or a reason to skip it); ``precheck`` decides before start-up
    whether it can run at all. ``--controllers`` accepts ``name`` and ``aliases``; with
    ``disabled_by_default`` only naming it enables it (``*`` does not)."""

    name: str
    init: ControllerInit | None  # None: not implemented in this version of ccm
    precheck: Precheck = _no_precheck
    aliases: tuple[str, ...] = ()
    disabled_by_default: bool = False


class SharedInformers:
    """Informers shared by the controllers, created on first use and started together."""

    def __init__(self, client: kclient.KubeClient, *, resync_period: float | None) -> None:
        self._client = client
        self._resync = resync_period
        self._informers: dict[str, kinformer.Informer] = {}

    def get(self, resource: kclient.Resource) -> kinformer.Informer:
        key = resource.plural
        if key not in self._informers:
            self._informers[key] = kinformer.Informer(
                self._client, resource, resync_period=self._resync, name=key
            )
        return self._informers[key]

    def all(self) -> list[kinformer.Informer]:
        return list(self._informers.values())

    def synced(self) -> bool:
        return all(i.has_synced() for i in self._informers.values())


def _needs_instances(_opts: appoptions.Options, cloud: CloudProvider) -> str | None:
    if cloud.instances() is None and cloud.instances_v2() is None:
        return "cloud provider does not support instances"
    return None


def _needs_load_balancer(_opts: appoptions.Options, cloud: CloudProvider) -> str | None:
    if cloud.load_balancer() is None:
        return "the cloud provider does not support external load balancers"
    return None


def _needs_routes(opts: appoptions.Options, cloud: CloudProvider) -> str | None:
    if not opts.configure_cloud_routes:
        return "Will not configure cloud provider routes, --configure-cloud-routes: false"
    if cloud.routes() is None:
        return (
            "--configure-cloud-routes is set, but cloud provider does not support routes. "
            "Will not configure cloud provider routes."
        )
    opts.cluster_cidrs()  # raises ConfigError naming --cluster-cidr: refuse to start
    return None


def _init_node_controller(ctx: ControllerContext) -> Runnable:
    from ccm.controllers import node as ctlnode

    controller = ctlnode.CloudNodeController(
        client=ctx.client,
        nodes=ctx.informers.get(kclient.NODES),
        cloud=ctx.cloud,
        recorder=ctx.recorder,
        workers=ctx.options.concurrent_node_syncs,
        status_update_workers=ctx.options.concurrent_node_status_updates,
        status_update_frequency=ctx.options.node_status_update_frequency,
        cloud_timeout=ctx.options.cloud_call_timeout,
    )
    return controller.run


def _init_route_controller(ctx: ControllerContext) -> Runnable | str:
    from ccm.controllers import route as ctlroute

    routes = ctx.cloud.routes()
    if routes is None:
        return "cloud provider does not support routes"
    controller = ctlroute.RouteController(
        client=ctx.client,
        nodes=ctx.informers.get(kclient.NODES),
        routes=routes,
        recorder=ctx.recorder,
        cluster_name=ctx.options.cluster_name,
        cluster_cidrs=ctx.options.cluster_cidrs(),
        period=ctx.options.route_reconciliation_period,
        cloud_timeout=ctx.options.cloud_call_timeout,
        watch_based=ctlroute.watch_based_enabled(ctx.options.feature_gates),
    )
    return controller.run


def _init_service_controller(ctx: ControllerContext) -> Runnable:
    from ccm.controllers import service as ctlservice

    controller = ctlservice.ServiceController(
        client=ctx.client,
        services=ctx.informers.get(kclient.SERVICES),
        nodes=ctx.informers.get(kclient.NODES),
        cloud=ctx.cloud,
        recorder=ctx.recorder,
        cluster_name=ctx.options.cluster_name,
        workers=ctx.options.concurrent_service_syncs,
        cloud_timeout=ctx.options.cloud_call_timeout,
    )
    return controller.run


def _init_node_lifecycle_controller(ctx: ControllerContext) -> Runnable:
    from ccm.controllers import nodelifecycle as ctlnodelifecycle

    controller = ctlnodelifecycle.CloudNodeLifecycleController(
        client=ctx.client,
        nodes=ctx.informers.get(kclient.NODES),
        cloud=ctx.cloud,
        recorder=ctx.recorder,
        node_monitor_period=ctx.options.node_monitor_period,
        cloud_timeout=ctx.options.cloud_call_timeout,
        concurrency=ctx.options.concurrent_node_lifecycle_syncs,
    )
    return controller.run


def default_controllers() -> dict[str, ControllerSpec]:
    """The controller map in start order (upstream iterates a Go map; ccm starts in a fixed
    order)."""
    specs = {
        names.CLOUD_NODE_CONTROLLER: ControllerSpec(
            name=names.CLOUD_NODE_CONTROLLER, precheck=_needs_instances, init=_init_node_controller
        ),
        names.CLOUD_NODE_LIFECYCLE_CONTROLLER: ControllerSpec(
            name=names.CLOUD_NODE_LIFECYCLE_CONTROLLER,
            precheck=_needs_instances,
            init=_init_node_lifecycle_controller,
        ),
        names.SERVICE_LB_CONTROLLER: ControllerSpec(
            name=names.SERVICE_LB_CONTROLLER,
            precheck=_needs_load_balancer,
            init=_init_service_controller,
        ),
        names.NODE_ROUTE_CONTROLLER: ControllerSpec(
            name=names.NODE_ROUTE_CONTROLLER,
            precheck=_needs_routes,
            init=_init_route_controller,
        ),
    }
    return {
        name: dataclasses.replace(
            spec,
            aliases=(names.BY_NAME[name].alias,),
            disabled_by_default=name in names.DISABLED_BY_DEFAULT,
        )
        for name, spec in specs.items()
    }


def report_capabilities(cloud: CloudProvider) -> list[str]:
    """Log one line per optional capability the provider omits; return their upstream names."""
    omitted = []
    for accessor, iface in CAPABILITIES:
        if getattr(cloud, accessor)() is None:
            omitted.append(iface)
            _log.info(
                "cloud provider %r does not implement the optional interface %s",
                cloud.provider_name,
                iface,
            )
    return omitted


def plan_controllers(
    opts: appoptions.Options, cloud: CloudProvider, specs: dict[str, ControllerSpec]
) -> list[ControllerSpec]:
    """Decide which controllers run, logging one line per skipped controller with its reason."""
    enabled = appoptions.enabled_controllers(
        opts.controllers, appoptions.ControllerCatalog.of(specs.values())
    )
    to_run: list[ControllerSpec] = []
    for name, spec in specs.items():
        if not enabled.get(name, False):
            _log.warning('"%s" is disabled', name)
            continue
        reason = spec.precheck(opts, cloud)
        if reason is None and spec.init is None:
            reason = "not implemented in this version of ccm"
        if reason is not None:
            _log.warning('Skipping "%s": %s', name, reason)
            continue
        to_run.append(spec)
    return to_run
