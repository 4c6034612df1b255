"""The daemon's flag table: every flag with its upstream name, type and help text, the ``--help``
layout (upstream's sections, ccm's operability flags, the flags added by a provider or an embedding
program, the installed providers) and the Go-style value parsers behind them.

:func:`ccm.app.options.build_parser` and :func:`ccm.app.options.parse_args` are the way in; this
module only builds the parser from the defaults (an ``Options``) it is given.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn

from ccm.app import upstreamflags
from ccm.app.catalog import ControllerCatalog
from ccm.cloudprovider import registry
from ccm.cloudprovider.durations import parse_duration
from ccm.cloudprovider.flags import FlagSet
from ccm.cloudprovider.strconv import parse_bool
from ccm.errors import ConfigError
from ccm.wellknown import FEATURE_GATE_WATCH_BASED_ROUTES

if TYPE_CHECKING:
    from ccm.app.options import Options

__all__ = [
    "EXTENSION_PREFIX",
    "SUBCOMMANDS",
    "TLS_VERSIONS",
    "UPSTREAM_THROUGHPUT_DEFAULTS",
    "build_parser",
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

#: ``--authorization-always-allow-paths`` default: the paths no authorizer is asked about (upstream
#: ``AlwaysAllowPaths`` plus the per-check sub-paths). A trailing ``*`` matches any suffix.
DEFAULT_ALWAYS_ALLOW_PATHS: Final = (
    "/healthz",
    "/healthz/*",
    "/livez",
    "/livez/*",
    "/readyz",
    "/readyz/*",
)

#: The subcommands of ``ccm`` (name → one line), listed at the end of ``--help``.
SUBCOMMANDS: dict[str, str] = {
    "conformance": "run the provider conformance suite against a cloud (ccm conformance --help)",
    "doctor": "read-only checks of a cluster's cloud set-up, one verdict each (ccm doctor --help)",
}


#: Prefix of the argparse destinations of the added flags (``FlagSet``), before the flag's key.
EXTENSION_PREFIX = "extension:"


class _Parser(argparse.ArgumentParser):
    #: Whether ``--help`` ends with the installed providers yet: they are listed when the help is
    #: first formatted, since finding them scans every installed distribution's entry points.
    _providers_listed = False

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def format_help(self) -> str:
        if not self._providers_listed:
            self._providers_listed = True
            text = _installed_providers_text()
            # After the subcommand table (raw formatting, so wrapped here) when there is one.
            self.epilog = (
                f"{self.epilog}\n\n{textwrap.fill(text, width=100)}" if self.epilog else text
            )
        return super().format_help()


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
    return f"{EXTENSION_PREFIX}{key}"


def build_parser(
    prog: str, d: Options, catalog: ControllerCatalog, *, flag_sets: Sequence[FlagSet]
) -> argparse.ArgumentParser:
    """The flag parser of :func:`ccm.app.options.build_parser`, with every argument given: the
    defaults ``d``, the controllers ``catalog`` and the added ``flag_sets``."""
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
        f"{FEATURE_GATE_WATCH_BASED_ROUTES}=true|false (ALPHA - default=false): route "
        "reconciliation driven by Node events; other upstream gates are accepted and ignored.",
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


def _installed_providers_text() -> str:
    """``--help`` ends with the providers ``--cloud-provider`` can name on this installation."""
    installed = registry.installed_providers()
    return (
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
