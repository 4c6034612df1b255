"""What an election is about: the Lease, our identity and client-go's three timings
(:class:`LeaderElectionConfig`), the error raised when leadership is lost, and the two narrow
interfaces the elector needs from the runtime (a Lease client and an Event sink)."""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ccm import wellknown
from ccm.errors import CCMError

__all__ = [
    "EVENT_REASON_LEADER_ELECTION",
    "HEALTHZ_TOLERANCE",
    "JITTER_FACTOR",
    "LEASE_API_VERSION",
    "EventSink",
    "LeaderElectionConfig",
    "LeadershipLostError",
    "LeaseClient",
    "default_identity",
]

#: client-go ``JitterFactor``: acquisition retries wait ``retry_period * (1 + rand * 1.2)``.
JITTER_FACTOR = 1.2
#: How long past the lease duration the leader may go without a renewal before ``/healthz`` fails
#: (upstream ``app/controllermanager.go``: ``NewLeaderHealthzAdaptor(20 * time.Second)``).
HEALTHZ_TOLERANCE = 20.0

#: Reason of the Events recorded on the Lease (client-go ``LeaseLock.RecordEvent``).
EVENT_REASON_LEADER_ELECTION = "LeaderElection"

#: ``apiVersion`` of the Lease objects the elector creates and records Events on.
LEASE_API_VERSION = "coordination.k8s.io/v1"


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
