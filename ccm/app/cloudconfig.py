"""Cloud config reload: notice that the ``--cloud-config`` file changed and act on it.

The file is usually a mounted Secret or ConfigMap: when it is rotated, the kubelet writes the new
contents to a fresh directory and swaps the ``..data`` symlink, so the path ccm was given shows
the new bytes at once, without any event ccm could watch for. :class:`ConfigWatcher` therefore
reads the file every ``--cloud-config-poll-interval`` seconds (time from :mod:`ccm.clock`) and
compares a hash of its contents. When they changed:

* a provider with the optional ``reload`` hook (:class:`ccm.cloudprovider.CloudProvider`) gets
  the new bytes; if it refuses them (raises), the old configuration keeps serving;
* a provider without it is checked by building a second provider from the new bytes with the same
  factory (closed at once); if that works, ccm gives the Lease up and exits 0 so that its
  DaemonSet restarts it with the new file; if it fails, the old configuration keeps serving.

A refused file is one warning line (naming the problem) and counts in
``ccm_cloud_config_reloads_total{result="refused"}``; it is not retried until the file changes
again. A file that cannot be read (a rotation caught half-way) is tried again at the next poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import Counter

from ccm import clock, logs, metrics
from ccm.cloudprovider import CloudProvider

__all__ = ["CLOUD_CONFIG_RELOADS", "ConfigWatcher"]

CLOUD_CONFIG_RELOADS = Counter(
    "ccm_cloud_config_reloads_total",
    "Changes of the --cloud-config file seen, by outcome: reloaded (by the provider's reload "
    "hook), restart (the provider has no hook: ccm exits 0 to be restarted), refused (the new "
    "file was rejected; the old configuration keeps serving).",
    ["result"],
    registry=metrics.REGISTRY,
)

_log = logging.getLogger("ccm.app.cloudconfig")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ConfigWatcher:
    """Polls ``path`` and hands a changed file to ``cloud`` (see the module docstring).

    ``check_new`` builds and closes a provider from new bytes, raising when the factory refuses
    them (used for a provider without a reload hook); ``restart`` is called once, when ccm must
    exit to pick the new file up.
    """

    def __init__(
        self,
        path: str,
        cloud: CloudProvider,
        *,
        check_new: Callable[[bytes], Awaitable[None]],
        restart: Callable[[], None],
        interval: float = 5.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"cloud config poll interval must be > 0, got {interval}")
        self.path = path
        self._cloud = cloud
        self._check_new = check_new
        self._restart = restart
        self.interval = interval
        self._digest: str | None = None

    async def prime(self) -> None:
        """Remember the current contents (the ones the provider was built from)."""
        data = await self._read()
        self._digest = None if data is None else _digest(data)

    async def run(self) -> None:
        """Poll until cancelled, or until a restart was asked for."""
        if self._digest is None:
            await self.prime()
        while True:
            await clock.sleep(self.interval)
            if await self.check() == "restart":
                return

    async def check(self) -> str:
        """One poll: ``unchanged``, ``unreadable``, ``reloaded``, ``refused`` or ``restart``."""
        data = await self._read()
        if data is None:
            return "unreadable"
        digest = _digest(data)
        if digest == self._digest:
            return "unchanged"
        self._digest = digest  # a refused file is not tried again until it changes
        with logs.bind(cloud_config=self.path):
            return await self._changed(data)

    async def _changed(self, data: bytes) -> str:
        hook = self._cloud.reload
        try:
            if hook is not None:
                await hook(data)
            else:
                await self._check_new(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            CLOUD_CONFIG_RELOADS.labels("refused").inc()
            _log.warning(
                "Refusing the changed cloud config %s, the old configuration keeps serving: %s",
                self.path,
                exc,
                extra=logs.err(exc),
            )
            return "refused"
        if hook is not None:
            CLOUD_CONFIG_RELOADS.labels("reloaded").inc()
            _log.info("Reloaded the changed cloud config %s", self.path)
            return "reloaded"
        CLOUD_CONFIG_RELOADS.labels("restart").inc()
        _log.info(
            "The cloud config %s changed and cloud provider %r cannot reload it: releasing the "
            "Lease and exiting to be restarted with it",
            self.path,
            self._cloud.provider_name,
        )
        self._restart()
        return "restart"

    async def _read(self) -> bytes | None:
        try:
            return await asyncio.to_thread(Path(self.path).read_bytes)
        except OSError as exc:
            _log.warning(
                "Cannot read the cloud config %s, trying again in %gs: %s",
                self.path,
                self.interval,
                exc.strerror or exc,
                extra=logs.err(exc),
            )
            return None
