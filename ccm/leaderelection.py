"""Lease-based leader election on a ``coordination.k8s.io/v1`` Lease.

Ports the behaviour of client-go ``tools/leaderelection/leaderelection.go`` (the elector),
``tools/leaderelection/resourcelock/leaselock.go`` (the Lease as a lock) and
``tools/leaderelection/healthzadaptor.go`` (the watchdog), as the upstream CCM uses them from
``app/controllermanager.go``:

* A candidate tries to take the Lease every ``retry_period`` (with client-go's jitter factor 1.2).
  It takes it when the Lease is absent, already names us, has an empty ``holderIdentity``
  (released, which makes a hand-over after SIGTERM immediate), or has expired. Expiry is judged by
  *our* clock: the Lease is expired when ``leaseDurationSeconds`` have passed since we last saw its
  record change. The remote ``renewTime`` is never compared with the local clock, so clock skew
  between hosts does not matter.
* Beyond client-go, a candidate that failed also watches the Lease (a single-object watch,
  ``fieldSelector=metadata.name=<name>``) and tries again as soon as the holder releases or deletes
  it, so a hand-over after the leader's SIGTERM takes one round trip instead of a jittered retry
  period (up to 4.4 s at the defaults). Without ``watch`` permission (403) it falls back to
  polling only.
* The leader runs ``leading()`` as a task and renews every ``retry_period``. If no renewal succeeds
  for ``renew_deadline`` (counted from the start of the last successful renewal, so the leader
  gives up before any candidate can take over), or if a renewal finds another live holder,
  leadership is lost: ``leading()`` is cancelled and :class:`LeadershipLostError` is raised. The
  upstream CCM exits with status 1 at that point.
* When ``leading()`` ends, or ``run()`` is cancelled (SIGTERM), the Lease is released (with
  ``release_on_cancel``): ``holderIdentity`` empty, ``leaseDurationSeconds`` 1, as client-go does.
* Fencing (client-go's leader check, made a gate): :meth:`LeaderElector.check_lease`, installed
  with :func:`ccm.fencing.guard` around the leader's code, refuses every write once the last
  successful renewal started ``renew_deadline`` or more ago (or leading stopped). The loop clock is
  monotonic and keeps running while the process is stopped, so a leader paused past its lease
  (SIGSTOP) and resumed refuses the write it was about to make, even when its renew loop has not
  run yet, and steps down at once: a replica that lost the Lease writes nothing more, not even
  its ``stopped leading`` Event.

Time comes only from the running loop (:mod:`ccm.clock`), so tests fast-forward it with looptime.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ccm import clock, fencing, metrics, wellknown
from ccm.errors import CCMError, ConflictError, ForbiddenError, NotFoundError
from ccm.kube import client as kube_client
from ccm.logs import v

__all__ = [
    "EVENT_REASON_LEADER_ELECTION",
    "HEALTHZ_TOLERANCE",
    "JITTER_FACTOR",
    "EventSink",
    "LeaderElectionConfig",
    "LeaderElector",
    "LeadershipLostError",
    "LeaseClient",
    "default_identity",
]

_log = logging.getLogger(__name__)

#: client-go ``JitterFactor``: acquisition retries wait ``retry_period * (1 + rand * 1.2)``.
JITTER_FACTOR = 1.2
#: How long past the lease duration the leader may go without a renewal before ``/healthz`` fails
#: (upstream ``app/controllermanager.go``: ``NewLeaderHealthzAdaptor(20 * time.Second)``).
HEALTHZ_TOLERANCE = 20.0

#: Reason of the Events recorded on the Lease (client-go ``LeaseLock.RecordEvent``).
EVENT_REASON_LEADER_ELECTION = "LeaderElection"

_LEASE_API_VERSION = "coordination.k8s.io/v1"


def default_identity() -> str:
    """``<hostname>_<uuid4>``, the identity upstream controller managers use."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderElectionConfig:
    """Where the Lease lives, who we are, and the three timings (seconds) of client-go."""

    identity: str
    namespace: str = wellknown.DEFAULT_LEADER_ELECTION_NAMESPACE
    name: str = wellknown.DEFAULT_LEADER_ELECTION_NAME
    #: How long candidates wait after last observing a change of the record before taking over.
    lease_duration: float = 15.0
    #: How long the leader keeps retrying to renew before it gives up leadership.
    renew_deadline: float = 10.0
    #: How long to wait between attempts to acquire or renew.
    retry_period: float = 2.0
    #: Release the Lease when ``leading()`` ends or ``run()`` is cancelled.
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        # Same checks, order and wording as client-go NewLeaderElector.
        for field in ("lease_duration", "renew_deadline", "retry_period"):
            value = getattr(self, field)
            if not math.isfinite(value):
                raise ValueError(f"{_camel(field)} must be a finite number of seconds")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        for field in ("lease_duration", "renew_deadline", "retry_period"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{_camel(field)} must be greater than zero")
        if not self.identity:
            raise ValueError("Lock identity is empty")
        if not self.name or not self.namespace:
            raise ValueError("lease name and namespace must not be empty")

    @property
    def lease_duration_seconds(self) -> int:
        """``spec.leaseDurationSeconds`` we write: whole seconds, rounded up so that candidates
        never wait less than we believe our lease lasts."""
        return max(1, math.ceil(self.lease_duration))


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


class LeadershipLostError(CCMError):
    """The leader could not renew its Lease (or found another holder) and stopped leading."""

    def __init__(self, namespace: str, name: str, reason: str) -> None:
        super().__init__(f"leader election lost on lease {namespace}/{name}: {reason}")
        self.namespace = namespace
        self.name = name
        self.reason = reason


class LeaseClient(Protocol):
    """The part of :class:`ccm.kube.client.KubeClient` the elector uses (the fake fits too)."""

    async def get(
        self, resource: Any, name: str, /, *, namespace: str | None = None
    ) -> dict[str, Any]: ...

    async def create(
        self, resource: Any, body: dict[str, Any], /, *, namespace: str | None = None
    ) -> dict[str, Any]: ...

    async def replace(
        self, resource: Any, name: str, body: dict[str, Any], /, *, namespace: str | None = None
    ) -> dict[str, Any]: ...


class EventSink(Protocol):
    """Where the elector records its Events (:class:`ccm.kube.events.EventRecorder` fits)."""

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None: ...


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
        self._desc = f"{config.namespace}/{config.name}"
        # The last Lease object read or written (its resourceVersion guards our PUTs).
        self._lease: dict[str, Any] | None = None
        # The last observed spec and the loop time at which we observed it change.
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0
        self._reported_leader = ""
        # Loop time at which the last successful acquire/renew request started.
        self._last_renew: float | None = None
        self._leading = False  # we hold the Lease and leading() should be running
        self._holding = False  # from acquisition until leading() has actually stopped
        self._running = False
        # Set by check_lease when it refuses a write: the renew loop steps down at once.
        self._lapsed = asyncio.Event()
        self._watch_release = True  # cleared after a 403: the RBAC does not allow the watch
        self._master_status = metrics.LEADER_ELECTION_MASTER_STATUS.labels(name=config.name)
        self._slowpath = metrics.LEADER_ELECTION_SLOWPATH_TOTAL.labels(name=config.name)
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
        return self._observed_holder or None

    def healthz_check(self) -> str | None:
        """The ``leaderElection`` health check (upstream ``HealthzAdaptor``).

        Healthy unless we hold (or are still winding down) the leadership and the last successful
        renewal started more than ``lease_duration`` + tolerance ago: the renew loop or the shutdown
        of ``leading()`` is stuck, so the kubelet should restart us.
        """
        if not self._holding or self._last_renew is None:
            return None
        if clock.monotonic() - self._last_renew > (
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
        if self._leading and self._last_renew is not None:
            age = clock.monotonic() - self._last_renew
            if age < self._config.renew_deadline:
                return self._last_renew + self._config.renew_deadline
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
        if self._observed_is_us and self._last_renew is not None:
            age = clock.monotonic() - self._last_renew
            if age < self._config.renew_deadline:
                return self._last_renew + self._config.renew_deadline
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
        rv = str(((self._lease or {}).get("metadata") or {}).get("resourceVersion") or "")
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
            kube_client.LEASES,
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
            assert self._last_renew is not None
            deadline = self._last_renew + cfg.renew_deadline
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
                holder = self._observed_holder
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
            self._release(), name=f"leaderelection/{self._config.name}/release"
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
                return await self._try_acquire_or_renew()
        except TimeoutError:
            _log.warning("acquiring or renewing lease %s timed out after %.3gs", self._desc, within)
        except Exception:
            _log.exception("unexpected error acquiring or renewing lease %s", self._desc)
        return False

    async def _try_acquire_or_renew(self) -> bool:
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
        if self._observed_is_us and self._lease is not None and self._lease_valid(started):
            assert self._observed_spec is not None
            record["acquireTime"] = self._observed_spec.get("acquireTime", now)
            record["leaseTransitions"] = self._observed_spec.get("leaseTransitions", 0)
            try:
                written = await self._replace(record)
            except Exception as exc:
                _log.log(
                    v(2) if isinstance(exc, ConflictError) else logging.WARNING,
                    "failed to update lease %s optimistically: %s, falling back to slow path",
                    self._desc,
                    exc,
                )
            else:
                self._observe_write(written, started)
                return True

        # 2. Read the Lease, or create it.
        try:
            lease = await self._client.get(kube_client.LEASES, cfg.name, namespace=cfg.namespace)
        except NotFoundError:
            record["leaseTransitions"] = 0
            body = {
                "apiVersion": _LEASE_API_VERSION,
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": record,
            }
            try:
                created = await self._client.create(
                    kube_client.LEASES, body, namespace=cfg.namespace
                )
            except Exception as exc:
                _log.log(
                    v(2) if isinstance(exc, ConflictError) else logging.WARNING,
                    "error initially creating lease %s: %s",
                    self._desc,
                    exc,
                )
                return False
            self._observe_write(created, started)
            return True
        except Exception as exc:
            _log.warning("error retrieving lease %s: %s", self._desc, exc)
            return False

        # 3. Check the holder and, by our own observation clock, the expiry.
        self._observe_read(lease)
        spec = self._observed_spec or {}
        holder = self._observed_holder
        duration = _int(spec.get("leaseDurationSeconds"))
        expired = self._observed_time + duration < clock.monotonic()
        if holder and expired and holder != cfg.identity:
            _log.info("lock has expired: %s (held by %s)", self._desc, holder)
        if holder and not expired and not self._observed_is_us:
            _log.log(v(4), "lock %s is held by %s and has not yet expired", self._desc, holder)
            return False

        # 4. Take over or renew.
        if self._observed_is_us:
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
                self._desc,
                exc,
            )
            return False
        self._observe_write(written, started)
        return True

    async def _release(self) -> bool:
        """Give the Lease up if it still names us (client-go ``release``)."""
        cfg = self._config
        try:
            lease = await self._client.get(kube_client.LEASES, cfg.name, namespace=cfg.namespace)
        except Exception as exc:
            _log.error("failed to get lease %s to release it: %s", self._desc, exc)
            return False
        self._observe_read(lease)
        if not self._observed_is_us:
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
            _log.error("failed to release lease %s: %s", self._desc, exc)
            return False
        self._observe_write(written, started)
        _log.info("released lease %s", self._desc)
        return True

    # -- helpers ---------------------------------------------------------------------------------

    async def _replace(self, record: dict[str, Any]) -> dict[str, Any]:
        """PUT ``record`` over the last Lease we saw; its resourceVersion makes stale writes 409."""
        assert self._lease is not None
        body = copy.deepcopy(self._lease)
        body["spec"] = {**(body.get("spec") or {}), **record}
        return await self._client.replace(
            kube_client.LEASES, self._config.name, body, namespace=self._config.namespace
        )

    def _observe_read(self, lease: dict[str, Any]) -> None:
        # client-go compares the raw record: any change restarts the expiry clock.
        self._lease = lease
        spec = dict(lease.get("spec") or {})
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_time = clock.monotonic()

    def _observe_write(self, lease: dict[str, Any], started: float) -> None:
        # Our own write counts from when the request started: the server stored it no earlier, so
        # no candidate can consider the lease expired before started + lease duration.
        self._lease = lease
        self._observed_spec = dict(lease.get("spec") or {})
        self._observed_time = started
        if self._observed_is_us:
            self._last_renew = started

    @property
    def _observed_holder(self) -> str:
        return str((self._observed_spec or {}).get("holderIdentity") or "")

    @property
    def _observed_is_us(self) -> bool:
        return self._observed_holder == self._config.identity

    def _lease_valid(self, now: float) -> bool:
        return self._observed_time + self._config.lease_duration > now

    def _record_event(self, what: str) -> None:
        if self._recorder is None or self._lease is None:
            return
        subject = {
            "apiVersion": _LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": self._lease.get("metadata") or {},
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
        holder = self._observed_holder
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


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
