"""Lease-based leader election on a ``coordination.k8s.io/v1`` Lease: part of the runtime (the
daemon's own machinery, with :mod:`ccm.app`, :mod:`ccm.controllers` and :mod:`ccm.kube`); providers
never import it.

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

Modules: :mod:`~ccm.leaderelection.config` (the configuration, the error, the client and Event
interfaces), :mod:`~ccm.leaderelection.lease` (the Lease as a lock: one attempt to take, renew or
release it), :mod:`~ccm.leaderelection.elector` (the campaign, the renew loop and the write gates).
"""

from ccm.leaderelection.config import (
    EVENT_REASON_LEADER_ELECTION,
    HEALTHZ_TOLERANCE,
    JITTER_FACTOR,
    EventSink,
    LeaderElectionConfig,
    LeadershipLostError,
    LeaseClient,
    default_identity,
)
from ccm.leaderelection.elector import LeaderElector

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
