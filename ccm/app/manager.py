"""Wiring of the daemon: provider capabilities → controllers, Kubernetes client, informers, event
recorders, leader election and the secure server.

Ports ``app/controllermanager.go`` and ``app/core.go`` (UPSTREAM_SPEC §1.9, §3.1). Start-up order:

1. log each optional capability the provider omits and decide, per controller, whether it runs
   (one log line per skipped controller with the reason); refuse to start on configuration errors
   (ConfigError);
2. connect to the apiserver, serve ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics``;
3. with ``--leader-elect``: wait for the Lease; then wait up to 10 s for the apiserver's
   ``/healthz`` (as upstream; start-up fails with exit code 1 if it never answers), call
   ``CloudProvider.initialize``, start the shared informers and every enabled controller; losing
   the Lease stops them and the process exits 1. ``/readyz`` fails (check ``informer-sync``) until
   the informers have synced; a standby replica is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ccm import dryrun, fencing, leaderelection, metrics, names, wellknown
from ccm.app import auth, looplag, serving
from ccm.app import options as optionsmod
from ccm.cloudprovider import CAPABILITIES, CloudProvider, InitContext
from ccm.controllers import cloudapi
from ccm.controllers import node as node_controller
from ccm.controllers import nodelifecycle as node_lifecycle_controller
from ccm.controllers import route as route_controller
from ccm.controllers import service as service_controller
from ccm.errors import ConfigError
from ccm.kube import client as kclient
from ccm.kube import credentials
from ccm.kube import events as kevents
from ccm.kube import health as khealth
from ccm.kube import informer as kinformer

__all__ = ["ControllerContext", "ControllerManager", "ControllerSpec", "default_controllers"]

_log = logging.getLogger("ccm.app")

#: The readiness check that fails until the shared informers have synced (``/readyz``).
INFORMER_SYNC_CHECK = "informer-sync"


@dataclass(slots=True, kw_only=True)
class ControllerContext:
    """What a controller constructor gets, on the leader: options, provider, a client and
    recorder for its own identity, the shared informers (started after every constructor ran),
    and the values of the added flags (``options.extension_flags``, keyed by flag name without the
    leading dashes)."""

    options: optionsmod.Options
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
# : Returns a skip reason when the provider/options do not allow the controller; raises ConfigError
# when the
#: combination is invalid (the daemon refuses to start).
Precheck = Callable[[optionsmod.Options, CloudProvider], str | None]


def _no_precheck(_opts: optionsmod.Options, _cloud: CloudProvider) -> str | None:
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


def _needs_instances(_opts: optionsmod.Options, cloud: CloudProvider) -> str | None:
    if cloud.instances() is None and cloud.instances_v2() is None:
        return "cloud provider does not support instances"
    return None


def _needs_load_balancer(_opts: optionsmod.Options, cloud: CloudProvider) -> str | None:
    if cloud.load_balancer() is None:
        return "the cloud provider does not support external load balancers"
    return None


def _needs_routes(opts: optionsmod.Options, cloud: CloudProvider) -> str | None:
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
    controller = node_controller.CloudNodeController(
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
    routes = ctx.cloud.routes()
    if routes is None:
        return "cloud provider does not support routes"
    controller = route_controller.RouteController(
        client=ctx.client,
        nodes=ctx.informers.get(kclient.NODES),
        routes=routes,
        recorder=ctx.recorder,
        cluster_name=ctx.options.cluster_name,
        cluster_cidrs=ctx.options.cluster_cidrs(),
        period=ctx.options.route_reconciliation_period,
        cloud_timeout=ctx.options.cloud_call_timeout,
        watch_based=route_controller.watch_based_enabled(ctx.options.feature_gates),
    )
    return controller.run


def _init_service_controller(ctx: ControllerContext) -> Runnable:
    controller = service_controller.ServiceController(
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
    controller = node_lifecycle_controller.CloudNodeLifecycleController(
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
    """The controller map in start order (upstream iterates a Go map;
    ccm starts in a fixed order)."""
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
    opts: optionsmod.Options, cloud: CloudProvider, specs: dict[str, ControllerSpec]
) -> list[ControllerSpec]:
    """Decide which controllers run, logging one line per skipped controller with its reason."""
    enabled = optionsmod.enabled_controllers(
        opts.controllers, optionsmod.ControllerCatalog.of(specs.values())
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


@dataclass(slots=True)
class _Health:
    controllers_started: set[str] = field(default_factory=set)


class ControllerManager:
    """Runs the daemon until cancelled (SIGTERM) or the Lease is lost (LeadershipLostError)."""

    def __init__(
        self,
        opts: optionsmod.Options,
        cloud: CloudProvider,
        *,
        controllers: dict[str, ControllerSpec] | None = None,
        client_names: dict[str, str] | None = None,
    ) -> None:
        self.opts = opts
        self.cloud = cloud
        self.specs = controllers if controllers is not None else default_controllers()
        self.client_names = client_names or {c.name: c.client_name for c in names.CONTROLLERS}
        self.identity = f"{socket.gethostname()}_{uuid.uuid4()}"
        self._health = _Health()
        self.server: serving.SecureServer | None = None
        self._elector: leaderelection.LeaderElector | None = None
        self._informers: SharedInformers | None = None

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        if not self.opts.dry_run:
            await self._run(ready)
            return
        _log.warning(
            "Dry run: every loop runs, nothing is written to Kubernetes or the cloud; each "
            "would-be write is logged and counted (ccm_dry_run_writes_total). Leader election "
            "is off: this replica runs its loops without taking the Lease"
        )
        with dryrun.enabled():
            await self._run(ready)

    async def _run(self, ready: asyncio.Event | None) -> None:
        report_capabilities(self.cloud)
        cloudapi.install(
            cloudapi.CloudAPIBudget(qps=self.opts.cloud_api_qps, burst=self.opts.cloud_api_burst)
        )
        if self.opts.cloud_api_qps > 0:
            _log.info(
                "Cloud API budget: %g calls/s, burst %d",
                self.opts.cloud_api_qps,
                self.opts.cloud_api_burst,
            )
        to_run = plan_controllers(self.opts, self.cloud, self.specs)
        client = await kclient.KubeClient.connect(
            kubeconfig=self.opts.kubeconfig or None,
            master=self.opts.master or None,
            qps=self.opts.kube_api_qps,
            burst=self.opts.kube_api_burst,
            user_agent=f"ccm/{wellknown.COMPONENT_NAME}",
        )
        try:
            await self._run_with_client(client, to_run, ready)
        finally:
            await client.aclose()

    async def _run_with_client(
        self,
        client: kclient.KubeClient,
        to_run: list[ControllerSpec],
        ready: asyncio.Event | None,
    ) -> None:
        elector: leaderelection.LeaderElector | None = None
        extra_clients: list[kclient.KubeClient] = []
        # Leader-election events (``<identity> became leader``) are sent before and after leading.
        le_recorder = kevents.EventRecorder(
            client.for_component("leader-election"),
            component=wellknown.COMPONENT_NAME,
            host=socket.gethostname(),
        )
        lag = asyncio.create_task(looplag.LagMonitor().run(), name="event-loop-lag")
        if self.opts.leader_elect and not self.opts.dry_run:
            _log.info("Leader election identity: %s", self.identity)
            elector = leaderelection.LeaderElector(
                client,
                leaderelection.LeaderElectionConfig(
                    namespace=self.opts.leader_elect_resource_namespace,
                    name=self.opts.leader_elect_resource_name,
                    identity=self.identity,
                    lease_duration=self.opts.leader_elect_lease_duration,
                    renew_deadline=self.opts.leader_elect_renew_deadline,
                    retry_period=self.opts.leader_elect_retry_period,
                ),
                recorder=le_recorder,
            )
        # With leader election, these Events too are written only while the Lease is ours.
        le_guard = elector.check_events if elector is not None else None
        with fencing.guard(le_guard) if le_guard else contextlib.nullcontext():
            le_events = asyncio.create_task(le_recorder.run(), name="events/leader-election")
        self._elector = elector
        try:
            if self.opts.secure_port:
                cert_file = self.opts.tls_cert_file or None
                key_file = self.opts.tls_private_key_file or None
                if cert_file is None and self.opts.cert_dir:
                    cert_file, key_file = await asyncio.to_thread(
                        serving.cert_dir_pair, self.opts.cert_dir
                    )
                self.server = serving.SecureServer(
                    bind_address=self.opts.bind_address,
                    port=self.opts.secure_port,
                    cert_file=cert_file,
                    key_file=key_file,
                    authorizer=await self._delegated_auth(client, extra_clients),
                    always_allow_paths=self.opts.authorization_always_allow_paths,
                    tls_min_version=self.opts.tls_min_version or None,
                )
                if elector is not None:
                    self.server.add_healthz_check("leaderElection", elector.healthz_check)
                self.server.add_readyz_check(INFORMER_SYNC_CHECK, self.informer_sync_check)
                try:
                    await self.server.start()
                except OSError as exc:
                    raise ConfigError(
                        f"--secure-port {self.opts.secure_port}: cannot listen on "
                        f"{self.opts.bind_address}: {exc.strerror or exc}"
                    ) from exc
                _log.info("Serving securely on %s:%d", self.opts.bind_address, self.server.port)
            if ready is not None:
                ready.set()
            if elector is None:
                await self._lead(client, to_run)
            else:
                await elector.run(lambda: self._lead(client, to_run))
        finally:
            if self.server is not None:
                await self.server.stop()
            with fencing.guard(le_guard) if le_guard else contextlib.nullcontext():
                await le_recorder.aclose()
            le_events.cancel()
            lag.cancel()
            await asyncio.gather(le_events, lag, return_exceptions=True)
            for extra in extra_clients:
                await extra.aclose()

    async def _delegated_auth(
        self, client: kclient.KubeClient, extra_clients: list[kclient.KubeClient]
    ) -> auth.DelegatedAuth:
        """TokenReview/SubjectAccessReview clients: ``--authentication-kubeconfig`` and
        ``--authorization-kubeconfig`` when given, else the daemon's own client."""
        clients: list[kclient.KubeClient] = []
        for path in (self.opts.authentication_kubeconfig, self.opts.authorization_kubeconfig):
            if path:
                extra = await kclient.KubeClient.connect(kubeconfig=path, user_agent="ccm/auth")
                extra_clients.append(extra)
                clients.append(extra)
            else:
                clients.append(client.for_component("auth"))
        return auth.DelegatedAuth(clients[0], authz_client=clients[1])

    def informer_sync_check(self) -> str | None:
        """The ``informer-sync`` readiness check: fails from start-up until the shared informers
        have synced, so ``/readyz`` does not answer 200 while the caches are empty (for instance
        while the apiserver is unreachable). A standby replica (leader election on, not leading)
        runs no informers and is ready to take over."""
        informers = self._informers
        if informers is None:
            if self._elector is not None and not self._elector.is_leader:
                return None
            return "the informers have not started"
        pending = [i.name for i in informers.all() if not i.has_synced()]
        if pending:
            return f"informers not synced: {', '.join(sorted(pending))}"
        return None

    async def _lead(self, client: kclient.KubeClient, to_run: list[ControllerSpec]) -> None:
        """Everything that runs only on the leader; with leader election every write made from
        here (Kubernetes writes, cloud-changing calls) first checks the Lease (ccm.fencing)."""
        if self._elector is None:
            await self._run_leading(client, to_run)
            return
        with fencing.guard(self._elector.check_lease):
            await self._run_leading(client, to_run)

    async def _run_leading(self, client: kclient.KubeClient, to_run: list[ControllerSpec]) -> None:
        # As upstream: no provider initialization and no controller before the apiserver
        # answers /healthz; if it does not within 10 s, start-up fails (exit 1).
        await khealth.wait_for_apiserver(client)
        stopping = asyncio.Event()
        informers = SharedInformers(
            client,
            resync_period=None,  # level-triggered periodic loops make resync unnecessary
        )
        recorders: list[kevents.EventRecorder] = []
        sa_clients = (
            credentials.ServiceAccountClients(client)
            if self.opts.use_service_account_credentials
            else None
        )
        try:
            await self.cloud.initialize(
                InitContext(
                    cluster_name=self.opts.cluster_name,
                    stopping=stopping,
                    client_factory=lambda name: client.for_component(name),
                    flags=MappingProxyType(dict(self.opts.extension_flags)),
                )
            )
            runs: list[tuple[str, Runnable]] = []
            for spec in to_run:
                assert spec.init is not None
                cname = names.BY_NAME.get(spec.name)
                client_name = self.client_names.get(spec.name, spec.name)
                component_client = (
                    await sa_clients.client(client_name)
                    if sa_clients is not None
                    else client.for_component(client_name)
                )
                recorder = kevents.EventRecorder(
                    component_client,
                    component=cname.event_source if cname else spec.name,
                    host=socket.gethostname(),
                )
                recorders.append(recorder)
                ctx = ControllerContext(
                    options=self.opts,
                    cloud=self.cloud,
                    client=component_client,
                    recorder=recorder,
                    informers=informers,
                )
                result = spec.init(ctx)
                if isinstance(result, str):
                    _log.warning('Skipping "%s": %s', spec.name, result)
                    continue
                runs.append((spec.name, result))
            self._informers = informers
            async with asyncio.TaskGroup() as tg:
                if sa_clients is not None:
                    tg.create_task(sa_clients.run(), name="credentials/refresh")
                for recorder in recorders:
                    tg.create_task(recorder.run(), name=f"events/{recorder.component}")
                for informer in informers.all():
                    tg.create_task(informer.run(), name=f"informer/{informer.name}")
                tg.create_task(
                    looplag.freeze_after_sync(i.wait_for_sync() for i in informers.all()),
                    name="gc/freeze-after-sync",
                )
                for name, run in runs:
                    _log.info('Started "%s"', name)
                    self._health.controllers_started.add(name)
                    tg.create_task(run(), name=f"controller/{name}")
                    if self.opts.controller_start_interval > 0:
                        await asyncio.sleep(self.opts.controller_start_interval)
        finally:
            stopping.set()
            self._informers = None
            for name in self._health.controllers_started:
                cname = names.BY_NAME.get(name)
                if cname:
                    metrics.RUNNING_MANAGED_CONTROLLERS.labels(
                        cname.metric_name, wellknown.COMPONENT_NAME
                    ).set(0)
            for recorder in recorders:
                await recorder.aclose()
            if sa_clients is not None:
                await sa_clients.aclose()


def check_untagged(cloud: CloudProvider, opts: optionsmod.Options) -> None:
    """Upstream: a provider without a cluster ID aborts start-up unless --allow-untagged-cloud."""
    if not cloud.has_cluster_id():
        if opts.allow_untagged_cloud:
            _log.warning(
                "detected a cluster without a ClusterID. A ClusterID will be required in the "
                "future. Please tag your cluster to avoid any future issues"
            )
        else:
            raise ConfigError(
                "no ClusterID Found. A ClusterID is required for the cloud provider to function "
                "properly. This check can be bypassed by setting the allow-untagged-cloud option"
            )
