"""The ``ccm doctor`` command.

::

    ccm doctor [--kubeconfig FILE] [--context NAME] [--master URL] [--output table|json]
               [--node-selector SELECTOR] [--namespace NS]
               [--leader-elect-resource-name NAME] [--leader-elect-resource-namespace NS]
               [--ccm-namespace NS] [--ccm-pod-selector SELECTOR] [--as USER]
               [--grace DURATION] [--check NAME]...

Without ``--kubeconfig``: the in-cluster configuration, else ``$KUBECONFIG`` or ``~/.kube/config``.
Exit codes: 0 every check ok, 1 the worst verdict is a warning, 2 a check failed, 3 bad usage or
the apiserver could not be reached (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

from ccm import errors, wellknown
from ccm.cloudprovider import durations
from ccm.doctor import model, report
from ccm.kube import client as kclient

__all__ = ["EXIT_USAGE", "main"]

EXIT_USAGE = 3


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _duration(text: str) -> float:
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ccm doctor",
        description="Read-only checks of a cluster's cloud controller manager: one line per "
        "question, with the objects at fault and the fix.",
        epilog="Exit codes: 0 all ok, 1 warnings, 2 a check failed, 3 usage or connection error.",
    )
    p.add_argument(
        "--kubeconfig", metavar="PATH", default=None, help="kubeconfig (default: in-cluster)"
    )
    p.add_argument("--context", metavar="NAME", default=None, help="kubeconfig context")
    p.add_argument(
        "--master", metavar="URL", default=None, help="apiserver URL (overrides the kubeconfig)"
    )
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument(
        "--node-selector",
        metavar="SELECTOR",
        default="",
        help="label selector of the Nodes to check",
    )
    p.add_argument(
        "--namespace", metavar="NS", default=None, help="Services of this namespace only"
    )
    p.add_argument(
        "--leader-elect-resource-name",
        metavar="NAME",
        default=wellknown.DEFAULT_LEADER_ELECTION_NAME,
        help="the ccm's leader-election Lease (as the daemon's flag)",
    )
    p.add_argument(
        "--leader-elect-resource-namespace",
        metavar="NS",
        default=wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE,
        help="namespace of that Lease and of the ccm's Role",
    )
    p.add_argument(
        "--ccm-namespace",
        metavar="NS",
        default=wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE,
        help="namespace of the ccm Pods",
    )
    p.add_argument(
        "--ccm-pod-selector",
        metavar="SELECTOR",
        default=model.DEFAULT_POD_SELECTOR,
        help="label selector of the ccm Pods",
    )
    p.add_argument(
        "--as",
        dest="rbac_user",
        metavar="USER",
        default=model.DEFAULT_SERVICE_ACCOUNT_USER,
        help="user the RBAC check asks about (default: the ccm's ServiceAccount)",
    )
    p.add_argument(
        "--grace",
        type=_duration,
        metavar="DURATION",
        default=model.DEFAULT_GRACE,
        help="a Node tainted or a Service pending for less than this warns (default 2m)",
    )
    p.add_argument(
        "--check",
        action="append",
        choices=list(report.CHECKS),
        metavar="NAME",
        default=[],
        help=f"run only this check (repeatable): {', '.join(report.CHECKS)}",
    )
    return p


async def _run(args: argparse.Namespace) -> int:
    scope = model.Scope(
        node_selector=args.node_selector,
        namespace=args.namespace,
        lease_name=args.leader_elect_resource_name,
        lease_namespace=args.leader_elect_resource_namespace,
        ccm_namespace=args.ccm_namespace,
        ccm_pod_selector=args.ccm_pod_selector,
        rbac_user=args.rbac_user,
        grace=args.grace,
    )
    client = await kclient.KubeClient.connect(
        kubeconfig=args.kubeconfig,
        context=args.context,
        master=args.master,
        user_agent="ccm-doctor",
        request_timeout=10.0,
    )
    async with client:
        findings = await report.run_checks(client, scope, only=args.check)
    if args.output == "json":
        print(report.render_json(findings))
    else:
        print(report.render_table(findings))
    return report.exit_code(findings)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        return asyncio.run(_run(args))
    except _UsageError as exc:
        print(f"ccm doctor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.CCMError as exc:  # bad kubeconfig, unreachable apiserver
        print(f"ccm doctor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
