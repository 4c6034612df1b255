"""The cloud node controller over the in-memory apiserver and the fake cloud.

Upstream cases of controllers/node/node_controller_test.go are ported as pytest.param ids where the
behaviour is the same; ccm-specific behaviour (one write, events on failure) has its own tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ccm import clock, metrics, wellknown
from ccm.cloudprovider import InstanceMetadata, NodeAddress
from ccm.controllers import node as node_controller
from ccm.controllers.node import controller as node_controller_module
from ccm.errors import (
    CloudCallTimeoutError,
    ConflictError,
    InstanceNotFoundError,
    RetryAfterError,
)
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCapabilities, FakeCloud
from tests.unit.recorder import Recorder

UNINIT = {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}


@dataclass
class Env:
    client: FakeKubeClient
    cloud: FakeCloud
    informer: kinformer.Informer
    recorder: Recorder
    controller: node_controller.CloudNodeController

    def node(self, name: str) -> dict[str, Any]:
        obj = self.client.get_object(kclient.NODES, name)
        assert obj is not None
        return obj

    async def settle(self, name: str) -> None:
        """Wait until the informer has seen the stored version of node ``name``."""
        want = self.node(name)["metadata"]["resourceVersion"]
        for _ in range(200):
            cached = self.informer.get(name)
            if cached is not None and cached["metadata"]["resourceVersion"] == want:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("informer did not catch up")


def make_node(name: str, *, tainted: bool = True, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": extra.pop("labels", {}),
            "annotations": extra.pop("annotations", {}),
        },
        "spec": {"taints": [dict(UNINIT)] if tainted else []},
        "status": {"addresses": extra.pop("addresses", [{"type": "Hostname", "address": name}])},
    }
    if "provider_id" in extra:
        node["spec"]["providerID"] = extra.pop("provider_id")
    return node


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    client = FakeKubeClient()
    cloud = FakeCloud()
    informer = kinformer.Informer(client, kclient.NODES)
    recorder = Recorder()
    controller = node_controller.CloudNodeController(
        client=client, nodes=informer, cloud=cloud, recorder=recorder
    )
    task = asyncio.create_task(informer.run(), name="test/informer")
    await informer.wait_for_sync(timeout=5)
    try:
        yield Env(client, cloud, informer, recorder, controller)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()


async def add_node(env: Env, node: dict[str, Any]) -> None:
    env.client.put_object(kclient.NODES, node)
    await env.settle(node["metadata"]["name"])


def addr(t: str, a: str) -> NodeAddress:
    return NodeAddress(type=t, address=a)


async def test_initializes_tainted_node_in_one_write_plus_status(env: Env) -> None:
    env.cloud.add_instance(
        "node0",
        provider_id="fake://i-0",
        instance_type="m5.large",
        zone="z1",
        region="r1",
        addresses=[addr("InternalIP", "10.0.0.1"), addr("ExternalIP", "203.0.113.1")],
    )
    await add_node(env, make_node("node0"))
    env.client.clear_actions()

    await env.controller.sync_node("node0")

    node = env.node("node0")
    assert node["spec"]["providerID"] == "fake://i-0"
    assert not node["spec"].get("taints")
    labels = node["metadata"]["labels"]
    for key, value in [
        (wellknown.LABEL_INSTANCE_TYPE, "m5.large"),
        (wellknown.LABEL_INSTANCE_TYPE_BETA, "m5.large"),
        (wellknown.LABEL_ZONE, "z1"),
        (wellknown.LABEL_ZONE_BETA, "z1"),
        (wellknown.LABEL_REGION, "r1"),
        (wellknown.LABEL_REGION_BETA, "r1"),
    ]:
        assert labels[key] == value
    assert node["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "ExternalIP", "address": "203.0.113.1"},
        {"type": "Hostname", "address": "node0"},  # kubelet's hostname kept
    ]
    writes = [(a.verb, a.subresource or "") for a in env.client.writes()]
    assert writes == [("patch", ""), ("patch", "status")]
    assert env.recorder.events == [("node0", "Normal", "Synced", "Node synced successfully")]


async def test_taint_and_labels_change_in_the_same_write(env: Env) -> None:
    env.cloud.add_instance("node1", zone="z1", region="r1", instance_type="t")
    await add_node(env, make_node("node1"))
    env.client.clear_actions()
    await env.controller.sync_node("node1")
    node_patches = [
        r for r in env.client.requests if r.action.verb == "patch" and not r.action.subresource
    ]
    assert len(node_patches) == 1
    body = node_patches[0].body
    assert body["spec"]["taints"] is None
    assert body["metadata"]["labels"][wellknown.LABEL_ZONE] == "z1"


@pytest.mark.parametrize(
    "v2",
    [
        pytest.param(False, id="node initialized with provider ID"),
        pytest.param(True, id="[instanceV2] node initialized with provider ID"),
    ],
)
async def test_node_initialized_with_provider_id(env: Env, v2: bool) -> None:
    env.cloud.capabilities.instances_v2 = v2
    env.cloud.add_instance(
        "node0",
        provider_id="fake://12345",
        instance_type="t1",
        zone="us-west-1a",
        region="us-west",
        addresses=[addr("InternalIP", "10.0.0.1")],
    )
    await add_node(env, make_node("node0"))
    await env.controller.sync_node("node0")
    node = env.node("node0")
    assert node["spec"]["providerID"] == "fake://12345"
    assert node["metadata"]["labels"][wellknown.LABEL_ZONE] == "us-west-1a"
    assert not node["spec"].get("taints")


@pytest.mark.parametrize(
    "v2",
    [pytest.param(False, id="node ignored"), pytest.param(True, id="[instanceV2] node ignored")],
)
async def test_untainted_node_is_ignored(env: Env, v2: bool) -> None:
    env.cloud.capabilities.instances_v2 = v2
    await add_node(env, make_node("node0", tainted=False))
    env.cloud.clear_calls()
    env.client.clear_actions()
    await env.controller.sync_node("node0")
    assert env.cloud.total_calls == 0
    assert env.client.writes() == []


@pytest.mark.parametrize(
    "v2",
    [
        pytest.param(False, id="provider ID already set"),
        pytest.param(True, id="[instanceV2] provider ID already set"),
    ],
)
async def test_provider_id_already_set_is_kept(env: Env, v2: bool) -> None:
    env.cloud.capabilities.instances_v2 = v2
    env.cloud.add_instance("node0", provider_id="fake://test-node-provider-id", zone="z")
    if v2:

        async def other_id(node: Any) -> InstanceMetadata:
            return InstanceMetadata(provider_id="fake://other", zone="z")

        env.cloud.instance_metadata = other_id  # type: ignore[method-assign]
    await add_node(env, make_node("node0", provider_id="fake://test-node-provider-id"))
    await env.controller.sync_node("node0")
    node = env.node("node0")
    assert node["spec"]["providerID"] == "fake://test-node-provider-id"
    assert node["metadata"]["labels"][wellknown.LABEL_ZONE] == "z"
    assert not node["spec"].get("taints")


async def test_error_getting_instance_metadata_keeps_taint_and_warns(env: Env) -> None:
    """[instanceV2] error getting InstanceMetadata."""
    env.cloud.add_instance("node0", zone="z")
    env.cloud.inject_error("instance-metadata", key="node0")
    await add_node(env, make_node("node0"))
    with pytest.raises(node_controller.NodeInitializationError):
        await env.controller.sync_node("node0")
    assert env.node("node0")["spec"]["taints"] == [UNINIT]
    assert env.recorder.reasons() == [wellknown.EVENT_REASON_FAILED_TO_INITIALIZE]
    assert "injected" in env.recorder.events[0][3]


async def test_missing_provider_id_everywhere_is_an_error(env: Env) -> None:
    """[instanceV2] provider ID not implemented: the taint stays (since 1.30)."""

    async def no_provider_id(node: Any) -> InstanceMetadata:
        return InstanceMetadata(provider_id="", zone="z")

    env.cloud.instance_metadata = no_provider_id  # type: ignore[method-assign]
    await add_node(env, make_node("node0"))
    with pytest.raises(node_controller.NodeInitializationError, match="provider ID"):
        await env.controller.sync_node("node0")
    assert env.node("node0")["spec"]["taints"] == [UNINIT]


async def test_nil_instance_metadata_skips_the_node(env: Env) -> None:
    """nil instanceMetadata provided by InstanceV2: no error, the taint stays."""

    async def nil(node: Any) -> None:
        return None

    env.cloud.instance_metadata = nil  # type: ignore[method-assign]
    await add_node(env, make_node("node0"))
    env.client.clear_actions()
    await env.controller.sync_node("node0")
    assert env.client.writes() == []
    assert env.node("node0")["spec"]["taints"] == [UNINIT]


async def test_provided_node_ip_not_present_keeps_taint(env: Env) -> None:
    env.cloud.add_instance("node0", addresses=[addr("InternalIP", "10.0.0.1")])
    await add_node(
        env, make_node("node0", annotations={wellknown.ANNOTATION_PROVIDED_NODE_IP: "10.0.0.9"})
    )
    with pytest.raises(ValueError, match="provided node ip"):
        await env.controller.sync_node("node0")
    assert env.node("node0")["spec"]["taints"] == [UNINIT]
    assert env.recorder.reasons() == [wellknown.EVENT_REASON_FAILED_TO_INITIALIZE]


async def test_provided_node_ip_orders_addresses(env: Env) -> None:
    env.cloud.add_instance(
        "node0",
        addresses=[
            addr("InternalIP", "10.0.0.1"),
            addr("ExternalIP", "132.143.154.163"),
        ],
    )
    await add_node(
        env,
        make_node("node0", annotations={wellknown.ANNOTATION_PROVIDED_NODE_IP: "132.143.154.163"}),
    )
    await env.controller.sync_node("node0")
    assert env.node("node0")["status"]["addresses"][0] == {
        "type": "ExternalIP",
        "address": "132.143.154.163",
    }


async def test_legacy_instances_with_zones(env: Env) -> None:
    """zone/region topology labels added (Instances v1 + Zones)."""
    env.cloud.capabilities.instances_v2 = False
    env.cloud.add_instance(
        "node0",
        instance_type="t",
        zone="us-west-1a",
        region="us-west",
        addresses=[addr("InternalIP", "10.0.0.1")],
    )
    await add_node(env, make_node("node0"))
    await env.controller.sync_node("node0")
    node = env.node("node0")
    assert node["metadata"]["labels"][wellknown.LABEL_REGION_BETA] == "us-west"
    assert node["spec"]["providerID"] == "fake://node0"
    calls = {c.method for c in env.cloud.calls}
    assert "instance-metadata" not in calls
    assert {"instance-id", "node-addresses-by-provider-id", "get-zone-by-provider-id"} <= calls


async def test_legacy_instances_without_zones_sets_no_topology(env: Env) -> None:
    env.cloud.capabilities = FakeCapabilities(instances_v2=False, zones=False)
    env.cloud.add_instance("node0", instance_type="t", zone="us-west-1a", region="us-west")
    await add_node(env, make_node("node0"))
    await env.controller.sync_node("node0")
    labels = env.node("node0")["metadata"]["labels"]
    assert wellknown.LABEL_ZONE not in labels
    assert labels[wellknown.LABEL_INSTANCE_TYPE] == "t"


async def test_retries_the_write_on_conflict_with_a_fresh_read(env: Env) -> None:
    env.cloud.add_instance("node0", zone="z")
    await add_node(env, make_node("node0"))
    env.client.inject_error("patch", "nodes", ConflictError("conflict"), subresource="", times=2)
    await env.controller.sync_node("node0")
    assert env.node("node0")["metadata"]["labels"][wellknown.LABEL_ZONE] == "z"
    assert not env.node("node0")["spec"].get("taints")
    verbs = [a.verb for a in env.client.actions if not a.subresource]
    assert verbs.count("get") == 2


async def test_a_concurrent_writer_is_never_overwritten(env: Env) -> None:
    """The resourceVersion precondition: a write that raced ours makes ours fail, not clobber."""
    env.cloud.add_instance("node0", zone="z")
    await add_node(env, make_node("node0"))
    stale = env.informer.get("node0")
    assert stale is not None
    fresh = env.node("node0")
    fresh["metadata"]["labels"]["team"] = "a"
    env.client.put_object(kclient.NODES, fresh)
    from ccm.controllers import nodeutil

    with pytest.raises(ConflictError):
        await env.client.patch(
            kclient.NODES,
            "node0",
            nodeutil.initialization_patch(stale, InstanceMetadata(provider_id="fake://x")),
            patch_type="strategic",
        )
    await env.controller.sync_node("node0")
    node = env.node("node0")
    assert node["metadata"]["labels"]["team"] == "a"
    assert node["metadata"]["labels"][wellknown.LABEL_ZONE] == "z"


async def test_gone_instance_is_an_error_not_a_silent_init(env: Env) -> None:
    env.cloud.inject_error("instance-metadata", InstanceNotFoundError(), key="node0")
    await add_node(env, make_node("node0"))
    with pytest.raises(node_controller.NodeInitializationError, match="instance not found"):
        await env.controller.sync_node("node0")


async def test_beta_labels_reconcile_ga_labels_without_cloud_calls(env: Env) -> None:
    await add_node(
        env,
        make_node(
            "node0",
            tainted=False,
            labels={wellknown.LABEL_ZONE_BETA: "foo", wellknown.LABEL_ZONE: "blah"},
        ),
    )
    env.cloud.clear_calls()
    await env.controller.sync_node("node0")
    assert env.node("node0")["metadata"]["labels"][wellknown.LABEL_ZONE] == "foo"
    assert env.cloud.total_calls == 0


async def test_status_loop_refreshes_changed_addresses(env: Env) -> None:
    """TestNodeAddressesChangeDetected / NotUpdate: only a real change is written."""
    env.cloud.add_instance("node0", addresses=[addr("InternalIP", "10.0.0.1")])
    await add_node(env, make_node("node0"))
    await env.controller.sync_node("node0")
    await env.settle("node0")

    env.client.clear_actions()
    await env.controller.update_node_status()
    assert env.client.writes() == [], "unchanged addresses are not written"

    env.cloud.instance_table["node0"].addresses = (addr("InternalIP", "10.0.0.2"),)
    await env.controller.update_node_status()
    assert env.node("node0")["status"]["addresses"][0]["address"] == "10.0.0.2"


async def test_addresses_are_replaced_whole_not_merged_by_type(env: Env) -> None:
    """Two addresses of one type are both written, and a type the cloud no longer reports goes:
    the status patch replaces the list (a strategic merge by address type would keep the stale
    ExternalIP and fold the two InternalIPs into one)."""
    env.cloud.add_instance(
        "node0", addresses=[addr("InternalIP", "10.0.0.1"), addr("InternalIP", "10.0.0.2")]
    )
    await add_node(
        env,
        make_node(
            "node0",
            addresses=[
                {"type": "InternalIP", "address": "10.0.0.9"},
                {"type": "ExternalIP", "address": "198.51.100.9"},
                {"type": "Hostname", "address": "node0"},
            ],
        ),
    )
    await env.controller.sync_node("node0")
    assert env.node("node0")["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "InternalIP", "address": "10.0.0.2"},
        {"type": "Hostname", "address": "node0"},
    ]


async def test_status_loop_skips_tainted_and_nil_metadata_nodes(env: Env) -> None:
    await add_node(env, make_node("tainted"))
    await add_node(env, make_node("untainted", tainted=False))

    async def nil(node: Any) -> None:
        return None

    env.cloud.instance_metadata = nil  # type: ignore[method-assign]
    env.client.clear_actions()
    await env.controller.update_node_status()  # upstream panics here; ccm logs and skips
    assert env.client.writes() == []


async def test_status_loop_survives_per_node_errors(env: Env) -> None:
    env.cloud.add_instance("a", addresses=[addr("InternalIP", "10.0.0.1")])
    env.cloud.add_instance("b", addresses=[addr("InternalIP", "10.0.0.2")])
    await add_node(env, make_node("a", tainted=False))
    await add_node(env, make_node("b", tainted=False))
    env.cloud.inject_error("instance-metadata", key="a")
    await env.controller.update_node_status()
    assert env.node("b")["status"]["addresses"][0]["address"] == "10.0.0.2"
    assert env.node("a")["status"]["addresses"] == [{"type": "Hostname", "address": "a"}]


@pytest.mark.looptime
async def test_worker_requeues_after_retry_after_delay(env: Env) -> None:
    env.cloud.inject_error(
        "instance-metadata", RetryAfterError("provisioning", 30.0), key="node0", times=1
    )
    env.cloud.add_instance("node0", zone="z")
    loop = asyncio.get_running_loop()
    run = asyncio.create_task(env.controller.run())
    start = loop.time()
    await add_node(env, make_node("node0"))
    while env.node("node0")["spec"].get("taints"):
        await asyncio.sleep(1)
    elapsed = loop.time() - start
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert 30.0 <= elapsed < 40.0
    assert env.cloud.call_count("instance-metadata", "node0") >= 2


@pytest.mark.looptime
async def test_worker_retries_with_backoff_until_fault_clears(env: Env) -> None:
    rule = env.cloud.inject_error("instance-metadata", key="node0")
    env.cloud.add_instance("node0", zone="z")
    run = asyncio.create_task(env.controller.run())
    await add_node(env, make_node("node0"))
    while env.cloud.call_count("instance-metadata", "node0") < 4:
        await asyncio.sleep(0.05)
    assert env.node("node0")["spec"]["taints"] == [UNINIT]
    env.cloud.errors.remove(rule)
    while env.node("node0")["spec"].get("taints"):
        await asyncio.sleep(0.5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert env.recorder.reasons().count(wellknown.EVENT_REASON_FAILED_TO_INITIALIZE) >= 4
    assert env.recorder.reasons()[-1] == wellknown.EVENT_REASON_SYNCED


def test_refuses_a_provider_without_instances() -> None:
    cloud = FakeCloud(capabilities=FakeCapabilities(instances_v2=False, instances=False))
    with pytest.raises(Exception, match="does not support instances"):
        node_controller.CloudNodeController(
            client=FakeKubeClient(),
            nodes=kinformer.Informer(FakeKubeClient(), kclient.NODES),
            cloud=cloud,
            recorder=Recorder(),
        )


@pytest.mark.looptime
async def test_a_hung_metadata_call_times_out_with_an_event_and_is_retried(env: Env) -> None:
    env.cloud.add_instance("node0", zone="z")
    env.cloud.set_latency("instance-metadata", 3600)
    controller = node_controller.CloudNodeController(
        client=env.client,
        nodes=env.informer,
        cloud=env.cloud,
        recorder=env.recorder,
        cloud_timeout=5,
    )
    await add_node(env, make_node("node0"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(CloudCallTimeoutError):
        await controller.sync_node("node0")
    assert loop.time() - start == pytest.approx(5)
    assert env.node("node0")["spec"]["taints"] == [UNINIT]
    assert env.recorder.events == [
        (
            "node0",
            wellknown.EVENT_WARNING,
            wellknown.EVENT_REASON_FAILED_TO_INITIALIZE,
            "Failed to initialize node with cloud provider: cloud provider call "
            "instance_metadata did not return within 5s",
        )
    ]
    # the worker's retry switch requeues it; once the cloud answers the Node is initialized
    run = asyncio.create_task(controller.run())
    while env.recorder.reasons().count(wellknown.EVENT_REASON_FAILED_TO_INITIALIZE) < 2:
        await asyncio.sleep(1)
    env.cloud.set_latency("instance-metadata", 0)
    while env.node("node0")["spec"].get("taints"):
        await asyncio.sleep(1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert env.recorder.reasons()[-1] == wellknown.EVENT_REASON_SYNCED


@pytest.mark.looptime
async def test_a_hung_address_refresh_is_logged_and_leaves_addresses(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.cloud.add_instance("a", addresses=[addr("InternalIP", "10.0.0.1")])
    await add_node(env, make_node("a", tainted=False))
    env.cloud.set_latency("instance-metadata", 3600)
    controller = node_controller.CloudNodeController(
        client=env.client,
        nodes=env.informer,
        cloud=env.cloud,
        recorder=env.recorder,
        cloud_timeout=5,
    )
    with caplog.at_level("ERROR"):
        await controller.update_node_status()
    assert env.client.writes() == []
    assert "instance_metadata did not return within 5s" in caplog.text


@pytest.mark.looptime
async def test_status_loop_runs_at_most_its_workers_at_once_and_covers_every_node(
    env: Env,
) -> None:
    """--concurrent-node-status-updates bounds the refresh; every initialized Node is refreshed
    once and tainted ones are not asked about."""
    for i in range(30):
        env.cloud.add_instance(f"s{i}", addresses=[addr("InternalIP", f"10.1.0.{i}")])
        await add_node(env, make_node(f"s{i}", tainted=False))
    await add_node(env, make_node("tainted"))
    env.cloud.set_latency("instance-metadata", 1.0)
    in_flight = peak = 0
    asked: list[str] = []
    real = env.cloud.instance_metadata

    async def counting(node: Any) -> Any:
        nonlocal in_flight, peak
        asked.append(node.name)
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real(node)
        finally:
            in_flight -= 1

    env.cloud.instance_metadata = counting  # type: ignore[method-assign]
    controller = node_controller.CloudNodeController(
        client=env.client,
        nodes=env.informer,
        cloud=env.cloud,
        recorder=env.recorder,
        status_update_workers=4,
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    await controller.update_node_status()
    assert peak == 4
    assert sorted(asked) == sorted(f"s{i}" for i in range(30))
    assert loop.time() - start == pytest.approx(8.0)  # ceil(30 / 4) rounds of 1 s
    assert env.node("s7")["status"]["addresses"][0]["address"] == "10.1.0.7"


class DecodeRecordingClient(FakeKubeClient):
    """Records, per Node PATCH, the subresource and whether its answer was asked decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[tuple[str, bool]] = []

    async def patch(  # type: ignore[override]
        self, res: kclient.Resource, name: str, body: Any, **kw: Any
    ) -> dict[str, Any] | None:
        if res is kclient.NODES:
            self.patches.append((kw.get("subresource") or "", kw.get("decode", True)))
        result: dict[str, Any] | None = await super().patch(res, name, body, **kw)
        return result


