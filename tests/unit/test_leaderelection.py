"""Lease-based leader election: client-go semantics on a fast-forwarded loop clock (looptime)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from ccm import leaderelection, metrics
from ccm.kube import client as kclient
from ccm.kube import events as kevents
from ccm.kube.fake import FakeKubeClient
from ccm.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLostError

pytestmark = pytest.mark.looptime

NS, NAME = "kube-system", "cloud-controller-manager"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Kube(FakeKubeClient):
    """The fake apiserver client, plus requests that hang (an apiserver that stopped answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang: set[str] = set()  # these verbs never reach the apiserver
        self.hang_after: set[str] = set()  # these reach it, but the response never comes
        self.hung: list[str] = []

    async def _maybe_hang(self, verb: str, hang: set[str] | None = None) -> None:
        if verb in (self.hang if hang is None else hang):
            self.hung.append(verb)
            await asyncio.Event().wait()

    async def create(
        self,
        res: kclient.Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        await self._maybe_hang("create")
        created = await super().create(
            res, body, namespace=namespace, subresource=subresource, name=name
        )
        await self._maybe_hang("create", self.hang_after)
        return created

    async def get(
        self, res: kclient.Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        await self._maybe_hang("get")
        return await super().get(res, name, namespace=namespace)

    async def replace(
        self,
        res: kclient.Resource,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        await self._maybe_hang("update")
        return await super().replace(res, name, body, namespace=namespace, subresource=subresource)

    # Views of the Lease for assertions.

    def put_lease(self, **spec: Any) -> None:
        """Write the Lease as another party would (a new resourceVersion, no action recorded)."""
        obj = self.get_object(kclient.LEASES, NAME, NS) or {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {},
        }
        obj["spec"] = {**obj["spec"], **spec}
        self.put_object(kclient.LEASES, obj)

    @property
    def lease(self) -> dict[str, Any]:
        obj = self.get_object(kclient.LEASES, NAME, NS)
        assert obj is not None
        return obj

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.lease["spec"])

    def lease_writes(self) -> list[tuple[str, str]]:
        """(verb, holderIdentity written) of every create/update of the Lease."""
        return [
            (r.verb, r.body["spec"]["holderIdentity"])
            for r in self.requests
            if r.resource == "leases" and r.verb in ("create", "update")
        ]

    def lease_verbs(self) -> list[str]:
        return [a.verb for a in self.actions if a.resource == "leases"]


def make(
    store: Kube,
    identity: str = "me",
    *,
    on_new_leader: Callable[[str], None] | None = None,
    **overrides: Any,
) -> LeaderElector:
    config = LeaderElectionConfig(identity=identity, **overrides)
    return LeaderElector(store, config, on_new_leader=on_new_leader)


class Leading:
    """A ``leading()`` callback that records when it started and how it ended."""

    def __init__(self, *, result: BaseException | None = None, run_for: float | None = None):
        self.started = asyncio.Event()
        self.started_at: float | None = None
        self.cancelled = False
        self.finished = False
        self._result = result
        self._run_for = run_for

    async def __call__(self) -> None:
        self.started_at = asyncio.get_running_loop().time()
        self.started.set()
        try:
            if self._run_for is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(self._run_for)
            if self._result is not None:
                raise self._result
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.finished = True


def master_status(name: str = NAME) -> float:
    value = metrics.REGISTRY.get_sample_value("leader_election_master_status", {"name": name})
    assert value is not None
    return value


def slowpath_total(name: str = NAME) -> float:
    value = metrics.REGISTRY.get_sample_value("leader_election_slowpath_total", {"name": name})
    return value or 0.0


async def start(
    elector: LeaderElector, leading: Callable[[], Awaitable[None]]
) -> asyncio.Task[None]:
    return asyncio.create_task(elector.run(leading), name="test/elector")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- configuration -----------------------------------------------------------------------------


def test_defaults_match_upstream_flags() -> None:
    cfg = LeaderElectionConfig(identity="me")
    assert (cfg.namespace, cfg.name) == ("kube-system", "cloud-controller-manager")
    assert (cfg.lease_duration, cfg.renew_deadline, cfg.retry_period) == (15.0, 10.0, 2.0)
    assert cfg.release_on_cancel is True
    assert cfg.lease_duration_seconds == 15


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"lease_duration": 10, "renew_deadline": 10},
            "leaseDuration must be greater than renewDeadline",
            id="lease equal to renew deadline",
        ),
        pytest.param(
            {"renew_deadline": 2.4, "retry_period": 2},
            r"renewDeadline must be greater than retryPeriod\*JitterFactor",
            id="renew deadline within jitter of retry period",
        ),
        pytest.param(
            {"lease_duration": 3, "renew_deadline": 2, "retry_period": 0},
            "retryPeriod must be greater than zero",
            id="zero retry period",
        ),
        pytest.param(
            {"lease_duration": 3, "renew_deadline": -2, "retry_period": -2},
            "renewDeadline must be greater than zero",
            id="negative renew deadline",
        ),
        pytest.param(
            {"lease_duration": float("inf")},
            "leaseDuration must be a finite number",
            id="infinite lease",
        ),
        pytest.param({"identity": ""}, "Lock identity is empty", id="empty identity"),
        pytest.param({"name": ""}, "must not be empty", id="empty name"),
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"identity": "me", **kwargs}
    with pytest.raises(ValueError, match=message):
        LeaderElectionConfig(**kwargs)


