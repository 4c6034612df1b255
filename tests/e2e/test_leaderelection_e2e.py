"""Leader election on a real Lease of the real kube-apiserver: two electors in one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ccm.kube.client import KubeClient
from ccm.leaderelection import LeaderElectionConfig, LeaderElector

pytestmark = pytest.mark.e2e

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 0.5


@pytest.fixture
async def kube(control_plane: Any) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(kubeconfig=str(control_plane.kubeconfig_path))
    try:
        yield client
    finally:
        await client.aclose()


class Candidate:
    """One elector with a ``leading()`` that records when it ran; shares a register of who leads
    right now, so that two simultaneous leaders are caught."""

    def __init__(
        self, client: KubeClient, namespace: str, identity: str, register: set[str], **kw: Any
    ) -> None:
        config = LeaderElectionConfig(
            namespace=namespace,
            name="ccm-e2e",
            identity=identity,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
            **kw,
        )
        self.identity = identity
        self.elector = LeaderElector(client, config)
        self.register = register
        self.started = asyncio.Event()
        self.started_at: float | None = None
        self.overlapped_with: set[str] = set()
        self.task = asyncio.create_task(self.elector.run(self.leading), name=f"e2e/{identity}")

    async def leading(self) -> None:
        self.overlapped_with |= self.register
        self.register.add(self.identity)
        self.started_at = time.monotonic()
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.register.discard(self.identity)

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def read_lease(k8s_admin: Any, namespace: str) -> Any:
    from kubernetes import client

    return client.CoordinationV1Api(k8s_admin).read_namespaced_lease("ccm-e2e", namespace)


async def first_to_lead(*candidates: Candidate, within: float) -> Candidate:
    waits = {asyncio.create_task(c.started.wait()): c for c in candidates}
    done, pending = await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    assert done, f"nobody acquired the lease within {within}s"
    return waits[done.pop()]


async def test_exactly_one_leads_and_a_cancelled_leader_hands_over_at_once(
    kube: KubeClient, kube_namespace: str, k8s_admin: Any
) -> None:
    register: set[str] = set()
    a = Candidate(kube, kube_namespace, "candidate-a", register)
    b = Candidate(kube, kube_namespace, "candidate-b", register)
    try:
        leader = await first_to_lead(a, b, within=10)
        standby = b if leader is a else a
        # Several lease durations: the leader keeps renewing, the standby never takes over.
        await asyncio.sleep(2 * LEASE_DURATION)
        assert register == {leader.identity}
        assert leader.elector.is_leader
        assert not standby.elector.is_leader
        assert standby.elector.leader_identity == leader.identity
        lease = await asyncio.to_thread(read_lease, k8s_admin, kube_namespace)
        assert lease.spec.holder_identity == leader.identity
        assert lease.spec.lease_duration_seconds == 4
        assert lease.spec.lease_transitions == 0

        # SIGTERM path: leading() stops, the lease is released, the standby takes it at once.
        cancelled_at = time.monotonic()
        await leader.stop()
        await asyncio.wait_for(standby.started.wait(), timeout=LEASE_DURATION)
        assert standby.started_at is not None
        handover = standby.started_at - cancelled_at
        # One jittered retry period (at most 2.2 x 0.5 s) plus request latency; far below the
        # lease duration a crashed leader would cost.
        assert handover < LEASE_DURATION / 2, handover
        assert not leader.overlapped_with
        assert not standby.overlapped_with
        lease = await asyncio.to_thread(read_lease, k8s_admin, kube_namespace)
        assert lease.spec.holder_identity == standby.identity
        assert lease.spec.lease_transitions == 1

        await standby.stop()
        lease = await asyncio.to_thread(read_lease, k8s_admin, kube_namespace)
        assert not lease.spec.holder_identity
        assert lease.spec.lease_duration_seconds == 1
    finally:
        for c in (a, b):
            if not c.task.done():
                await c.stop()


async def test_a_leader_that_vanishes_without_release_is_replaced_after_the_lease_duration(
    kube: KubeClient, kube_namespace: str, k8s_admin: Any
) -> None:
    register: set[str] = set()
    # release_on_cancel=False stands in for a leader that crashed or lost its network.
    a = Candidate(kube, kube_namespace, "candidate-a", register, release_on_cancel=False)
    try:
        await asyncio.wait_for(a.started.wait(), timeout=10)
        b = Candidate(kube, kube_namespace, "candidate-b", register)
        try:
            await asyncio.sleep(1)
            assert not b.started.is_set()
            vanished_at = time.monotonic()
            await a.stop()
            lease = await asyncio.to_thread(read_lease, k8s_admin, kube_namespace)
            assert lease.spec.holder_identity == "candidate-a"
            await asyncio.wait_for(b.started.wait(), timeout=3 * LEASE_DURATION)
            assert b.started_at is not None
            waited = b.started_at - vanished_at
            # b last saw a's record change at most one retry before a vanished; it must then see
            # the record unchanged for the whole lease duration.
            assert LEASE_DURATION - 2.2 * RETRY_PERIOD <= waited <= LEASE_DURATION + 2.0, waited
            lease = await asyncio.to_thread(read_lease, k8s_admin, kube_namespace)
            assert lease.spec.holder_identity == "candidate-b"
            assert lease.spec.lease_transitions == 1
        finally:
            if not b.task.done():
                await b.stop()
    finally:
        if not a.task.done():
            await a.stop()


def _writes_by(control_plane: Any, username: str, since: float) -> list[str]:
    """``verb resource/name`` of every write the apiserver received from ``username`` at or after
    the wall time ``since`` (its audit log)."""
    import datetime as dt
    import json

    found = []
    for line in control_plane.audit_log_path.read_text().splitlines():
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != username:
            continue
        if event.get("verb") not in ("create", "update", "patch", "delete", "deletecollection"):
            continue
        received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        if received >= since:
            ref = event.get("objectRef") or {}
            found.append(f"{event['verb']} {ref.get('resource')}/{ref.get('name')}")
    return found


def test_a_leader_paused_past_its_lease_writes_nothing_after_the_standby_took_over(
    control_plane: Any,
    k8s_admin: Any,
    nodes: Any,
    fake_cloud_files: Any,
    daemon_factory: Any,
    unique_name: Any,
) -> None:
    import signal

    from .conftest import is_tainted
    from .test_daemon import _holder, _identity, _wait_holder

    lease = unique_name("lease-pause")
    # Each initialization waits 3 s for the cloud: the leader is paused in the middle of one, and
    # resumes with the write it decided before the pause due at once.
    cloud = fake_cloud_files(
        defaultInstance={"zones": ["z"], "region": "r"}, latency={"instance-metadata": 3.0}
    )
    timing = [
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=0.5s",
        "--controllers=cloud-node-controller",
    ]
    users = {}
    for who in ("a", "b"):
        users[who] = unique_name(f"ccm-{who}")
        kubeconfig = control_plane.add_user(users[who], groups=["system:masters"])
        timing_for = [*timing, f"--kubeconfig={kubeconfig}"]
        if who == "a":
            a = daemon_factory(cloud, *timing_for, name="a", lease_name=lease)
            ida = _identity(a)
            _wait_holder(k8s_admin, lease, ida, timeout=30)
        else:
            b = daemon_factory(cloud, *timing_for, name="b", lease_name=lease)
            idb = _identity(b)
    time.sleep(1)
    assert _holder(k8s_admin, lease) == ida

    name = unique_name("node")
    nodes.create(name)
    a.wait_for_log(f"Initializing node {name}", timeout=20)
    a.signal(signal.SIGSTOP)
    try:
        _wait_holder(k8s_admin, lease, idb, timeout=20)
        took_over = time.time()
    finally:
        a.signal(signal.SIGCONT)
    resumed = time.monotonic()
    assert a.wait(timeout=20) == 1, a.tail()
    assert time.monotonic() - resumed < 20
    assert "leaderelection lost" in a.log()

    nodes.wait(name, lambda n: not is_tainted(n), what="initialized by the new leader")
    assert f"Initializing node {name}" in b.log()
    assert _writes_by(control_plane, users["a"], since=took_over) == []
    # The audit log does record a's identity: its writes before the pause are there.
    assert _writes_by(control_plane, users["a"], since=0)
