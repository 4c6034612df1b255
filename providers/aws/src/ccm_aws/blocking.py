"""``run_blocking``: the framework's bounded thread pool for blocking SDK calls.

Every boto3 call of the provider goes through :func:`run_blocking` (never inside a coroutine).
``ccm.cloudprovider.run_blocking`` is the framework's; until the installed ccm offers it, the
provider falls back to asyncio's default executor (``asyncio.to_thread``), which is bounded too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_blocking"]

T = TypeVar("T")

try:
    from ccm.cloudprovider import run_blocking as _framework_run_blocking  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installed ccm
    _framework_run_blocking = None


async def run_blocking(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the framework's thread pool and return its result."""
    if _framework_run_blocking is not None:
        result: T = await _framework_run_blocking(fn, *args, **kwargs)
        return result
    return await asyncio.to_thread(fn, *args, **kwargs)