def test_fractional_lease_duration_is_written_rounded_up() -> None:
    cfg = LeaderElectionConfig(
        identity="me", lease_duration=4.5, renew_deadline=3, retry_period=0.5
    )
    assert cfg.lease_duration_seconds == 5


def test_default_identity_is_hostname_and_uuid() -> None:
    host, _, rest = leaderelection.default_identity().rpartition("_")
    assert host == socket.gethostname()
    uuid.UUID(rest)
    assert leaderelection.default_identity() != leaderelection.default_identity()


# -- acquiring ---------------------------------------------------------------------------------


async def test_acquires_an_absent_lease_by_creating_it(looptime: Any) -> None:
    store = Kube()
    seen: list[str] = []
    elector = make(store, on_new_leader=seen.append)
    leading = Leading()
    assert master_status() == 0
    task = await start(elector, leading)
    await leading.started.wait()
    assert looptime == 0
    spec = store.spec
    assert spec["holderIdentity"] == "me"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert MICROTIME.match(spec["acquireTime"])
    assert MICROTIME.match(spec["renewTime"])
    assert elector.is_leader
    assert elector.leader_identity == "me"
    assert master_status() == 1
    assert seen == ["me"]
    await stop(task)


async def test_does_not_take_a_lease_held_by_a_live_other(looptime: Any) -> None:
    store = Kube()
    store.put_lease(
        holderIdentity="other", leaseDurationSeconds=15, renewTime="r0", leaseTransitions=4
    )
    seen: list[str] = []
    elector = make(store, on_new_leader=seen.append)
    leading = Leading()
    task = await start(elector, leading)

    async def other_renews() -> None:
        for i in range(1, 60):
            await asyncio.sleep(2)
            store.put_lease(renewTime=f"r{i}")

    await other_renews()
    assert looptime == 118
    assert not leading.started.is_set()
    assert not elector.is_leader
    assert elector.leader_identity == "other"
    assert seen == ["other"]
    assert store.lease_writes() == []
    assert elector.healthz_check() is None
    await stop(task)
    assert store.lease_writes() == []  # nothing to release: we never led


async def test_takes_over_after_the_others_lease_expires_by_our_observation(
    looptime: Any,
) -> None:
    store = Kube()
    # The record's timestamps are ancient, but only our own observation clock counts: we must see
    # the record unchanged for leaseDurationSeconds before taking over.
    store.put_lease(
        holderIdentity="other",
        leaseDurationSeconds=15,
        acquireTime="2000-01-01T00:00:00.000000Z",
        renewTime="2000-01-01T00:00:00.000000Z",
        leaseTransitions=4,
    )
    seen: list[str] = []
    elector = make(store, on_new_leader=seen.append)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    assert leading.started_at is not None
    assert 15 < leading.started_at <= 15 + 2 * 2.2 + 0.01
    spec = store.spec
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 5
    assert spec["acquireTime"] != "2000-01-01T00:00:00.000000Z"
    assert seen == ["other", "me"]
    await stop(task)


