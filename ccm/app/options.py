"""Command-line options with upstream flag names and defaults (UPSTREAM_SPEC §3.2, §3.3), except
four throughput defaults chosen for apiservers with API Priority and Fairness
(:data:`UPSTREAM_THROUGHPUT_DEFAULTS`): the :class:`Options` the daemon runs with, how a command
line becomes one (:func:`parse_args`) and the checks it passes (:func:`validate`). The flags
themselves, with their help text, are in :mod:`ccm.app.flagtable`.

Flags follow Go/pflag conventions: ``--flag=value`` or ``--flag value``; booleans accept ``--flag``,
``--flag=true`` and ``--flag=false``; durations accept Go syntax (``300ms``, ``5s``, ``1m30s``,
``12h``). Every problem is a :class:`ccm.errors.ConfigError` with one line naming the flag.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ccm import wellknown
from ccm.app import flagtable, upstreamflags
from ccm.app.catalog import ControllerCatalog, NamedController, enabled_controllers
from ccm.app.flagtable import SUBCOMMANDS, TLS_VERSIONS, UPSTREAM_THROUGHPUT_DEFAULTS
from ccm.cloudprovider.durations import parse_duration
from ccm.cloudprovider.flags import FlagSet
from ccm.cloudprovider.strconv import parse_bool
from ccm.errors import ConfigError

# The constants and parsers re-exported here are defined once, in ccm.app.flagtable and
# ccm.cloudprovider: ``options`` is the one module the callers import.
__all__ = [
    "SUBCOMMANDS",
    "TLS_VERSIONS",
    "UPSTREAM_THROUGHPUT_DEFAULTS",
    "ControllerCatalog",
    "NamedController",
    "Options",
    "build_parser",
    "enabled_controllers",
    "parse_args",
    "parse_bool",
    "parse_duration",
    "validate",
]


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
        default_factory=lambda: list(flagtable.DEFAULT_ALWAYS_ALLOW_PATHS)
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


def build_parser(
    prog: str = "ccm",
    defaults: Options | None = None,
    *,
    controllers: ControllerCatalog | None = None,
    flag_sets: Sequence[FlagSet] = (),
) -> argparse.ArgumentParser:
    """The flag parser. ``defaults`` lets an embedding program change defaults (upstream sample
    main); ``controllers`` are the names ``--controllers`` lists (default: ccm's own) and
    ``flag_sets`` the added flags, one ``--help`` section per set. The flags themselves are in
    :mod:`ccm.app.flagtable`."""
    return flagtable.build_parser(
        prog,
        defaults or Options(),
        controllers or ControllerCatalog.default(),
        flag_sets=flag_sets,
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
        if k.startswith(flagtable.EXTENSION_PREFIX):
            extension[k.removeprefix(flagtable.EXTENSION_PREFIX)] = v
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
