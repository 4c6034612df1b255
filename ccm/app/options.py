"""Command-line options with upstream flag names and defaults (UPSTREAM_SPEC §3.2, §3.3), except
four throughput defaults chosen for apiservers with API Priority and Fairness
(:data:`UPSTREAM_THROUGHPUT_DEFAULTS`).

Flags follow Go/pflag conventions: ``--flag=value`` or ``--flag value``; booleans accept ``--flag``,
``--flag=true`` and ``--flag=false``; durations accept Go syntax (``300ms``, ``5s``, ``1m30s``,
``12h``).
Every problem is a :class:`ccm.errors.ConfigError` with one line naming the flag.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ccm import wellknown
from ccm.app import serving, upstreamflags
from ccm.app.catalog import ControllerCatalog, NamedController, enabled_controllers
from ccm.cloudprovider import registry
from ccm.cloudprovider.durations import parse_duration
from ccm.cloudprovider.flags import FlagSet
from ccm.cloudprovider.strconv import parse_bool
from ccm.controllers.route import WATCH_BASED_FEATURE_GATE
from ccm.errors import ConfigError

__all__ = [
    "SUBCOMMANDS",
    "UPSTREAM_THROUGHPUT_DEFAULTS",
    "ControllerCatalog",
    "NamedController",
    "Options",
    "build_parser",
    "enabled_controllers",
    "parse_args",
    "parse_bool",
    "parse_duration",
]

#: Upstream's values for the four settings whose ccm defaults are higher. Upstream chose them
#: before API Priority and Fairness (GA in 1.29) bounded every client on the server side; with
#: them a 5,000-Node scale-up waits minutes for the uninitialized taint to go and 1,000
#: LoadBalancer Services converge one at a time. Pass them as flags (or as ``defaults=`` when
#: embedding) to get upstream's behaviour exactly.
UPSTREAM_THROUGHPUT_DEFAULTS: dict[str, int | float] = {
    "--concurrent-node-syncs": 1,
    "--concurrent-service-syncs": 1,
    "--kube-api-qps": 20.0,
    "--kube-api-burst": 30,
}

#: The values of ``--tls-min-version`` (Go's names; older versions are not served).
TLS_VERSIONS = ("VersionTLS12", "VersionTLS13")

#: The subcommands of ``ccm`` (name → one line), listed at the end of ``--help``.
SUBCOMMANDS: dict[str, str] = {
    "conformance": "run the provider conformance suite against a cloud (ccm conformance --help)",
    "doctor": "read-only checks of a cluster's cloud set-up, one verdict each (ccm doctor --help)",
}


@dataclass(slots=True, kw_only=True)
class Options:
    """Every option the daemon understands, with upstream defaults except the four throughput
    settings in :data:`UPSTREAM_THROUGHPUT_DEFAULTS`."""

    cloud_provider: str = ""
    cloud_config: str = ""
    controllers: list[str] = field(default_factory=lambda: ["*"])
    kubeconfig: str = ""
    master: str = ""
    cluster_name: str = "kubernetes"
    cluster_cidr: str = ""
    allocate_node_cidrs: bool = False
    configure_cloud_routes: bool = True
    cidr_allocator_type: str = "RangeAllocator"
    # ccm departs from upstream's defaults (1, 1, 20, 30) for the throughput settings: see
    # UPSTREAM_THROUGHPUT_DEFAULTS and README "Defaults that differ from upstream".
    concurrent_service_syncs: int = 20
    concurrent_node_syncs: int = 10
    concurrent_node_status_updates: int = 0
    node_status_update_frequency: float = 300.0
    node_monitor_period: float = 5.0
    route_reconciliation_period: float = 10.0
    use_service_account_credentials: bool = False
    allow_untagged_cloud: bool = False
    node_sync_period: float = 0.0
    external_cloud_volume_plugin: str = ""
    kube_api_qps: float = 200.0
    kube_api_burst: int = 300
    kube_api_content_type: str = "application/vnd.kubernetes.protobuf"
    min_resync_period: float = 12 * 3600.0
    controller_start_interval: float = 0.0
    leader_elect: bool = True
    leader_elect_lease_duration: float = 15.0
    leader_elect_renew_deadline: float = 10.0
    leader_elect_retry_period: float = 2.0
    leader_elect_resource_lock: str = "leases"
    leader_elect_resource_name: str = wellknown.DEFAULT_LEADER_ELECTION_NAME
    leader_elect_resource_namespace: str = wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    secure_port: int = wellknown.CLOUD_CONTROLLER_MANAGER_PORT
    bind_address: str = "0.0.0.0"
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    tls_min_version: str = ""  # "": TLS 1.2, ccm's floor
    cert_dir: str = ""
    #: Paths served without authorization; ccm's default adds the per-check sub-paths.
    authorization_always_allow_paths: list[str] = field(
        default_factory=lambda: list(serving.DEFAULT_ALWAYS_ALLOW_PATHS)
    )
    profiling: bool = True
    authentication_kubeconfig: str = ""
    authorization_kubeconfig: str = ""
    feature_gates: str = ""
    logging_format: str = "text"
    verbosity: int = 0
    cloud_call_timeout: float = 60.0  # ccm: bound on every cloud call made by a controller
    shutdown_grace_period: float = 5.0  # ccm: how long SIGTERM waits for controllers to stop
    concurrent_node_lifecycle_syncs: int = 10  # ccm: Nodes checked at once in a lifecycle sweep
    cloud_threads: int = 0  # ccm: threads for blocking SDK calls; 0 = cloud_thread_count()
    cloud_api_qps: float = 0.0  # ccm: budget of cloud calls per second, all controllers (0: off)
    cloud_api_burst: int = 10  # ccm: calls the budget lets through at once
    # --- ccm operability (see "operability flags" in build_parser) ---
    dry_run: bool = False  # ccm: run every loop, write nothing, log and count would-be writes
    cloud_config_poll_interval: float = 5.0  # ccm: how often --cloud-config is re-read (0: never)
    #: Values of the flags added by the provider or the embedding program (``FlagSet``), keyed by
    #: flag name without the leading dashes.
    extension_flags: dict[str, Any] = field(default_factory=dict)
    #: Upstream flags that were set but ccm does not implement (``ccm.app.upstreamflags``).
    ignored_upstream_flags: list[str] = field(default_factory=list)

    def cloud_thread_count(self) -> int:
        """``--cloud-threads``, or when 0 the node and service workers plus 4 (the route and
        lifecycle loops): the size of the pool that runs blocking SDK calls."""
        if self.cloud_threads > 0:
            return self.cloud_threads
        return self.concurrent_node_syncs + self.concurrent_service_syncs + 4

    def cluster_cidrs(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """``--cluster-cidr`` parsed: one CIDR, or two of different IP families (dual-stack)."""
        text = self.cluster_cidr.strip()
        if not text:
            raise ConfigError("--cluster-cidr must be set when routes are configured")
        parts = [p.strip() for p in text.split(",")]
        if len(parts) > 2:
            raise ConfigError(f'--cluster-cidr "{text}": at most two CIDRs (one per IP family)')
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for part in parts:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ConfigError(f'--cluster-cidr "{text}": {exc}') from exc
        if len(nets) == 2 and nets[0].version == nets[1].version:
            raise ConfigError(f'--cluster-cidr "{text}": two CIDRs must be one IPv4 and one IPv6')
        return nets


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


_KIND_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "duration": _duration,
}


def _extension_dest(key: str) -> str:
    return f"extension:{key}"


def build_parser(
    prog: str = "ccm",
    defaults: Options | None = None,
    *,
    controllers: ControllerCatalog | None = None,
    flag_sets: Sequence[FlagSet] = (),
) -> argparse.ArgumentParser:
    """The flag parser. ``defaults`` lets an embedding program change defaults (upstream
    sample main); ``controllers`` are the names ``--controllers`` lists (default: ccm's own) and
    ``flag_sets`` the added flags, one ``--help`` section per set."""
    d = defaults or Options()
    catalog = controllers or ControllerCatalog.default()
    p = _Parser(
        prog=prog,
        description="ccm: a Kubernetes cloud controller manager. Runs the cloud node, node "
        "lifecycle, route and service load-balancer controllers against a cloud provider plugin.",
        allow_abbrev=False,
    )

    def flag(name: str, **kw: Any) -> None:
        dest = name.lstrip("-").replace("-", "_")
        p.add_argument(name, dest=dest, default=getattr(d, dest), **kw)

    def bool_flag(name: str, help_: str) -> None:
        flag(name, type=_bool, nargs="?", const=True, metavar="BOOL", help=help_)

    g = p
    flag("--cloud-provider", metavar="NAME", help="The provider for cloud services (required).")
    flag(
        "--cloud-config", metavar="PATH", help="The path to the cloud provider configuration file."
    )
    flag(
        "--controllers",
        type=_csv,
        metavar="LIST",
        help="Controllers to enable: '*' enables all on-by-default controllers, 'foo' enables "
        "'foo', '-foo' disables 'foo'. All: "
        + ", ".join(catalog.names)
        + (
            ". Disabled by default: " + ", ".join(sorted(catalog.disabled_by_default))
            if catalog.disabled_by_default
            else ""
        )
        + ".",
    )
    flag("--kubeconfig", metavar="PATH", help="Path to a kubeconfig (default: in-cluster).")
    flag(
        "--master",
        metavar="URL",
        help="The address of the Kubernetes API server (overrides any value in kubeconfig).",
    )
    flag("--cluster-name", help="The instance prefix for the cluster.")
    flag("--cluster-cidr", help="CIDR range for Pods in the cluster (one, or two for dual-stack).")
    bool_flag("--allocate-node-cidrs", "Accepted for compatibility; not used by the CCM.")
    bool_flag(
        "--configure-cloud-routes",
        "Whether CIDRs allocated by allocate-node-cidrs should "
        "be configured on the cloud provider.",
    )
    flag("--cidr-allocator-type", help="Accepted for compatibility; not used by the CCM.")
    flag(
        "--concurrent-service-syncs",
        type=int,
        metavar="N",
        help="Number of services allowed to sync concurrently.",
    )
    flag(
        "--concurrent-node-syncs",
        type=int,
        metavar="N",
        help="Number of workers concurrently synchronizing nodes.",
    )
    flag(
        "--concurrent-node-status-updates",
        type=int,
        metavar="N",
        help="Workers for the periodic node status update; 0 means --concurrent-node-syncs.",
    )
    flag(
        "--node-status-update-frequency",
        type=_duration,
        metavar="DURATION",
        help="How often node addresses are refreshed from the cloud.",
    )
    flag(
        "--node-monitor-period",
        type=_duration,
        metavar="DURATION",
        help="The period for syncing NodeStatus in the cloud node lifecycle controller.",
    )
    flag(
        "--route-reconciliation-period",
        type=_duration,
        metavar="DURATION",
        help="The period for reconciling routes created for Nodes by cloud provider.",
    )
    bool_flag(
        "--use-service-account-credentials",
        "If true, use individual service account credentials for each controller.",
    )
    bool_flag(
        "--allow-untagged-cloud",
        "Allow the cluster to run without the cluster-id on cloud instances (deprecated).",
    )
    flag("--node-sync-period", type=_duration, metavar="DURATION", help="Deprecated no-op.")
    flag("--external-cloud-volume-plugin", help="Accepted for compatibility; not used.")
    flag(
        "--kube-api-qps",
        type=float,
        metavar="QPS",
        help="QPS to use while talking with kubernetes apiserver.",
    )
    flag(
        "--kube-api-burst",
        type=int,
        metavar="N",
        help="Burst to use while talking with kubernetes apiserver.",
    )
    flag("--kube-api-content-type", help="Accepted for compatibility; ccm always speaks JSON.")
    flag(
        "--min-resync-period",
        type=_duration,
        metavar="DURATION",
        help="The resync period in reflectors will be random between MinResyncPeriod and "
        "2*MinResyncPeriod.",
    )
    flag(
        "--controller-start-interval",
        type=_duration,
        metavar="DURATION",
        help="Interval between starting controller managers.",
    )
    bool_flag(
        "--leader-elect",
        "Start a leader election client and gain leadership before executing the main loop.",
    )
    flag(
        "--leader-elect-lease-duration",
        type=_duration,
        metavar="DURATION",
        help="How long non-leaders wait after observing a renewal before taking over.",
    )
    flag(
        "--leader-elect-renew-deadline",
        type=_duration,
        metavar="DURATION",
        help="How long the leader tries to renew before it stops leading.",
    )
    flag(
        "--leader-elect-retry-period",
        type=_duration,
        metavar="DURATION",
        help="How long clients wait between attempts to acquire and renew leadership.",
    )
    flag("--leader-elect-resource-lock", help="The lock type; only 'leases' is supported.")
    flag("--leader-elect-resource-name", help="The name of the Lease used for locking.")
    flag("--leader-elect-resource-namespace", help="The namespace of the Lease used for locking.")
    flag(
        "--secure-port",
        type=int,
        metavar="PORT",
        help="HTTPS port for /healthz, /readyz, /livez and /metrics; 0 disables serving.",
    )
    flag(
        "--bind-address",
        metavar="IP",
        help="The IP address on which to listen for the --secure-port port.",
    )
    flag(
        "--tls-cert-file",
        metavar="PATH",
        help="x509 certificate for HTTPS (default: self-signed in memory).",
    )
    flag(
        "--tls-private-key-file", metavar="PATH", help="x509 private key matching --tls-cert-file."
    )
    flag(
        "--cert-dir",
        metavar="PATH",
        help="Folder of the serving pair cloud-controller-manager.crt/.key, generated there "
        "(self-signed) when missing; ignored with --tls-cert-file (default: in memory).",
    )
    flag(
        "--tls-min-version",
        choices=TLS_VERSIONS,
        metavar="VERSION",
        help="Minimum TLS version served: VersionTLS12 or VersionTLS13 (empty: VersionTLS12).",
    )
    flag(
        "--authorization-always-allow-paths",
        type=_csv,
        metavar="PATHS",
        help="HTTP paths served without authorization; a trailing '*' matches any suffix "
        "(upstream default: /healthz,/readyz,/livez).",
    )
    bool_flag("--profiling", "Accepted for compatibility; no profiling endpoints are served.")
    flag(
        "--authentication-kubeconfig",
        metavar="PATH",
        help="kubeconfig for TokenReview (default: the main client).",
    )
    flag(
        "--authorization-kubeconfig",
        metavar="PATH",
        help="kubeconfig for SubjectAccessReview (default: the main client).",
    )
    flag(
        "--feature-gates",
        metavar="KEY=BOOL,...",
        help="Feature gates. ccm implements "
        f"{WATCH_BASED_FEATURE_GATE}=true|false (ALPHA - default=false): route reconciliation "
        "driven by Node events; other upstream gates are accepted and ignored.",
    )
    flag("--logging-format", choices=("text", "json"), help="Log format: text or json.")
    g.add_argument(
        "-v",
        "--v",
        dest="verbosity",
        type=int,
        default=d.verbosity,
        metavar="N",
        help="Log level verbosity.",
    )
    flag(
        "--cloud-call-timeout",
        type=_duration,
        metavar="DURATION",
        help="ccm: timeout of each cloud call made by a controller.",
    )
    flag(
        "--concurrent-node-lifecycle-syncs",
        type=int,
        metavar="N",
        help="ccm: NotReady Nodes the node lifecycle controller checks in the cloud at once.",
    )
    flag(
        "--cloud-threads",
        type=int,
        metavar="N",
        help="ccm: threads running blocking cloud SDK calls (run_blocking); 0 means "
        "--concurrent-node-syncs + --concurrent-service-syncs + 4.",
    )
    flag(
        "--cloud-api-qps",
        type=float,
        metavar="QPS",
        help="ccm: cloud provider calls per second, shared by every controller and capability "
        "(a token bucket); 0 (the default) means no limit.",
    )
    flag(
        "--cloud-api-burst",
        type=int,
        metavar="N",
        help="ccm: cloud provider calls let through at once by --cloud-api-qps.",
    )
    flag(
        "--shutdown-grace-period",
        type=_duration,
        metavar="DURATION",
        help="ccm: how long SIGTERM waits for the controllers to stop.",
    )
    _operability_flags(p, d)
    _installed_providers_epilog(p)
    p.add_argument(
        "--version",
        nargs="?",
        const=True,
        default=False,
        metavar="raw",
        help="Print version information and quit.",
    )
    upstreamflags.organize(
        p,
        upstream_defaults=UPSTREAM_THROUGHPUT_DEFAULTS,
        duration_type=_duration,
        subcommands=SUBCOMMANDS,
        reserved=[f.name for fs in flag_sets for f in fs.flags],
    )
    own = {a for action in p._actions for a in action.option_strings}
    for fs in flag_sets:
        group = p.add_argument_group(f"{fs.name} flags")
        for f in fs.flags:
            if f.name in own:
                raise ConfigError(f"flag {f.name} of flag set {fs.name!r} is defined twice")
            own.add(f.name)
            extra: dict[str, Any] = {"nargs": "?", "const": True} if f.kind == "bool" else {}
            group.add_argument(
                f.name,
                dest=_extension_dest(f.key),
                type=_KIND_PARSERS[f.kind],
                default=d.extension_flags.get(f.key, f.default),
                metavar=f.metavar or ("BOOL" if f.kind == "bool" else f.kind.upper()),
                help=f.help,
                **extra,
            )
    return p


def _installed_providers_epilog(p: argparse.ArgumentParser) -> None:
    """``--help`` ends with the providers ``--cloud-provider`` can name on this installation."""
    installed = registry.installed_providers()
    p.epilog = (
        "Installed cloud providers (--cloud-provider, from the ccm.cloud_providers entry points "
        "and register()): " + (", ".join(installed) if installed else "none") + "."
    )


def _operability_flags(p: argparse.ArgumentParser, d: Options) -> None:
    """ccm's own operability flags, in their own ``--help`` section."""
    ops = p.add_argument_group("operability flags")
    ops.add_argument(
        "--dry-run",
        dest="dry_run",
        type=_bool,
        nargs="?",
        const=True,
        default=d.dry_run,
        metavar="BOOL",
        help="ccm: run every loop and read the cluster and the cloud, but write nothing: no "
        "Kubernetes create, update, patch or delete (Events included) and no cloud call that "
        "changes the cloud; each would-be write is logged ('dry run: would ...') and counted in "
        "ccm_dry_run_writes_total. Leader election is off in a dry run (the Lease is neither "
        "taken nor read), so it is safe beside another cloud controller manager that holds it: "
        "the way to try ccm on a running cluster.",
    )
    ops.add_argument(
        "--cloud-config-poll-interval",
        dest="cloud_config_poll_interval",
        type=_duration,
        default=d.cloud_config_poll_interval,
        metavar="DURATION",
        help="ccm: how often the --cloud-config file is read again to notice a change (a rotated "
        "Secret); 0 disables it. A changed file goes to the provider's reload hook; a provider "
        "without one makes ccm release the Lease and exit 0 to be restarted with it. A file the "
        "provider refuses is logged and the old configuration keeps serving.",
    )


def parse_args(
    argv: list[str],
    *,
    prog: str = "ccm",
    defaults: Options | None = None,
    controllers: ControllerCatalog | None = None,
    flag_sets: Sequence[FlagSet] = (),
) -> Options:
    """Parse and validate ``argv`` (without the program name). Raises ConfigError."""
    ns = build_parser(prog, defaults, controllers=controllers, flag_sets=flag_sets).parse_args(argv)
    values: dict[str, Any] = {}
    extension: dict[str, Any] = {}
    for k, v in vars(ns).items():
        if k.startswith(upstreamflags.DEST_PREFIX):
            continue
        if k.startswith("extension:"):
            extension[k.removeprefix("extension:")] = v
        elif k != "version":
            values[k] = v
    opts = Options(
        **values,
        extension_flags=extension,
        ignored_upstream_flags=upstreamflags.given(vars(ns)),
    )
    validate(opts, controllers=controllers)
    return opts


def validate(opts: Options, *, controllers: ControllerCatalog | None = None) -> None:
    """Checks every flag; the first problem is raised as a ConfigError naming the flag."""
    catalog = controllers or ControllerCatalog.default()
    if not opts.cloud_provider:
        raise ConfigError("--cloud-provider cannot be empty")
    for item in opts.controllers:
        name = item[1:] if item.startswith("-") else item
        if name == "*":
            continue
        if name not in catalog.names and name not in catalog.aliases:
            raise ConfigError(
                f'--controllers: "{item}" is not in the list of known controllers '
                f"({', '.join(catalog.names)})"
            )
    for flag_name, value in (
        ("--concurrent-node-syncs", opts.concurrent_node_syncs),
        ("--concurrent-service-syncs", opts.concurrent_service_syncs),
    ):
        if value <= 0:
            raise ConfigError(f"{flag_name} must be greater than 0, got {value}")
    if opts.cloud_threads < 0:
        raise ConfigError(f"--cloud-threads must be >= 0, got {opts.cloud_threads}")
    if opts.concurrent_node_status_updates < 0:
        raise ConfigError("--concurrent-node-status-updates must be >= 0")
    if opts.concurrent_node_lifecycle_syncs <= 0:
        raise ConfigError(
            "--concurrent-node-lifecycle-syncs must be greater than 0, got "
            f"{opts.concurrent_node_lifecycle_syncs}"
        )
    for flag_name, period in (
        ("--node-status-update-frequency", opts.node_status_update_frequency),
        ("--node-monitor-period", opts.node_monitor_period),
        ("--route-reconciliation-period", opts.route_reconciliation_period),
        ("--cloud-call-timeout", opts.cloud_call_timeout),
    ):
        if period <= 0:
            raise ConfigError(f"{flag_name} must be greater than 0")
    if not opts.cloud_api_qps >= 0:  # NaN too
        raise ConfigError(f"--cloud-api-qps must be >= 0 (0: no limit), got {opts.cloud_api_qps}")
    if opts.cloud_api_burst < 1:
        raise ConfigError(f"--cloud-api-burst must be at least 1, got {opts.cloud_api_burst}")
    if opts.kube_api_qps <= 0 or opts.kube_api_burst <= 0:
        raise ConfigError("--kube-api-qps and --kube-api-burst must be greater than 0")
    if opts.leader_elect:
        if opts.leader_elect_resource_lock != "leases":
            raise ConfigError(
                f'--leader-elect-resource-lock "{opts.leader_elect_resource_lock}": only "leases" '
                "is supported"
            )
        if not opts.leader_elect_lease_duration > opts.leader_elect_renew_deadline:
            raise ConfigError(
                "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline"
            )
        if not opts.leader_elect_renew_deadline > 1.2 * opts.leader_elect_retry_period:
            raise ConfigError(
                "--leader-elect-renew-deadline must be greater than 1.2 x "
                "--leader-elect-retry-period"
            )
        if opts.leader_elect_retry_period <= 0:
            raise ConfigError("--leader-elect-retry-period must be greater than 0")
    if not 0 <= opts.secure_port <= 65535:
        raise ConfigError(f"--secure-port {opts.secure_port} must be between 0 and 65535")
    if bool(opts.tls_cert_file) != bool(opts.tls_private_key_file):
        raise ConfigError("--tls-cert-file and --tls-private-key-file must be given together")
    try:
        ipaddress.ip_address(opts.bind_address)
    except ValueError as exc:
        raise ConfigError(f'--bind-address "{opts.bind_address}" is not an IP address') from exc
