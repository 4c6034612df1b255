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

What a controller is and which ones run: :mod:`ccm.app.specs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ccm import dryrun, fencing, leaderelection, metrics, names, wellknown
from ccm.app import looplag, options
from ccm.app.specs import (
    ControllerContext,
    ControllerSpec,
    Runnable,
    SharedInformers,
    default_controllers,
    plan_controllers,
    report_capabilities,
)
from ccm.cloudprovider import CloudProvider, InitContext
from ccm.controllers import cloudapi
from ccm.errors import ConfigError
from ccm.kube import client as kclient
from ccm.kube import events as kevents
from ccm.kube import health as khealth

if TYPE_CHECKING:
    # The secure server (aiohttp.web, prometheus exposition) and its authorization are imported
    # only with --secure-port.
    from ccm.app import auth, serving

# The controller types and ccm's own controllers live in ccm.app.specs; they are exported here
# too, the path an embedding program imports them from (docs/providers.md).
__all__ = [
    "INFORMER_SYNC_CHECK",
    "ControllerContext",
    "ControllerManager",
    "ControllerSpec",
    "Runnable",
    "SharedInformers",
    "check_untagged",
    "default_controllers",
    "plan_controllers",
    "report_capabilities",
]

_log = logging.getLogger("ccm.app")

#: The readiness check that fails until the shared informers have synced (``/readyz``).
INFORMER_SYNC_CHECK = "informer-sync"


@dataclass(slots=True)
class _Health:
    controllers_started: set[str] = field(default_factory=set)


class ControllerManager:
    """Runs the daemon until cancelled (SIGTERM) or the Lease is lost (LeadershipLostError)."""

    def __init__(
        self,
        opts: options.Options,
        cloud: CloudProvider,
        *,
        controllers: dict[str, ControllerSpec] | None = None,
        client_names: dict[str, str] | None = None,
    ) -> None:
        self.opts = opts
        self.cloud = cloud
        self.specs = controllers if controllers is not None else default_controllers()
        self.client_names = client_names or {c.name: c.client_name for c in names.CONTROLLERS}
        self.identity = leaderelection.default_identity()
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
                from ccm.app import serving

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
        from ccm.app import auth

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
        # As upstream: no provider initialization and no controller before the apiserver answers
        # /healthz; if it does not within 10 s, start-up fails (exit 1).
        await khealth.wait_for_apiserver(client)
        stopping = asyncio.Event()
        informers = SharedInformers(
            client,
            resync_period=None,  # level-triggered periodic loops make resync unnecessary
        )
        recorders: list[kevents.EventRecorder] = []
        sa_clients = None
        if self.opts.use_service_account_credentials:
            from ccm.kube import credentials  # only with --use-service-account-credentials

            sa_clients = credentials.ServiceAccountClients(client)
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


def check_untagged(cloud: CloudProvider, opts: options.Options) -> None:
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
