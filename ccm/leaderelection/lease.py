"""The Lease as a lock (client-go ``resourcelock/leaselock.go``) and one attempt on it: take or
renew it (``tryAcquireOrRenew``) or give it up (``release``), remembering what we last observed
of it and when, by our own clock.

Expiry is judged by *our* clock: the Lease is expired when ``leaseDurationSeconds`` have passed
since we last saw its record change. The remote ``renewTime`` is never compared with the local
clock, so clock skew between hosts does not matter.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from ccm import clock, metrics
from ccm.errors import ConflictError, NotFoundError
from ccm.kube import client as kclient
from ccm.leaderelection.config import LEASE_API_VERSION, LeaderElectionConfig, LeaseClient
from ccm.logs import v

__all__ = ["LeaseLock"]

_log = logging.getLogger("ccm.leaderelection")


class LeaseLock:
    """One Lease, tried by one identity: what we last read or wrote of it and when."""

    def __init__(self, client: LeaseClient, config: LeaderElectionConfig) -> None:
        self._client = client
        self._config = config
        self.desc = f"{config.namespace}/{config.name}"
        #: The last Lease object read or written (its resourceVersion guards our PUTs).
        self.lease: dict[str, Any] | None = None
        # The last observed spec and the loop time at which we observed it change.
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0
        #: Loop time at which the last successful acquire/renew request started.
        self.last_renew: float | None = None
        self._slowpath = metrics.LEADER_ELECTION_SLOWPATH_TOTAL.labels(name=config.name)

    @property
    def holder(self) -> str:
        """The holder in the last observed record (``""`` if unknown or released)."""
        return str((self._observed_spec or {}).get("holderIdentity") or "")

    @property
    def is_us(self) -> bool:
        """Whether the last observed record names us."""
        return self.holder == self._config.identity

    @property
    def resource_version(self) -> str:
        """The resourceVersion of the last Lease read or written (``""`` before any)."""
        return str(((self.lease or {}).get("metadata") or {}).get("resourceVersion") or "")

    def valid(self, now: float) -> bool:
        """Whether the record we last observed has not yet expired at loop time ``now``."""
        return self._observed_time + self._config.lease_duration > now

    async def try_acquire_or_renew(self) -> bool:
        """One ``tryAcquireOrRenew``: True when the Lease now names us. Failures of the apiserver
        are logged and count as False."""
        cfg = self._config
        started = clock.monotonic()
        now = clock.now_rfc3339_micro()
        record: dict[str, Any] = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": cfg.lease_duration_seconds,
            "acquireTime": now,
            "renewTime": now,
        }

        # 1. Fast path: the leader updates optimistically from the record it wrote last.
        if self.is_us and self.lease is not None and self.valid(started):
            assert self._observed_spec is not None
            record["acquireTime"] = self._observed_spec.get("acquireTime", now)
            record["leaseTransitions"] = self._observed_spec.get("leaseTransitions", 0)
            try:
                written = await self._replace(record)
            except Exception as exc:
                _log.log(
                    v(2) if isinstance(exc, ConflictError) else logging.WARNING,
                    "failed to update lease %s optimistically: %s, falling back to slow path",
                    self.desc,
                    exc,
                )
            else:
                self._observe_write(written, started)
                return True

        # 2. Read the Lease, or create it.
        try:
            lease = await self._client.get(kclient.LEASES, cfg.name, namespace=cfg.namespace)
        except NotFoundError:
            record["leaseTransitions"] = 0
            body = {
                "apiVersion": LEASE_API_VERSION,
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": record,
            }
            try:
                created = await self._client.create(kclient.LEASES, body, namespace=cfg.namespace)
            except Exception as exc:
                _log.log(
                    v(2) if isinstance(exc, ConflictError) else logging.WARNING,
                    "error initially creating lease %s: %s",
                    self.desc,
                    exc,
                )
                return False
            self._observe_write(created, started)
            return True
        except Exception as exc:
            _log.warning("error retrieving lease %s: %s", self.desc, exc)
            return False

        # 3. Check the holder and, by our own observation clock, the expiry.
        self._observe_read(lease)
        spec = self._observed_spec or {}
        holder = self.holder
        duration = _int(spec.get("leaseDurationSeconds"))
        expired = self._observed_time + duration < clock.monotonic()
        if holder and expired and holder != cfg.identity:
            _log.info("lock has expired: %s (held by %s)", self.desc, holder)
        if holder and not expired and not self.is_us:
            _log.log(v(4), "lock %s is held by %s and has not yet expired", self.desc, holder)
            return False

        # 4. Take over or renew.
        if self.is_us:
            record["acquireTime"] = spec.get("acquireTime", now)
            record["leaseTransitions"] = _int(spec.get("leaseTransitions"))
            self._slowpath.inc()
        else:
            record["leaseTransitions"] = _int(spec.get("leaseTransitions")) + 1
        try:
            written = await self._replace(record)
        except Exception as exc:
            _log.log(
                v(2) if isinstance(exc, ConflictError) else logging.WARNING,
                "failed to update lease %s: %s",
                self.desc,
                exc,
            )
            return False
        self._observe_write(written, started)
        return True

    async def release(self) -> bool:
        """Give the Lease up if it still names us (client-go ``release``): ``holderIdentity``
        empty, ``leaseDurationSeconds`` 1."""
        cfg = self._config
        try:
            lease = await self._client.get(kclient.LEASES, cfg.name, namespace=cfg.namespace)
        except Exception as exc:
            _log.error("failed to get lease %s to release it: %s", self.desc, exc)
            return False
        self._observe_read(lease)
        if not self.is_us:
            return True
        now = clock.now_rfc3339_micro()
        record = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": _int((self._observed_spec or {}).get("leaseTransitions")),
        }
        started = clock.monotonic()
        try:
            written = await self._replace(record)
        except Exception as exc:
            _log.error("failed to release lease %s: %s", self.desc, exc)
            return False
        self._observe_write(written, started)
        _log.info("released lease %s", self.desc)
        return True

    async def _replace(self, record: dict[str, Any]) -> dict[str, Any]:
        """PUT ``record`` over the last Lease we saw; its resourceVersion makes stale writes 409."""
        assert self.lease is not None
        body = copy.deepcopy(self.lease)
        body["spec"] = {**(body.get("spec") or {}), **record}
        return await self._client.replace(
            kclient.LEASES, self._config.name, body, namespace=self._config.namespace
        )

    def _observe_read(self, lease: dict[str, Any]) -> None:
        # client-go compares the raw record: any change restarts the expiry clock.
        self.lease = lease
        spec = dict(lease.get("spec") or {})
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_time = clock.monotonic()

    def _observe_write(self, lease: dict[str, Any], started: float) -> None:
        # Our own write counts from when the request started: the server stored it no earlier, so
        # no candidate can consider the lease expired before started + lease duration.
        self.lease = lease
        self._observed_spec = dict(lease.get("spec") or {})
        self._observed_time = started
        if self.is_us:
            self.last_renew = started


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
