"""Time for ccm: the event loop's monotonic clock (so looptime can fast-forward it in tests) and
wall time.

Controllers take time only from here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

__all__ = ["monotonic", "now_rfc3339", "now_rfc3339_micro", "sleep", "utcnow", "wall"]


def monotonic() -> float:
    """Seconds on the running loop's clock (falls back to time.monotonic outside a loop)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds))


def wall() -> float:
    return time.time()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now_rfc3339() -> str:
    """``2026-11-25T16:00:00Z`` (Kubernetes ``metav1.Time``)."""
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339_micro() -> str:
    """``2026-11-25T16:00:00.123456Z`` (Kubernetes ``metav1.MicroTime``)."""
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
