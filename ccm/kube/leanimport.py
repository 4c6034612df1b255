"""Import the parts of kubernetes_asyncio ccm uses without loading its generated API.

``import kubernetes_asyncio.config`` runs ``kubernetes_asyncio/__init__.py``, which imports every
generated API class and model (~850 modules, ~37 MiB of resident memory, a few hundred ms of
start-up) although ccm only needs the configuration loaders, ``Configuration`` and the aiohttp
REST object. :func:`load` registers the two package modules (``kubernetes_asyncio`` and
``kubernetes_asyncio.client``) as *lazy* packages: their submodules import normally, and the first
access to any other attribute (``kubernetes_asyncio.client.CoreV1Api``,
``kubernetes_asyncio.watch``) runs the real package ``__init__`` into the same module object, so
code that wants the full library in the same process still gets it. If the library is already
imported, nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

__all__ = ["load"]

_PACKAGES = ("kubernetes_asyncio", "kubernetes_asyncio.client")
_lock = threading.RLock()


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__`` runs on the first access to a name it does not have yet."""

    _ccm_init_file: str
    _ccm_materialized: bool

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_ccm") or self.__dict__.get("_ccm_materialized", True):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        materialize(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def materialize(module: types.ModuleType) -> None:
    """Run the real package ``__init__`` of a lazy package into it (once)."""
    with _lock:
        if module.__dict__.get("_ccm_materialized", True):
            return
        module._ccm_materialized = True  # type: ignore[attr-defined]
        source = Path(module._ccm_init_file)
        code = compile(source.read_bytes(), str(source), "exec")
        exec(code, module.__dict__)  # the installed package's own __init__


class _ApiClientOnDemand:
    """Stands in for ``kubernetes_asyncio.client.ApiClient`` in the configuration loaders (which
    bind it at import but only call it in ``new_client_from_config``): constructing it builds the
    real class."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        package = sys.modules["kubernetes_asyncio.client"]
        materialize(package)
        return package.ApiClient(*args, **kwargs)


def load() -> tuple[Any, Any, Any, Any]:
    """``(Configuration, RESTClientObject module, load_kube_config, load_incluster_config)``."""
    with _lock:
        if "kubernetes_asyncio" not in sys.modules:
            spec = importlib.util.find_spec("kubernetes_asyncio")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("kubernetes_asyncio is not installed")
            root = Path(next(iter(spec.submodule_search_locations)))
            for name in _PACKAGES:
                directory = root.joinpath(*name.split(".")[1:])
                module = _LazyPackage(name)
                module.__path__ = [str(directory)]
                module.__package__ = name
                module.__file__ = str(directory / "__init__.py")
                module.__spec__ = importlib.util.spec_from_file_location(
                    name, module.__file__, submodule_search_locations=[str(directory)]
                )
                module._ccm_init_file = module.__file__
                module._ccm_materialized = False
                sys.modules[name] = module
            top = sys.modules["kubernetes_asyncio"]
            top.__dict__["client"] = sys.modules["kubernetes_asyncio.client"]
            configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
            client_pkg = sys.modules["kubernetes_asyncio.client"]
            client_pkg.__dict__.setdefault("Configuration", configuration.Configuration)
            client_pkg.__dict__.setdefault("ApiClient", _ApiClientOnDemand)
    configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
    rest = importlib.import_module("kubernetes_asyncio.client.rest")
    config = importlib.import_module("kubernetes_asyncio.config")
    return (
        configuration.Configuration,
        rest,
        config.load_kube_config,
        config.load_incluster_config,
    )
