"""The daemon behind the ``ccm`` command: parse flags, build the provider, run the controller
manager. The command itself, with its ``conformance`` and ``doctor`` subcommands, is :mod:`ccm.cli`.

Exit codes: 0 after a clean SIGTERM/SIGINT shutdown, 1 for bad configuration (one line on stderr, no
traceback) and when the leader Lease is lost (as upstream), 2 for an unexpected crash.

Embedding (upstream ``sample/basic_main.go`` and ``NewCloudControllerManagerCommand``): call
:func:`run` (or :func:`ccm.cli.run`, which adds the subcommands) with your own ``defaults`` (an
``Options``), ``prog`` name, controller map (ccm's ``default_controllers()`` plus your own
``ControllerSpec`` s), client names and ``flag_sets``, after registering your provider with
``ccm.cloudprovider.register``. A provider's factory may contribute flags and controllers too (its
``flags`` and ``controllers`` attributes, see :mod:`ccm.cloudprovider.registry`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import ccm
from ccm import logs
from ccm.app import cloudconfig, looplag, manager, options, upstreamflags
from ccm.cloudprovider import (
    BlockingPool,
    CloudProvider,
    FlagSet,
    init_cloud_provider,
    load_factory,
    use_pool,
)
from ccm.errors import CCMError, ConfigError
from ccm.leaderelection import LeadershipLostError

__all__ = ["provider_extensions", "run", "version"]

_log = logging.getLogger("ccm.app")


def version() -> str:
    """The installed version of the ``kube-ccm`` distribution."""
    return ccm.version()


async def _serve(
    opts: options.Options,
    *,
    controllers: dict[str, manager.ControllerSpec] | None,
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
    opts: options.Options,
    *,
    controllers: dict[str, manager.ControllerSpec] | None,
    client_names: dict[str, str] | None,
) -> int:
    cloud = await init_cloud_provider(
        opts.cloud_provider, opts.cloud_config or None, flags=opts.extension_flags
    )
    try:
        manager.check_untagged(cloud, opts)
        mgr = manager.ControllerManager(
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

        def restart() -> None:
            # The cloud config changed and the provider cannot reload it: stop as on SIGTERM (the
            # Lease is released) and exit 0, so the DaemonSet starts us with the new file.
            if not stop_signal:
                stop_signal.append(0)
                task.cancel()

        watcher = _config_watcher(opts, cloud, restart)
        _log.info("Version: %s", version())
        try:
            await _run_manager(mgr, watcher)
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


def _config_watcher(
    opts: options.Options, cloud: CloudProvider, restart: Callable[[], None]
) -> cloudconfig.ConfigWatcher | None:
    if not opts.cloud_config or opts.cloud_config_poll_interval <= 0:
        return None

    async def check_new(_data: bytes) -> None:
        # The factory reads the file itself: build a provider from it, and close it at once.
        fresh = await init_cloud_provider(
            opts.cloud_provider, opts.cloud_config, flags=opts.extension_flags
        )
        await fresh.aclose()

    return cloudconfig.ConfigWatcher(
        opts.cloud_config,
        cloud,
        check_new=check_new,
        restart=restart,
        interval=opts.cloud_config_poll_interval,
    )


async def _run_manager(
    mgr: manager.ControllerManager, watcher: cloudconfig.ConfigWatcher | None
) -> None:
    """Run the controller manager, and beside it the cloud config watcher (if any)."""
    if watcher is None:
        await mgr.run()
        return
    await watcher.prime()
    try:
        async with asyncio.TaskGroup() as tg:
            watching = tg.create_task(watcher.run(), name="cloud-config/watch")
            try:
                await mgr.run()
            finally:
                watching.cancel()
    except* Exception as group:
        # The TaskGroup wraps what mgr.run() raised (LeadershipLostError: exit 1, ...); the
        # caller decides on the exception itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


class _PreParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def provider_extensions(
    args: Sequence[str], defaults: options.Options | None = None
) -> tuple[list[FlagSet], list[manager.ControllerSpec]]:
    """The flags and controllers the factory of the provider named by ``--cloud-provider`` (or
    ``defaults``) contributes: its ``flags`` (one :class:`FlagSet` named after the provider) and
    ``controllers`` attributes. Raises ConfigError when the provider cannot be loaded, unless
    ``--help`` is asked."""
    pre = _PreParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--cloud-provider", default=(defaults or options.Options()).cloud_provider)
    try:
        name = str(pre.parse_known_args(list(args))[0].cloud_provider or "")
    except ConfigError:
        return [], []  # the full parser reports it
    if not name:
        return [], []
    try:
        factory = load_factory(name)
    except ConfigError:
        if "-h" in args or "--help" in args:
            return [], []
        raise
    flags = tuple(getattr(factory, "flags", None) or ())
    specs = list(getattr(factory, "controllers", None) or ())
    bad = [s for s in specs if not isinstance(s, manager.ControllerSpec)]
    if bad:
        raise ConfigError(
            f'cloud provider "{name}": controllers must be ControllerSpec, got {bad[0]!r}'
        )
    try:
        flag_sets = [FlagSet(name=name, flags=flags)] if flags else []
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'cloud provider "{name}": {exc}') from exc
    return flag_sets, specs


def _merge_controllers(
    base: Mapping[str, manager.ControllerSpec], added: Sequence[manager.ControllerSpec]
) -> dict[str, manager.ControllerSpec]:
    specs = dict(base)
    for spec in added:
        taken = set(specs) | {a for s in specs.values() for a in s.aliases}
        clash = sorted(taken & {spec.name, *spec.aliases})
        if clash:
            raise ConfigError(f'controller "{spec.name}": name or alias "{clash[0]}" is taken')
        specs[spec.name] = spec
    return specs


def run(
    argv: list[str] | None = None,
    *,
    prog: str = "ccm",
    defaults: options.Options | None = None,
    controllers: dict[str, manager.ControllerSpec] | None = None,
    client_names: dict[str, str] | None = None,
    flag_sets: Sequence[FlagSet] = (),
) -> int:
    """Run the daemon with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    ``controllers`` replaces ccm's controller map (start from
    ``ccm.app.manager.default_controllers()`` to add to it); ``flag_sets`` adds flags, shown in
    ``--help`` and handed to the controllers (``ControllerContext.flags``) and the provider
    (``InitContext.flags``). The provider's factory may add both as well.

    Raises the cyclic GC's young threshold first (:func:`ccm.app.looplag.raise_gen0_threshold`):
    the provider's imports, the initial LISTs and the first writes allocate heavily.
    """
    looplag.raise_gen0_threshold()
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--version" or a.startswith("--version=") for a in args):
        print(f"{prog} {version()}")
        return 0
    try:
        provider_flags, provider_specs = provider_extensions(args, defaults)
        specs = _merge_controllers(
            controllers if controllers is not None else manager.default_controllers(),
            provider_specs,
        )
        opts = options.parse_args(
            args,
            prog=prog,
            defaults=defaults,
            controllers=options.ControllerCatalog.of(specs.values()),
            flag_sets=[*flag_sets, *provider_flags],
        )
        logs.configure(opts.logging_format, opts.verbosity)
        upstreamflags.log_ignored(opts.ignored_upstream_flags)
        return asyncio.run(_serve(opts, controllers=specs, client_names=client_names))
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