async def test_only_the_patch_whose_answer_is_used_is_decoded() -> None:
    # No Node PATCH answer (a whole Node) is decoded: the initialisation PATCH's result is the
    # cached Node with the patch applied locally, the status and label PATCHes' are dropped.
    client = DecodeRecordingClient()
    cloud = FakeCloud()
    cloud.add_instance("node0", addresses=[addr("InternalIP", "10.0.0.1")])
    client.put_object(kclient.NODES, make_node("node0"))
    beta = {wellknown.LABEL_ZONE_BETA: "foo", wellknown.LABEL_ZONE: "blah"}
    client.put_object(kclient.NODES, make_node("node1", tainted=False, labels=beta))
    informer = kinformer.Informer(client, kclient.NODES)
    controller = node_controller.CloudNodeController(
        client=client, nodes=informer, cloud=cloud, recorder=Recorder()
    )
    task = asyncio.create_task(informer.run(), name="test/informer")
    try:
        await informer.wait_for_sync(timeout=5)
        await controller.sync_node("node0")
        assert client.patches == [("", False), ("status", False)]
        node0 = client.get_object(kclient.NODES, "node0")
        assert node0 is not None
        assert node0["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.0.0.1"}

        client.patches.clear()
        await controller.sync_node("node1")
        assert client.patches == [("", False)]
        node1 = client.get_object(kclient.NODES, "node1")
        assert node1 is not None
        assert node1["metadata"]["labels"][wellknown.LABEL_ZONE] == "foo"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()


