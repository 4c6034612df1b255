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
