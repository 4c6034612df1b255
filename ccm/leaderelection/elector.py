"""The elector (client-go ``tools/leaderelection/leaderelection.go``) and its watchdog
(``healthzadaptor.go``): campaign for the Lease, run ``leading()`` while renewing it, step down
and release it; the write gates that fence a leader whose renewal lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ccm import clock, fencing, metrics, wellknown
from ccm.errors import CCMError, ForbiddenError
from ccm.kube import client as kclient
from ccm.leaderelection.config import (
    EVENT_REASON_LEADER_ELECTION,
    HEALTHZ_TOLERANCE,
    JITTER_FACTOR,
    LEASE_API_VERSION,
    EventSink,
    LeaderElectionConfig,
    LeadershipLostError,
    LeaseClient,
)
from ccm.leaderelection.lease import LeaseLock
from ccm.logs import v

__all__ = ["LeaderElector"]

_log = logging.getLogger("ccm.leaderelection")


class LeaderElector:
    """Campaigns for one Lease and runs ``leading()`` while it holds it.

    One elector serves one :meth:`run` at a time. ``on_new_leader`` is called (synchronously, on
    the loop) with the identity of every new non-empty holder it observes, ourselves included.
    With a ``recorder``, Normal Events ``<identity> became leader`` and ``<identity> stopped
    leading`` (reason ``LeaderElection``) are recorded on the Lease, as upstream.
    """

    def __init__(
        self,
        client: LeaseClient,
        config: LeaderElectionConfig,
        *,
        on_new_leader: Callable[[str], None] | None = None,
        recorder: EventSink | None = None,
        healthz_tolerance: float = HEALTHZ_TOLERANCE,
    ) -> None:
        self._client = client
        self._recorder = recorder
        self._config = config
        self._on_new_leader = on_new_leader
        self._healthz_tolerance = healthz_tolerance
        self._lock = LeaseLock(client, config)
        self._desc = self._lock.desc
        self._reported_leader = ""
        self._leading = False  # we hold the Lease and leading() should be running
        self._holding = False  # from acquisition until leading() has actually stopped
        self._running = False
        # Set by check_lease when it refuses a write: the renew loop steps down at once.
        self._lapsed = asyncio.Event()
        self._watch_release = True  # cleared after a 403: the RBAC does not allow the watch
        self._master_status = metrics.LEADER_ELECTION_MASTER_STATUS.labels(name=config.name)
        self._master_status.set(0)

    @property
    def config(self) -> LeaderElectionConfig:
        return self._config

    @property
    def is_leader(self) -> bool:
        """True while we hold the Lease and ``leading()`` runs."""
        return self._leading

    @property
    def leader_identity(self) -> str | None:
        """The holder in the last observed record (``None`` if unknown or released)."""
        return self._lock.holder or None

    def healthz_check(self) -> str | None:
        """The ``leaderElection`` health check (upstream ``HealthzAdaptor``).

        Healthy unless we hold (or are still winding down) the leadership and the last successful
        renewal started more than ``lease_duration`` + tolerance ago: the renew loop or the shutdown
        of ``leading()`` is stuck, so the kubelet should restart us.
        """
        if not self._holding or self._lock.last_renew is None:
            return None
        if clock.monotonic() - self._lock.last_renew > (
            self._config.lease_duration + self._healthz_tolerance
        ):
            return f"failed election to renew leadership on lease {self._config.name}"
        return None

    def check_lease(self) -> float:
        """The write gate (:mod:`ccm.fencing`): if we lead and the last successful renewal started
        less than ``renew_deadline`` ago, return the moment (``ccm.clock.monotonic``) it will be
        ``renew_deadline`` old; else raise :class:`ccm.fencing.NotLeaderError` and make the leader
        step down.

        The renew loop gives up at the same moment, so a write this allows is one the leader would
        have made anyway; the ``lease_duration - renew_deadline`` left covers the request's way to
        the apiserver before any candidate may take over.
        """
        if self._leading and self._lock.last_renew is not None:
            age = clock.monotonic() - self._lock.last_renew
            if age < self._config.renew_deadline:
                return self._lock.last_renew + self._config.renew_deadline
            reason = (
                f"lease {self._desc} was last renewed {age:.1f}s ago "
                f"(renew deadline {self._config.renew_deadline:g}s)"
            )
        else:
            reason = f"not leading on lease {self._desc}"
        self._lapsed.set()
        raise fencing.NotLeaderError(f"write refused: {reason}")

    def check_events(self) -> float:
        """The write gate (:mod:`ccm.fencing`) of the elector's own Events (``became leader``,
        ``stopped leading``), sent by a recorder of their own: like :meth:`check_lease`, but also
        once ``leading()`` has stopped, as long as the Lease we last saw names us and was renewed
        less than ``renew_deadline`` ago. A refusal drops the Event; it does not step down.
        """
        if self._lock.is_us and self._lock.last_renew is not None:
            age = clock.monotonic() - self._lock.last_renew
            if age < self._config.renew_deadline:
                return self._lock.last_renew + self._config.renew_deadline
            reason = (
                f"lease {self._desc} was last renewed {age:.1f}s ago "
                f"(renew deadline {self._config.renew_deadline:g}s)"
            )
        else:
            reason = f"not holding lease {self._desc}"
        raise fencing.NotLeaderError(f"event refused: {reason}")

    async def run(self, leading: Callable[[], Awaitable[None]]) -> None:
        """Acquire the Lease, then run ``leading()`` while renewing it.

        Returns when ``leading()`` returns (re-raises what it raises), raises
        :class:`LeadershipLostError` when the Lease is lost, and re-raises ``CancelledError`` when
        cancelled. In each case ``leading()`` has stopped and (with ``release_on_cancel``) the
        Lease was released before this returns.
        """
        if self._running:
            raise RuntimeError("LeaderElector.run() is already running")
        self._running = True
        try:
            await self._acquire()
            await self._lead(leading)
        finally:
            self._running = False

    # -- phases --------------------------------------------------------------------------------

    async def _acquire(self) -> None:
        cfg = self._config
        _log.info("attempting to acquire leader lease %s...", self._desc)
        released = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    acquired = await self._attempt(within=cfg.renew_deadline)
                except asyncio.CancelledError:
                    # Cancelled mid-request: our create/update may have reached the apiserver.
                    # Give the Lease back if it names us (one GET otherwise) rather than leave a
                    # standby waiting out a lease nobody renews.
                    if cfg.release_on_cancel:
                        await self._release_bounded()
                    raise
                self._maybe_report_transition()
                if acquired:
                    _log.info("successfully acquired lease %s", self._desc)
                    return
                _log.log(v(4), "failed to acquire lease %s", self._desc)
                released.clear()
                if watcher is None or watcher.done():
                    watcher = self._start_release_watch(released)
                delay = cfg.retry_period * (1.0 + random.random() * JITTER_FACTOR)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await released.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    def _start_release_watch(self, released: asyncio.Event) -> asyncio.Task[None] | None:
        """Watch the Lease from the version we last read; set ``released`` when its holder gives
        it up (empty ``holderIdentity``) or it is deleted. Only a client with ``watch`` (like
        :meth:`ccm.kube.client.KubeClient.watch`) can; others poll."""
        watch = getattr(self._client, "watch", None)
        rv = self._lock.resource_version
        if not self._watch_release or watch is None or not rv:
            return None
        return asyncio.create_task(
            self._watch_for_release(watch, rv, released), name="leader-election/watch"
        )

    async def _watch_for_release(
        self, watch: Callable[..., AsyncIterator[dict[str, Any]]], rv: str, released: asyncio.Event
    ) -> None:
        cfg = self._config
        events = watch(
            kclient.LEASES,
            resource_version=rv,
            namespace=cfg.namespace,
            field_selector=f"metadata.name={cfg.name}",
            timeout_seconds=max(60, int(cfg.lease_duration * 4)),
        )
        try:
            async for event in events:
                spec = (event.get("object") or {}).get("spec") or {}
                if event.get("type") == "DELETED" or (
                    event.get("type") == "MODIFIED" and not spec.get("holderIdentity")
                ):
                    _log.log(v(2), "lease %s was released; trying to acquire it", self._desc)
                    released.set()
        except ForbiddenError as exc:
            self._watch_release = False
            _log.info("cannot watch lease %s (%s); polling every retry period", self._desc, exc)
        except CCMError as exc:  # expired version, broken connection: the next failure restarts it
            _log.log(v(4), "watch of lease %s ended: %s", self._desc, exc)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _lead(self, leading: Callable[[], Awaitable[None]]) -> None:
        self._lapsed.clear()
        self._leading = self._holding = True
        self._master_status.set(1)
        self._record_event("became leader")

        async def run_leading() -> None:
            await leading()

        prefix = f"leaderelection/{self._config.name}"
        leading_task = asyncio.create_task(run_leading(), name=f"{prefix}/leading")
        renew_task = asyncio.create_task(self._renew_loop(), name=f"{prefix}/renew")
        lost: str | None = None
        leading_ended = False
        try:
            await asyncio.wait({leading_task, renew_task}, return_when=asyncio.FIRST_COMPLETED)
            leading_ended = leading_task.done()
            if not leading_ended and renew_task.exception() is None:
                # The renew loop returns only when leadership is lost.
                lost = renew_task.result()
                self._leading = False
                self._master_status.set(0)
                _log.error("failed to renew lease %s: %s", self._desc, lost)
        finally:
            # Cancelled (SIGTERM), lost, leading() ended, or a bug: stop leading() first, then
            # give the Lease up so that a standby takes over at once.
            await self._stop_leading(leading_task, renew_task, lost=lost is not None)
        if lost is not None:
            raise LeadershipLostError(self._config.namespace, self._config.name, lost)
        if not leading_ended:
            renew_task.result()  # a bug in the renew loop: raise it
        elif not renew_task.cancelled() and (exc := renew_task.exception()) is not None:
            _log.error("leader election renew loop of %s failed", self._desc, exc_info=exc)
        leading_task.result()

    async def _renew_loop(self) -> str:
        """Renew every ``retry_period``; return the reason once leadership is lost."""
        cfg = self._config
        while True:
            await self._sleep_unless_lapsed(cfg.retry_period)
            assert self._lock.last_renew is not None
            deadline = self._lock.last_renew + cfg.renew_deadline
            while True:
                remaining = deadline - clock.monotonic()
                if remaining <= 0 or self._lapsed.is_set():
                    return (
                        f"no successful renewal within the renew deadline ({cfg.renew_deadline}s)"
                    )
                renewed = await self._attempt(within=remaining)
                self._maybe_report_transition()
                if renewed:
                    _log.log(v(5), "successfully renewed lease %s", self._desc)
                    break
                holder = self._lock.holder
                if holder and holder != cfg.identity:
                    # Someone else took the Lease: stop now rather than at the deadline, so that
                    # two leaders overlap as briefly as possible.
                    return f"the lease is held by {holder}"
                await self._sleep_unless_lapsed(
                    min(cfg.retry_period, max(0.0, deadline - clock.monotonic()))
                )

    async def _sleep_unless_lapsed(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`check_lease` refused a write meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._lapsed.wait()

    async def _stop_leading(
        self, leading_task: asyncio.Task[None], renew_task: asyncio.Task[str], *, lost: bool
    ) -> None:
        renew_task.cancel()
        cancelled_by_us = not leading_task.done()
        leading_task.cancel()
        try:
            await asyncio.wait({leading_task, renew_task})
        finally:
            self._leading = self._holding = False
            self._master_status.set(0)
        if not lost:  # a lost Lease belongs to someone else: no write, not even an Event
            self._record_event("stopped leading")
        if cancelled_by_us and not leading_task.cancelled():
            # leading() raised while being cancelled; nobody else will see it.
            exc = leading_task.exception()
            if exc is not None:
                _log.error("leading() of %s failed while stopping", self._desc, exc_info=exc)
        if self._config.release_on_cancel:
            await self._release_bounded()

    async def _release_bounded(self) -> None:
        """Release the Lease, giving up after ``renew_deadline`` (client-go's release timeout).

        A separate task with ``asyncio.wait`` rather than ``asyncio.timeout``: this runs while the
        calling task is being cancelled, which ``asyncio.timeout`` mishandles on Python 3.11.
        """
        task = asyncio.create_task(
            self._lock.release(), name=f"leaderelection/{self._config.name}/release"
        )
        try:
            done, _ = await asyncio.wait({task}, timeout=self._config.renew_deadline)
        finally:
            if not task.done():
                task.cancel()
        if not done:
            await asyncio.wait({task})
            _log.error(
                "failed to release lease %s: timed out after %ss",
                self._desc,
                self._config.renew_deadline,
            )

    # -- one attempt -----------------------------------------------------------------------------

    async def _attempt(self, *, within: float) -> bool:
        """One ``tryAcquireOrRenew``, bounded in time; any failure is logged and counts as False."""
        try:
            async with asyncio.timeout(within):
                return await self._lock.try_acquire_or_renew()
        except TimeoutError:
            _log.warning("acquiring or renewing lease %s timed out after %.3gs", self._desc, within)
        except Exception:
            _log.exception("unexpected error acquiring or renewing lease %s", self._desc)
        return False

    # -- helpers ---------------------------------------------------------------------------------

    def _record_event(self, what: str) -> None:
        if self._recorder is None or self._lock.lease is None:
            return
        subject = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": self._lock.lease.get("metadata") or {},
        }
        try:
            self._recorder.event(
                subject,
                wellknown.EVENT_NORMAL,
                EVENT_REASON_LEADER_ELECTION,
                f"{self._config.identity} {what}",
            )
        except Exception:
            _log.exception("recording a leader election event failed")

    def _maybe_report_transition(self) -> None:
        holder = self._lock.holder
        if holder == self._reported_leader:
            return
        self._reported_leader = holder
        if not holder:
            return
        if holder != self._config.identity:
            _log.info("new leader elected: %s", holder)
        if self._on_new_leader is not None:
            try:
                self._on_new_leader(holder)
            except Exception:
                _log.exception("on_new_leader callback failed")