def _histogram(name: str) -> tuple[float, float]:
    count = metrics.REGISTRY.get_sample_value(f"{name}_count") or 0.0
    total = metrics.REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    return count, total


async def test_taint_removal_and_initial_sync_delays_are_observed_from_creation(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.cloud.add_instance("node0", addresses=[addr("InternalIP", "10.0.0.1")])
    await add_node(env, make_node("node0"))
    stamp = env.node("node0")["metadata"]["creationTimestamp"]
    created = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    monkeypatch.setattr(clock, "wall", lambda: created.timestamp() + 42.5)
    names = (
        "node_controller_cloud_provider_taint_removal_delay_seconds",
        "node_controller_initial_node_sync_delay_seconds",
    )
    before = [_histogram(n) for n in names]
    await env.controller.sync_node("node0")
    assert not env.node("node0")["spec"].get("taints")
    for name, (count, total) in zip(names, before, strict=True):
        assert _histogram(name) == (count + 1.0, pytest.approx(total + 42.5)), name


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        pytest.param("2026-01-02T03:04:05Z", 1767323045.0, id="rfc3339"),
        pytest.param("2026-01-02 03:04:05Z", None, id="space"),
        pytest.param("2026-01-02T03:04:05+00:00", None, id="offset"),
        pytest.param("2026-01-02T03:04:05.5Z", None, id="fraction"),
        pytest.param("2026-13-02T03:04:05Z", None, id="month-13"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_creation_time_reads_only_the_kubernetes_timestamp_format(
    stamp: str | None, expected: float | None
) -> None:
    node = {"metadata": {"creationTimestamp": stamp}}
    assert node_controller_module._creation_time(node) == expected
