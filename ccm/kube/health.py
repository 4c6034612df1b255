"""Waiting for the apiserver to be healthy before the controllers start.

Ports upstream ``WaitForAPIServer`` (``k8s.io/controller-manager/app/helper.go``), which the CCM
calls with a 10 s bound before it initializes the cloud provider and starts its controllers: poll
the apiserver's ``/healthz`` every second until it answers ``ok``; if it never does within the
bound, start-up fails (upstream ``Failed to wait for apiserver being healthy``, a fatal log line).
Without this an unreachable apiserver leaves the daemon running forever with caches that never
fill.
"""

from __future__ import annotations

import asyncio
import logging

from ccm import clock, errors, logs
from ccm.kube import client as kclient

__all__ = ["APISERVER_WAIT_TIMEOUT", "ApiServerUnhealthyError", "wait_for_apiserver"]

_log = logging.getLogger(__name__)

#: Upstream ``startControllers`` waits this long for the apiserver's ``/healthz``.
APISERVER_WAIT_TIMEOUT = 10.0


class ApiServerUnhealthyError(errors.KubeError):
    """The apiserver did not answer ``/healthz`` with ``ok`` within the start-up bound."""


async def wait_for_apiserver(
    client: kclient.KubeClient,
    *,
    timeout: float = APISERVER_WAIT_TIMEOUT,  # noqa: ASYNC109 - the bound is the point
    interval: float = 1.0,
) -> None:
    """Return once ``GET /healthz`` answers ``ok``; raise :class:`ApiServerUnhealthyError` naming
    the last failure when ``timeout`` seconds pass first. Each attempt is bounded by what remains
    of ``timeout``, so a black-holed connection cannot stretch the wait."""
    deadline = clock.monotonic() + timeout
    last = "no answer"
    while True:
        remaining = deadline - clock.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                body = await client.request("GET", "/healthz")
        except TimeoutError:
            if last == "no answer":  # else keep the error an earlier attempt got
                last = "no answer in time"
        except errors.KubeError as exc:
            last = str(exc)
        else:
            if body == "ok":
                return
            last = f"/healthz answered {str(body)[:200]!r}"
        _log.log(logs.v(4), "apiserver %s is not healthy yet: %s", client.host, last)
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            raise ApiServerUnhealthyError(
                f"Failed to wait for apiserver being healthy: {client.host}/healthz did not "
                f"answer ok within {timeout:g}s (last error: {last})"
            )
        await clock.sleep(min(interval, remaining))