async def test_takes_over_immediately_when_the_other_released(looptime: Any) -> None:
    store = Kube()
    store.put_lease(
        holderIdentity="",
        leaseDurationSeconds=1,
        acquireTime="2026-01-01T00:00:00.000000Z",
        renewTime="2026-01-01T00:00:00.000000Z",
        leaseTransitions=2,
    )
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    assert looptime == 0
    assert store.spec["holderIdentity"] == "me"
    assert store.spec["leaseTransitions"] == 3
    await stop(task)


async def test_retries_acquisition_after_api_errors(looptime: Any) -> None:
    store = Kube()
    store.inject_error("get", "leases", 500)
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await asyncio.sleep(7)
    assert not leading.started.is_set()
    store.clear_errors()
    await leading.started.wait()
    assert leading.started_at is not None
    assert leading.started_at <= 7 + 2 * 2.2 + 0.01
    await stop(task)


async def test_a_hung_request_does_not_stall_acquisition(looptime: Any) -> None:
    store = Kube()
    store.hang.add("get")
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await asyncio.sleep(25)
    assert store.hung.count("get") >= 2  # each attempt gave up after renew_deadline
    store.hang.clear()
    await leading.started.wait()
    await stop(task)


# -- leading -----------------------------------------------------------------------------------


async def test_renews_every_retry_period_keeping_acquire_time_and_transitions(
    looptime: Any,
) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    acquired = store.spec
    await asyncio.sleep(10.5)
    renewals = [c for c in store.lease_writes() if c[0] == "update"]
    assert len(renewals) == 5
    assert all(holder == "me" for _, holder in renewals)
    spec = store.spec
    assert spec["acquireTime"] == acquired["acquireTime"]
    assert spec["leaseTransitions"] == 0
    # The fast path writes from the record it wrote last: no GET while renewing.
    assert store.lease_verbs().count("get") == 1
    assert elector.healthz_check() is None
    await stop(task)


