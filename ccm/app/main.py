"""The ``ccm`` command: parse flags, build the provider, run the controller manager.

Exit codes: 0 after a clean SIGTERM/SIGINT shutdown, 1 for bad configuration (one line on stderr, no
traceback) and when the leader Lease is lost (as upstream), 2 for an unexpected crash.

Embedding (upstream ``sample/basic_main.go``): call :func:`run` with your own ``defaults`` (an
``Options``),
``prog`` name, controller map and client names, after registering your provider with
``ccm.cloudprovider.register``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from importlib import metadata

from ccm import logs
from ccm.app import manager as managermod
from ccm.app import options as optionsmod
from ccm.cloudprovider import BlockingPool, init_cloud_provider, use_pool
from ccm.errors import CCMError, ConfigError
from ccm.leaderelection import LeadershipLostError

__all__ = ["main", "run", "version"]

_log = logging.getLogger("ccm.app")


def version() -> str:
    try:
        return metadata.version("ccm")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0+unknown"


async def _serve(
    opts: optionsmod.Options,
    *,
    controllers: dict[str, managermod.ControllerSpec] | None,
    client_names: dict[str, str] | None,
) -> int:
    """Run the daemon inside its pool for blocking SDK calls: created before the provider (whose
    factory may already call ``run_blocking``), shut down after the provider's ``aclose``."""
    pool = BlockingPool(opts.cloud_thread_count(), name="ccm-cloud")
    try:
        with use_pool(pool):
            return await _serve_provider(opts, controllers=controllers, client_names=client_names)
    finally:
        await pool.aclose(opts.shutdown_grace_period)


async def _serve_provider(
    opts: optionsmod.Options,
    *,
    controllers: dict[str, managermod.ControllerSpec] | None,
    client_names: dict[str, str] | None,
) -> int:
    cloud = await init_cloud_provider(opts.cloud_provider, opts.cloud_config or None)
    try:
        managermod.check_untagged(cloud, opts)
        mgr = managermod.ControllerManager(
            opts, cloud, controllers=controllers, client_names=client_names
        )
        task = asyncio.current_task()
        assert task is not None
        stop_signal: list[int] = []
        loop = asyncio.get_running_loop()

        def on_signal(sig: int) -> None:
            if not stop_signal:
                _log.info("Received %s, shutting down", signal.Signals(sig).name)
                stop_signal.append(sig)
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        _log.info("Version: %s", version())
        try:
            await mgr.run()
        except asyncio.CancelledError:
            if not stop_signal:
                raise
            task.uncancel()
            _log.info("Shut down cleanly")
            return 0
        except LeadershipLostError:
            _log.error("leaderelection lost")
            return 1
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0
    finally:
        await cloud.aclose()


def run(
    argv: list[str] | None = None,
    *,
    prog: str = "ccm",
    defaults: optionsmod.Options | None = None,
    controllers: dict[str, managermod.ControllerSpec] | None = None,
    client_names: dict[str, str] | None = None,
) -> int:
    """Run the daemon with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "conformance":
        # ccm.app must not import ccm.testing (import-linter layers): load the suite lazily.
        cli = importlib.import_module("ccm.testing.conformance.cli")
        code: int = cli.main(args[1:])
        return code
    if "--version" in args:
        print(f"{prog} {version()}")
        return 0
    try:
        opts = optionsmod.parse_args(args, prog=prog, defaults=defaults)
        logs.configure(opts.logging_format, opts.verbosity)
        return asyncio.run(_serve(opts, controllers=controllers, client_names=client_names))
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except CCMError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:
        logging.getLogger("ccm.app").exception("ccm crashed")
        return 2


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
