"""Fencing: a leader whose lease lapsed (paused past it, then resumed) writes nothing, neither to
the apiserver nor to the cloud, and steps down at once (looptime; the pause is a jump of the
injected clock that the loop's timers have not seen yet, as right after SIGCONT)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccm import clock, fencing
from ccm.controllers import base
from ccm.kube import client as kclient
from ccm.kube.fake import FakeKubeClient
from ccm.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLostError

pytestmark = pytest.mark.looptime

NS = "kube-system"


def configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "data": {}}


class PausableClock:
    """``ccm.clock.monotonic`` plus the time the process spent stopped."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stopped_for = 0.0
        real = clock.monotonic
        monkeypatch.setattr(clock, "monotonic", lambda: real() + self.stopped_for)

    def pause(self, seconds: float) -> None:
        self.stopped_for += seconds


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> PausableClock:
    return PausableClock(monkeypatch)


class Leader:
    """``leading()`` that writes one ConfigMap, waits for ``resume``, then tries another write to
    the apiserver and one to the cloud."""

    def __init__(self, kube: FakeKubeClient, elector: LeaderElector) -> None:
        self.kube = kube
        self.elector = elector
        self.wrote_first = asyncio.Event()
        self.resume = asyncio.Event()
        self.refused: list[fencing.NotLeaderError] = []
        self.cloud_calls: list[str] = []

    async def create_route(self) -> None:
        self.cloud_calls.append("create_route")

    async def __call__(self) -> None:
        with fencing.guard(self.elector.check_lease):
            await self.kube.create(kclient.CONFIGMAPS, configmap("before"))
            self.wrote_first.set()
            await self.resume.wait()
            for attempt in (
                lambda: self.kube.create(kclient.CONFIGMAPS, configmap("after")),
                lambda: base.call_cloud(self.create_route(), 5.0, "create_route"),
            ):
                try:
                    await attempt()
                except fencing.NotLeaderError as exc:
                    self.refused.append(exc)
            await asyncio.Event().wait()


async def test_a_leader_resumed_after_its_lease_lapsed_refuses_writes_and_steps_down(
    looptime: Any, paused: PausableClock
) -> None:
    kube = FakeKubeClient()
    elector = LeaderElector(kube, LeaderElectionConfig(identity="me"))
    leader = Leader(kube, elector)
    task = asyncio.create_task(elector.run(leader), name="test/elector")
    await leader.wrote_first.wait()
    assert kube.get_object(kclient.CONFIGMAPS, "before", NS) is not None
    await asyncio.sleep(1)

    paused.pause(16.0)  # SIGSTOP for longer than the 15 s lease …
    lease = kube.get_object(kclient.LEASES, "cloud-controller-manager", NS)
    assert lease is not None
    lease["spec"] = {**lease["spec"], "holderIdentity": "standby"}
    kube.put_object(kclient.LEASES, lease)  # … a standby took over (recorded as no action) …
    leader.resume.set()  # … and SIGCONT
    with pytest.raises(LeadershipLostError):
        await task

    assert len(leader.refused) == 2
    assert all("write refused" in str(exc) for exc in leader.refused)
    assert kube.get_object(kclient.CONFIGMAPS, "after", NS) is None
    assert leader.cloud_calls == []
    # It stepped down at once (no retry period waited) and wrote nothing more: no Lease update,
    # no release (the Lease is the standby's), no "stopped leading" Event.
    assert looptime == 1
    after_resume = [a for a in kube.writes() if a.name != "before"]
    assert [(a.verb, a.resource) for a in after_resume] == [("create", "leases")]
    assert not elector.is_leader
    assert (
        kube.get_object(kclient.LEASES, "cloud-controller-manager", NS)["spec"]["holderIdentity"]
        == "standby"
    )


async def test_writes_pass_while_the_lease_is_renewed(looptime: Any) -> None:
    kube = FakeKubeClient()
    elector = LeaderElector(kube, LeaderElectionConfig(identity="me"))
    done = asyncio.Event()

    async def leading() -> None:
        with fencing.guard(elector.check_lease):
            for i in range(30):  # a minute of writes, many lease durations
                await kube.create(kclient.CONFIGMAPS, configmap(f"cm-{i}"))
                await asyncio.sleep(2)
        done.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(elector.run(leading), name="test/elector")
    await done.wait()
    assert len(kube.list_objects(kclient.CONFIGMAPS, NS)) == 30
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_leader_whose_renewals_fail_refuses_writes_from_the_renew_deadline(
    looptime: Any,
) -> None:
    kube = FakeKubeClient()
    elector = LeaderElector(kube, LeaderElectionConfig(identity="me"))
    refused_at: list[float] = []

    async def leading() -> None:
        kube.inject_error("update", "leases", 500)
        kube.inject_error("get", "leases", 500)
        with fencing.guard(elector.check_lease):
            for i in range(100):
                try:
                    await kube.create(kclient.CONFIGMAPS, configmap(f"cm-{i}"))
                except fencing.NotLeaderError:
                    refused_at.append(asyncio.get_running_loop().time())
                await asyncio.sleep(0.5)

    with pytest.raises(LeadershipLostError):
        await elector.run(leading)
    names = {o["metadata"]["name"] for o in kube.list_objects(kclient.CONFIGMAPS, NS)}
    assert len(names) == 20  # t = 0, 0.5, …, 9.5: then the renew deadline (10 s) passed
    assert refused_at in ([], [10.0])  # the renew loop may step down first, at the same moment


async def test_without_a_guard_nothing_is_refused() -> None:
    fencing.check()
    kube = FakeKubeClient()
    await kube.create(kclient.CONFIGMAPS, configmap("free"))
    assert await base.call_cloud(asyncio.sleep(0, "ok"), 1.0, "create_route") == "ok"