async def test_loses_leadership_after_the_renew_deadline_of_failures(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    store.inject_error("update", "leases", 500)
    store.inject_error("get", "leases", 500)
    with pytest.raises(LeadershipLostError, match="leader election lost on lease") as exc_info:
        await task
    # Deadline counted from the start of the last successful renewal (t=0).
    assert looptime == 10
    assert exc_info.value.name == NAME
    assert exc_info.value.namespace == NS
    assert leading.cancelled
    assert leading.finished
    assert not elector.is_leader
    assert master_status() == 0
    assert elector.healthz_check() is None


async def test_loses_leadership_when_renewals_hang(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    store.hang.update({"update", "get"})
    with pytest.raises(LeadershipLostError):
        await task
    # Lost at t=10; the release attempt (GET hangs too) is cut off after renew_deadline.
    assert looptime == 20
    assert leading.cancelled


async def test_loses_leadership_at_once_when_another_holder_took_the_lease(
    looptime: Any,
) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    await asyncio.sleep(0.5)
    store.put_lease(holderIdentity="usurper", renewTime="x")
    with pytest.raises(LeadershipLostError, match="held by usurper"):
        await task
    assert looptime == 2  # the first renewal found out
    assert leading.cancelled
    assert store.spec["holderIdentity"] == "usurper"  # release leaves another's lease alone


async def test_conflict_on_renewal_falls_back_to_the_slow_path(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    before = slowpath_total()
    # Someone touches the Lease without changing the record (e.g. a label): our next optimistic
    # PUT carries a stale resourceVersion and gets a 409.
    touched = store.lease
    touched["metadata"]["labels"] = {"touched": "yes"}
    store.put_object(kclient.LEASES, touched)
    await asyncio.sleep(2.5)
    assert elector.is_leader
    assert slowpath_total() == before + 1
    assert store.lease_verbs()[-3:] == ["update", "get", "update"]
    assert store.lease["metadata"]["labels"] == {"touched": "yes"}
    await stop(task)


async def test_a_failed_renewal_is_retried_within_the_deadline(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    store.inject_error("update", "leases", 500)
    await asyncio.sleep(7)
    assert elector.is_leader
    store.clear_errors()
    await asyncio.sleep(20)
    assert elector.is_leader
    assert not task.done()
    await stop(task)


# -- stopping ----------------------------------------------------------------------------------


async def test_cancellation_stops_leading_then_releases_the_lease(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    holder_while_stopping: list[str] = []

    async def leading() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            holder_while_stopping.append(store.spec["holderIdentity"])

    task = await start(elector, leading)
    await asyncio.sleep(3)
    await stop(task)
    assert holder_while_stopping == ["me"]  # leading() stopped before the release
    spec = store.spec
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]
    assert not elector.is_leader
    assert elector.leader_identity is None
    assert master_status() == 0


async def test_release_is_bounded_when_the_apiserver_hangs(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    store.hang.add("get")
    await stop(task)
    assert looptime == 10  # cut off after renew_deadline
    assert leading.cancelled


async def test_cancellation_during_an_acquiring_write_gives_the_lease_back(
    looptime: Any,
) -> None:
    store = Kube()
    store.hang_after.add("create")  # the Lease is created, the response is lost
    elector = make(store)
    leading = Leading()
    task = await start(elector, leading)
    await asyncio.sleep(1)
    assert store.spec["holderIdentity"] == "me"
    store.hang_after.clear()
    await stop(task)
    assert not leading.started.is_set()
    assert store.spec["holderIdentity"] == ""


async def test_cancelling_a_standby_writes_nothing(looptime: Any) -> None:
    store = Kube()
    store.put_lease(holderIdentity="other", leaseDurationSeconds=15, renewTime="r0")
    elector = make(store)
    task = await start(elector, Leading())
    await asyncio.sleep(3)
    await stop(task)
    assert store.lease_writes() == []
    assert store.spec["holderIdentity"] == "other"


async def test_release_on_cancel_false_keeps_the_lease(looptime: Any) -> None:
    store = Kube()
    elector = make(store, release_on_cancel=False)
    leading = Leading()
    task = await start(elector, leading)
    await leading.started.wait()
    await stop(task)
    assert store.spec["holderIdentity"] == "me"


async def test_leading_returning_releases_and_returns(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    await elector.run(Leading(run_for=5))
    assert looptime == 5
    assert store.spec["holderIdentity"] == ""
    assert not elector.is_leader


async def test_leading_raising_releases_and_propagates(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    with pytest.raises(RuntimeError, match="cloud exploded"):
        await elector.run(Leading(run_for=3, result=RuntimeError("cloud exploded")))
    assert store.spec["holderIdentity"] == ""


async def test_a_standby_takes_over_at_once_after_the_leader_releases(looptime: Any) -> None:
    store = Kube()
    first, second = make(store, "first"), make(store, "second")
    lead1, lead2 = Leading(), Leading()
    task1 = await start(first, lead1)
    await lead1.started.wait()
    task2 = await start(second, lead2)
    await asyncio.sleep(30)
    assert first.is_leader
    assert not second.is_leader
    assert not lead2.started.is_set()
    await stop(task1)
    stopped_at = float(looptime)
    await lead2.started.wait()
    assert lead2.started_at is not None
    # The standby watches the Lease: it acts on the release itself, not at its next retry.
    assert lead2.started_at - stopped_at < 0.05
    assert store.spec["holderIdentity"] == "second"
    assert store.spec["leaseTransitions"] == 1
    watches = [a for a in store.actions if a.verb == "watch"]
    assert watches and all(a.resource == "leases" for a in watches)
    await stop(task2)


async def test_without_watch_permission_a_standby_polls_and_still_takes_over(
    looptime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ccm.leaderelection")
    store = Kube()
    store.inject_error("watch", "leases", 403)
    first, second = make(store, "first"), make(store, "second")
    lead1, lead2 = Leading(), Leading()
    task1 = await start(first, lead1)
    await lead1.started.wait()
    task2 = await start(second, lead2)
    await asyncio.sleep(30)
    watch_attempts = len([a for a in store.actions if a.verb == "watch"])
    assert watch_attempts == 1  # tried once, then polling only
    await stop(task1)
    stopped_at = float(looptime)
    await lead2.started.wait()
    assert lead2.started_at is not None
    assert lead2.started_at - stopped_at <= 2 * 2.2 + 0.01  # the next jittered retry
    assert store.spec["holderIdentity"] == "second"
    assert "cannot watch lease kube-system/cloud-controller-manager" in caplog.text
    await stop(task2)


async def test_a_standby_ignores_renewals_and_keeps_waiting(looptime: Any) -> None:
    store = Kube()
    first, second = make(store, "first"), make(store, "second")
    lead1, lead2 = Leading(), Leading()
    task1 = await start(first, lead1)
    await lead1.started.wait()
    task2 = await start(second, lead2)
    await asyncio.sleep(60)  # ~30 renewals by the leader, each a MODIFIED event for the standby
    assert first.is_leader and not second.is_leader
    assert not lead2.started.is_set()
    # The leader renews without reading (0 GETs), so these are the standby's attempts: one per
    # jittered retry period (mean 3.2 s, ~19 in 60 s), not one per renewal it watched (30).
    gets_by_standby = len([a for a in store.actions if a.verb == "get"])
    assert 10 <= gets_by_standby <= 24
    await stop(task2)
    await stop(task1)


async def test_run_cannot_be_entered_twice(looptime: Any) -> None:
    store = Kube()
    elector = make(store)
    task = await start(elector, Leading())
    await asyncio.sleep(0.1)
    with pytest.raises(RuntimeError, match="already running"):
        await elector.run(Leading())
    await stop(task)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str, str]] = []

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        self.events.append((obj["kind"], meta["name"], event_type, reason, message))


async def test_records_became_and_stopped_leading_events_on_the_lease(looptime: Any) -> None:
    store = Kube()
    sink = Sink()
    elector = LeaderElector(store, LeaderElectionConfig(identity="me"), recorder=sink)
    await elector.run(Leading(run_for=1))
    assert sink.events == [
        ("Lease", NAME, "Normal", "LeaderElection", "me became leader"),
        ("Lease", NAME, "Normal", "LeaderElection", "me stopped leading"),
    ]


def test_the_kube_event_recorder_is_an_event_sink() -> None:
    recorder: leaderelection.EventSink = kevents.EventRecorder(
        FakeKubeClient(), component="cloud-controller-manager"
    )
    assert callable(recorder.event)


# -- health ------------------------------------------------------------------------------------


async def test_healthz_fails_when_leading_does_not_stop_after_a_lost_lease(
    looptime: Any,
) -> None:
    store = Kube()
    elector = make(store)
    let_go = asyncio.Event()

    async def stubborn() -> None:
        # Misbehaves on purpose: ignores cancellation until told to stop.
        while not let_go.is_set():
            try:
                await let_go.wait()
            except asyncio.CancelledError:
                continue

    task = await start(elector, stubborn)
    await asyncio.sleep(1)
    assert elector.healthz_check() is None
    store.inject_error("update", "leases", 503)
    store.inject_error("get", "leases", 503)
    await asyncio.sleep(34)  # t=35: renewed last at t=0, lost at t=10, still not stopped
    assert not elector.is_leader
    assert elector.healthz_check() is None  # within lease duration + 20 s tolerance
    await asyncio.sleep(1)  # t=36 > 15 + 20
    assert elector.healthz_check() == (
        "failed election to renew leadership on lease cloud-controller-manager"
    )
    let_go.set()
    with pytest.raises(LeadershipLostError):
        await task
    assert elector.healthz_check() is None
