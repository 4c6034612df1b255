"""The fake cloud's InstancesBatch: switch, one charge per call, per-Node answers, status counters;
and the contract's capability list (the manager's start-up log of omitted interfaces)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ccm.app import manager
from ccm.cloudprovider import CAPABILITIES, CloudProvider, InstancesBatch, Node
from ccm.errors import CloudProviderError, InstanceNotFoundError
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud, FakeCloudStatus


def view(name: str, provider_id: str = "") -> Node:
    return Node(
        {
            "metadata": {"name": name},
            "spec": {"providerID": provider_id} if provider_id else {},
        }
    )


def test_batch_is_off_by_default_and_switchable() -> None:
    assert FakeCloud().instances_batch() is None
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_batch=True))
    assert isinstance(cloud.instances_batch(), InstancesBatch)
    assert cloud.max_batch_size == 100
    on = FakeCloud.from_config({"capabilities": {"instancesBatch": True}, "maxBatchSize": 7})
    batch = on.instances_batch()
    assert batch is not None and batch.max_batch_size == 7
    assert (
        FakeCloud.from_config({"capabilities": {"instancesBatch": False}}).instances_batch() is None
    )


def test_the_base_provider_offers_no_batch_and_the_capability_is_listed() -> None:
    class Bare(CloudProvider):
        name = "bare"

    assert Bare().instances_batch() is None
    assert ("instances_batch", "InstancesBatch") in CAPABILITIES


def test_manager_logs_the_omitted_batch_interface(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        omitted = manager.report_capabilities(FakeCloud())
    assert "InstancesBatch" in omitted
    assert "does not implement the optional interface InstancesBatch" in caplog.text
    on = FakeCloud(capabilities=FakeCapabilities(instances_batch=True))
    assert "InstancesBatch" not in manager.report_capabilities(on)


@pytest.mark.looptime
async def test_one_charge_per_batch_and_answers_like_single_calls(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    cloud = FakeCloud(
        capabilities=FakeCapabilities(instances_batch=True),
        status_file=status,
        status_interval=0,
        latency={"instance-metadata-batch": 2.0},
        rate_limit=(1.0, 1),
    )
    cloud.add_instance("a", zone="z1")
    cloud.add_instance("b", shutdown=True)
    nodes = [view("a"), view("b"), view("missing"), view("a")]
    md = await cloud.instance_metadata_batch(nodes)
    assert len(md) == 4
    assert md[0] == await cloud.instance_metadata(view("a"))
    assert md[3] == md[0]
    assert isinstance(md[2], InstanceNotFoundError)
    assert list(await cloud.instance_exists_batch(nodes)) == [True, True, False, True]
    shut = await cloud.instance_shutdown_batch(nodes)
    assert shut[0] is False and shut[1] is True and isinstance(shut[2], InstanceNotFoundError)
    assert cloud.call_count("instance-metadata-batch") == 1
    assert cloud.call_count("instance-exists-batch") == 1
    assert cloud.call_count("instance-metadata") == 1  # only the single call made above
    assert cloud.batch_items["instance-metadata-batch"] == 4
    read = FakeCloudStatus.read(status)
    assert read is not None
    assert read.calls["instance-exists-batch"] == 1
    assert read.batch_items == {
        "instance-exists-batch": 4,
        "instance-metadata-batch": 4,
        "instance-shutdown-batch": 4,
    }


async def test_error_rules_per_node_and_per_call() -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_batch=True))
    cloud.add_instance("a")
    cloud.add_instance("b")
    cloud.inject_error("instance-exists", CloudProviderError("lookup failed"), key="b", times=1)
    answers = await cloud.instance_exists_batch([view("a"), view("b")])
    assert answers[0] is True
    assert isinstance(answers[1], CloudProviderError)
    assert list(await cloud.instance_exists_batch([view("a"), view("b")])) == [True, True]
    cloud.inject_error("instance-exists-batch", CloudProviderError("quota"), key="a")
    with pytest.raises(CloudProviderError, match="quota"):
        await cloud.instance_exists_batch([view("b"), view("a")])
    assert cloud.call_count("instance-exists") == 0