async def test_a_refused_cloud_call_is_never_started() -> None:
    started: list[str] = []

    async def delete_route() -> None:
        started.append("delete_route")

    def refuse() -> None:
        raise fencing.NotLeaderError("write refused: test")

    with fencing.guard(refuse):
        assert await base.call_cloud(asyncio.sleep(0, "read"), 1.0, "list_routes") == "read"
        with pytest.raises(fencing.NotLeaderError):
            await base.call_cloud(delete_route(), 1.0, "delete_route")
    assert started == []


async def test_an_event_recorder_drops_refused_events_without_retrying_or_failing(
    looptime: Any,
) -> None:
    from ccm.kube import events as kevents

    kube = FakeKubeClient()
    recorder = kevents.EventRecorder(kube, component="test")

    def refuse() -> None:
        raise fencing.NotLeaderError("write refused: test")

    with fencing.guard(refuse):
        task = asyncio.create_task(recorder.run(), name="test/events")
        await asyncio.sleep(0)  # run() is waiting for events
        recorder.event(configmap("subject"), "Normal", "Tested", "a message")
        await asyncio.sleep(0.1)
        assert not task.done()  # the refusal did not kill run()
        recorder.event(configmap("subject"), "Normal", "Tested", "another message")
        await recorder.aclose()
        await task
    assert recorder.failed == 2
    assert kube.writes() == []
    assert looptime == 0.1  # no retry delays


class StalledTransport(kclient.Transport):
    """A transport whose requests wait for a connection (a pooled one, a TLS handshake) until
    ``connected`` is set, then reach the apiserver (``sent``)."""

    host = "https://127.0.0.1:1"

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.connected = asyncio.Event()
        self.sent: list[tuple[str, str]] = []

    async def send(self, request: kclient.HttpRequest) -> kclient.HttpResponse:
        self.waiting.set()
        await self.connected.wait()
        self.sent.append((request.method, request.path))
        return kclient.BufferedResponse(201, b"{}")

    async def aclose(self) -> None:
        pass


async def test_an_event_waiting_for_a_connection_when_the_process_stops_is_never_sent(
    looptime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ccm.kube import events as kevents

    kube = FakeKubeClient()
    elector = LeaderElector(kube, LeaderElectionConfig(identity="me"))
    transport = StalledTransport()
    recorder = kevents.EventRecorder(kclient.KubeClient(transport), component="test")

    async def leading() -> None:
        with fencing.guard(elector.check_lease):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(recorder.run(), name="test/events")
                recorder.event(configmap("subject"), "Normal", "Tested", "a message")

    run = asyncio.create_task(elector.run(leading), name="test/elector")
    # The Event passed the lease check and waits for its connection.
    await asyncio.wait_for(transport.waiting.wait(), 1.0)
    # SIGSTOP for longer than the lease, then SIGCONT: the loop's clock has jumped, and the
    # connection completed meanwhile (its I/O callback is the first thing to run on resuming).
    loop = asyncio.get_running_loop()
    real_time = loop.time
    monkeypatch.setattr(loop, "time", lambda: real_time() + 20.0)
    loop.call_soon(transport.connected.set)
    with pytest.raises(LeadershipLostError):
        await asyncio.wait_for(run, 5.0)
    assert transport.sent == []
    assert recorder.created == 0
    assert recorder.failed == 1


async def test_leader_election_events_are_written_only_while_the_lease_is_ours(
    looptime: Any, paused: PausableClock
) -> None:
    from ccm.kube import events as kevents

    kube = FakeKubeClient()
    recorder = kevents.EventRecorder(kube, component="test")
    elector = LeaderElector(kube, LeaderElectionConfig(identity="me"), recorder=recorder)
    with fencing.guard(elector.check_events):
        sender = asyncio.create_task(recorder.run(), name="test/events")
    recorder.event(configmap("subject"), "Normal", "Tested", "before acquiring")
    await asyncio.sleep(0.1)
    assert (recorder.created, recorder.failed) == (0, 1)

    run = asyncio.create_task(elector.run(asyncio.Event().wait), name="test/elector")

    async def became_leader() -> None:
        while recorder.created == 0:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(became_leader(), 1.0)
    assert (recorder.created, recorder.failed) == (1, 1)
    paused.pause(20.0)  # stopped past the lease
    recorder.event(configmap("subject"), "Normal", "Tested", "after the pause")
    with pytest.raises(LeadershipLostError):
        await asyncio.wait_for(run, 5.0)
    await recorder.aclose()
    await sender
    assert (recorder.created, recorder.failed) == (1, 2)


async def test_a_cloud_call_whose_lease_lapsed_while_it_waited_for_the_budget_is_never_started(
    looptime: Any,
) -> None:
    from ccm.controllers import cloudapi

    started: list[str] = []
    lapsed = False

    async def delete_route() -> None:
        started.append("delete_route")

    def gate() -> None:
        if lapsed:
            raise fencing.NotLeaderError("write refused: test")

    budget = cloudapi.CloudAPIBudget()
    previous = cloudapi.install(budget)
    try:
        budget.throttled(cloudapi.OTHER, 5.0)  # the cloud throttled: calls wait 5 s
        with fencing.guard(gate):
            call = asyncio.create_task(
                base.call_cloud(delete_route(), 1.0, "delete_route"), name="test/call"
            )
            await asyncio.sleep(1.0)  # the call passed the check and waits for the budget
            lapsed = True
            with pytest.raises(fencing.NotLeaderError):
                await call
        assert started == []
    finally:
        cloudapi.install(previous)
