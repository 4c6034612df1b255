"""The ``informer-sync`` readiness check of the controller manager."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccm.app import manager, options
from ccm.kube import client as kclient
from ccm.kube.fake import FakeKubeClient
from ccm.leaderelection import LeaderElectionConfig, LeaderElector
from ccm.testing.fake_cloud import FakeCloud

pytestmark = pytest.mark.looptime


def make_manager(*args: str) -> manager.ControllerManager:
    return manager.ControllerManager(
        options.parse_args(["--cloud-provider=fake", *args]), FakeCloud()
    )


def test_without_leader_election_not_ready_before_the_informers_start() -> None:
    mgr = make_manager("--leader-elect=false")
    assert mgr.informer_sync_check() == "the informers have not started"


def test_a_standby_replica_is_ready() -> None:
    mgr = make_manager()
    mgr._elector = LeaderElector(FakeKubeClient(), LeaderElectionConfig(identity="standby"))
    assert not mgr._elector.is_leader
    assert mgr.informer_sync_check() is None


async def test_ready_once_every_informer_has_synced(looptime: Any) -> None:
    kube = FakeKubeClient()
    kube.inject_error("list", "services", 500, times=3)
    mgr = make_manager("--leader-elect=false")
    informers = manager.SharedInformers(kube, resync_period=None)
    nodes, services = informers.get(kclient.NODES), informers.get(kclient.SERVICES)
    mgr._informers = informers
    assert mgr.informer_sync_check() == "informers not synced: nodes, services"
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(i.run(), name=f"test/{i.name}") for i in (nodes, services)]
        await nodes.wait_for_sync()
        assert mgr.informer_sync_check() == "informers not synced: services"
        await services.wait_for_sync()
        assert mgr.informer_sync_check() is None
        for task in tasks:
            task.cancel()
