"""``ccm conformance``: run the conformance suite against a provider and print a report.

::

    ccm conformance --cloud-provider NAME [--cloud-config FILE] [--driver MODULE:ATTR]
                    [--junit-xml PATH] [--only CAPABILITY]... [--kubeconfig FILE]

Without ``--kubeconfig`` an embedded control plane (:class:`ccm.testing.controlplane.ControlPlane`)
is started for the run. ``--driver`` defaults to the fake provider's driver for
``--cloud-provider fake``; other providers must name theirs. Exit codes: 0 every applicable
scenario passed; 1 at least one failed; 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from typing import Any

from ccm import errors
from ccm.cloudprovider import CloudProvider, init_cloud_provider
from ccm.testing.conformance.driver import ConformanceDriver
from ccm.testing.conformance.report import format_report, format_result, write_junit_xml
from ccm.testing.conformance.suite import CAPABILITIES, SuiteConfig, run_suite

__all__ = ["build_driver", "main"]

_FAKE_DRIVER = "ccm.testing.conformance.fake_driver:fake_driver_factory"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ccm conformance",
        description="Certify a cloud provider: run the conformance scenarios against it, under "
        "ccm's node, node lifecycle and service controllers. Routes are checked by calling the "
        "provider's Routes directly (the route controller is not run).",
    )
    p.add_argument("--cloud-provider", required=True, help="the provider's registered name")
    p.add_argument("--cloud-config", default="", help="the provider's config file")
    p.add_argument(
        "--driver",
        default="",
        metavar="MODULE:ATTR",
        help="your conformance driver, or a factory (provider) -> driver: needed by most "
        "scenarios (every one that creates, stops or deletes a machine); without it they fail "
        "[driver-required]. Not needed for --cloud-provider fake (its driver is built in).",
    )
    p.add_argument("--junit-xml", default="", help="write a JUnit XML report to PATH")
    p.add_argument(
        "--only",
        action="append",
        choices=CAPABILITIES,
        metavar="CAPABILITY",
        help="run only the scenarios of CAPABILITY (one of: "
        + ", ".join(CAPABILITIES)
        + "); repeat it to run several, e.g. --only instances-v2 --only routes",
    )
    p.add_argument("--kubeconfig", default="", help="use this cluster instead of an embedded one")
    p.add_argument("--cluster-name", default="conformance")
    p.add_argument("--wait-timeout", type=float, default=20.0, help="bound of each wait, seconds")
    return p


async def build_driver(spec: str, provider: CloudProvider) -> ConformanceDriver:
    """Resolve ``MODULE:ATTR``: a driver instance, or a callable ``(provider) -> driver``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise errors.ConfigError(f"--driver {spec!r}: expected MODULE:ATTR")
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise errors.ConfigError(f"--driver {spec!r}: {exc}") from exc
    if not isinstance(target, ConformanceDriver) and callable(target):
        target = target(provider)
        if inspect.isawaitable(target):
            target = await target
    if not isinstance(target, ConformanceDriver):
        raise errors.ConfigError(f"--driver {spec!r} is not a conformance driver")
    return target


async def _run(args: argparse.Namespace) -> int:
    provider = await init_cloud_provider(args.cloud_provider, args.cloud_config or None)
    try:
        spec = args.driver or (_FAKE_DRIVER if args.cloud_provider == "fake" else "")
        driver = await build_driver(spec, provider) if spec else None
        if driver is None:
            print(
                "ccm conformance: no --driver: the scenarios that create machines fail "
                "[driver-required]",
                file=sys.stderr,
            )
        cfg = SuiteConfig(cluster_name=args.cluster_name, wait_timeout=args.wait_timeout)

        def progress(result: Any) -> None:
            print(f"[{result.capability}]" + format_result(result), flush=True)

        async def go(kubeconfig: str) -> int:
            report = await run_suite(
                provider,
                driver,
                kubeconfig=kubeconfig,
                only=args.only,
                config=cfg,
                on_result=progress,
            )
            print()
            print(format_report(report))
            if args.junit_xml:
                write_junit_xml(report, args.junit_xml)
            return 0 if report.passed else 1

        if args.kubeconfig:
            return await go(args.kubeconfig)
        from ccm.testing.controlplane import ControlPlane

        cp = await asyncio.to_thread(lambda: ControlPlane().start())
        try:
            return await go(str(cp.kubeconfig_path))
        finally:
            await asyncio.to_thread(cp.stop)
    finally:
        await provider.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(_run(args))
    except (errors.ConfigError, OSError) as exc:
        print(f"ccm conformance: error: {exc}", file=sys.stderr)
        return 2
    except errors.CCMError as exc:
        print(f"ccm conformance: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
