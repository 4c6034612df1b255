"""Provider registry: entry-point discovery plus ``register()`` for embedding and tests.

Ports ``plugins.go``. A provider package declares::

    [project.entry-points."ccm.cloud_providers"]
    mycloud = "mycloud.provider:factory"

where ``factory(config: bytes | None) -> CloudProvider`` (sync or async). Only the named entry point
is loaded, so a broken plugin cannot break another.

Optional attributes of a factory extend the daemon (upstream providers do it with their own main,
``NewCloudControllerManagerCommand``):

* ``factory.flags``: a sequence of :class:`ccm.cloudprovider.flags.Flag`, all named
  ``--<provider name>-...``; ``ccm --cloud-provider=NAME --help`` shows them. Such a factory is
  called ``factory(config, flags=values)``, and ``InitContext.flags`` holds the same values.
* ``factory.controllers``: a sequence of ``ccm.app.manager.ControllerSpec`` run like ccm's own
  (named in ``--controllers``, started on the leader).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ccm.cloudprovider.interface import CloudProvider
from ccm.errors import ConfigError, UnknownProviderError

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProviderFactory",
    "cloud_config_path",
    "init_cloud_provider",
    "installed_providers",
    "is_cloud_provider",
    "load_factory",
    "register",
    "unregister",
]

ENTRY_POINT_GROUP = "ccm.cloud_providers"
#: Upstream's name meaning "the provider runs out of tree": meaningless for a CCM itself.
EXTERNAL = "external"

ProviderFactory = Callable[[bytes | None], CloudProvider | Awaitable[CloudProvider]]

_log = logging.getLogger("ccm.cloudprovider")
_lock = threading.Lock()
_registered: dict[str, ProviderFactory] = {}
# The --cloud-config path while a factory runs: ccm.cloudprovider.config names it in its errors
# (a factory only gets the file's bytes).
_config_path: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ccm_cloud_config_path", default=None
)


def cloud_config_path() -> str | None:
    """The ``--cloud-config`` path while :func:`init_cloud_provider` runs a provider factory
    (``None`` otherwise): for error messages that name the file."""
    return _config_path.get()


def register(name: str, factory: ProviderFactory) -> None:
    """Register ``factory`` under ``name``; registering a name twice is an error (as upstream)."""
    if not name:
        raise ValueError("a cloud provider needs a non-empty name")
    with _lock:
        if name in _registered:
            raise ValueError(f"cloud provider {name!r} was registered twice")
        _registered[name] = factory
    _log.debug("Registered cloud provider", extra={"provider": name})


def unregister(name: str) -> None:
    """Remove a provider registered with :func:`register` (for tests and embedding)."""
    with _lock:
        _registered.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def installed_providers() -> list[str]:
    """Names of every registered or installed provider, sorted."""
    with _lock:
        names = set(_registered)
    return sorted(names | set(_entry_points()))


def is_cloud_provider(name: str) -> bool:
    return name in installed_providers()


def _factory(name: str) -> ProviderFactory:
    with _lock:
        factory = _registered.get(name)
    if factory is not None:
        return factory
    ep = _entry_points().get(name)
    if ep is None:
        raise UnknownProviderError(name, installed_providers())
    try:
        loaded = ep.load()
    except Exception as exc:
        raise ConfigError(
            f'could not init cloud provider "{name}": cannot load entry point {ep.value}: {exc}'
        ) from exc
    if not callable(loaded):
        raise ConfigError(f'could not init cloud provider "{name}": {ep.value} is not callable')
    result: ProviderFactory = loaded
    return result


def load_factory(name: str) -> ProviderFactory:
    """The factory of provider ``name`` (registered, else its entry point, loaded now).

    Raises ConfigError (one line) when the name is empty, external or unknown, or the entry point
    cannot be loaded.
    """
    if not name:
        raise ConfigError("--cloud-provider cannot be empty")
    if name == EXTERNAL:
        raise ConfigError(
            "--cloud-provider=external names no provider: a cloud controller manager needs a "
            "real one "
            f"(installed: {', '.join(installed_providers()) or 'none'})"
        )
    return _factory(name)


async def init_cloud_provider(
    name: str, config_path: str | None, *, flags: Mapping[str, Any] | None = None
) -> CloudProvider:
    """Build provider ``name`` with the bytes of ``config_path`` (or None when no path is given).

    A factory that declares ``flags`` gets their values as ``flags=`` (an empty mapping when none
    are given). Raises ConfigError (one line) when the name is empty, external or unknown, the file
    cannot be read, or the factory fails.
    """
    factory = load_factory(name)
    config: bytes | None = None
    if config_path:
        try:
            config = await asyncio.to_thread(Path(config_path).read_bytes)
        except OSError as exc:
            raise ConfigError(
                f"couldn't open cloud provider configuration {config_path}: {exc.strerror or exc}"
            ) from exc
    token = _config_path.set(config_path or None)
    try:
        if getattr(factory, "flags", None):
            provider = factory(config, flags=MappingProxyType(dict(flags or {})))  # type: ignore[call-arg]
        else:
            provider = factory(config)
        if inspect.isawaitable(provider):
            provider = await provider
    except ConfigError as exc:
        raise ConfigError(f'could not init cloud provider "{name}": {exc}') from exc
    except Exception as exc:
        raise ConfigError(f'could not init cloud provider "{name}": {exc}') from exc
    finally:
        _config_path.reset(token)
    if not isinstance(provider, CloudProvider):
        raise ConfigError(
            f'could not init cloud provider "{name}": factory returned '
            f"{type(provider).__name__}, not a CloudProvider"
        )
    if not isinstance(provider.name, str) or not provider.name:
        # The name is the providerID scheme ("<name>://<id>") and the one the start-up log and
        # the conformance report use: it may differ from the entry-point name, never be empty.
        await provider.aclose()
        raise ConfigError(
            f'could not init cloud provider "{name}": {type(provider).__name__}.name is empty '
            "(set the class attribute name, the providerID scheme)"
        )
    return provider
