"""The fake cloud provider (ccm.testing.fake_cloud): every capability, switches, injected errors and
latency, the state file the tests write and the status file the fake writes."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ccm.cloudprovider import (
    Clusters,
    InitContext,
    Instances,
    InstancesV2,
    LoadBalancer,
    LoadBalancerStatus,
    Node,
    NodeAddress,
    Route,
    Routes,
    Service,
    Zone,
    Zones,
    init_cloud_provider,
)
from ccm.errors import (
    CloudProviderError,
    ConfigError,
    ImplementedElsewhereError,
    InstanceNotFoundError,
    NotImplementedByProviderError,
    RetryAfterError,
)
from ccm.testing.fake_cloud import (
    ALL_METHODS,
    REJECT_ANNOTATION,
    DefaultInstance,
    FakeCall,
    FakeCapabilities,
    FakeCloud,
    FakeCloudFactory,
    FakeCloudState,
    FakeCloudStatus,
    FakeInstance,
    make_error,
)

# ---- helpers


def node(name: str, provider_id: str = "", annotations: dict[str, str] | None = None) -> Node:
    data: dict[str, Any] = {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {}}
    if provider_id:
        data["spec"]["providerID"] = provider_id
    if annotations:
        data["metadata"]["annotations"] = annotations
    return Node(data)


def service(
    name: str = "web",
    namespace: str = "default",
    *,
    uid: str | None = None,
    ports: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    load_balancer_ip: str = "",
) -> Service:
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "ports": ports
        if ports is not None
        else [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
    }
    if load_balancer_ip:
        spec["loadBalancerIP"] = load_balancer_ip
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid if uid is not None else f"0000-{namespace}-{name}",
    }
    if annotations:
        metadata["annotations"] = annotations
    return Service({"metadata": metadata, "spec": spec})


def addr(address: str, kind: str = "InternalIP") -> NodeAddress:
    return NodeAddress(type=kind, address=address)


def ingress_ip(status: LoadBalancerStatus | None) -> str:
    assert status is not None
    return status.ingress[0].ip


@pytest.fixture
def cloud() -> FakeCloud:
    fake = FakeCloud()
    fake.add_instance(
        "node-1",
        instance_type="m5.large",
        zone="zone-a",
        region="region-1",
        addresses=[addr("10.0.0.1"), addr("node-1", "Hostname")],
        labels={"example.com/rack": "r1"},
    )
    fake.add_instance("node-2", provider_id="fake://i-0002", instance_type="m5.xlarge")
    return fake


# ---- capabilities


def test_every_capability_is_offered_by_default(cloud: FakeCloud) -> None:
    assert isinstance(cloud.instances_v2(), InstancesV2)
    assert isinstance(cloud.instances(), Instances)
    assert isinstance(cloud.zones(), Zones)
    assert isinstance(cloud.load_balancer(), LoadBalancer)
    assert isinstance(cloud.routes(), Routes)
    assert isinstance(cloud.clusters(), Clusters)
    assert cloud.provider_name == "fake"
    assert cloud.has_cluster_id()


@pytest.mark.parametrize(
    "capability", ["instances_v2", "instances", "zones", "load_balancer", "routes", "clusters"]
)
def test_each_capability_can_be_switched_off_in_process(capability: str) -> None:
    fake = FakeCloud(capabilities={capability: False})
    assert getattr(fake, capability)() is None
    others = {"instances_v2", "instances", "zones", "load_balancer", "routes", "clusters"}
    for other in others - {capability}:
        assert getattr(fake, other)() is fake
    setattr(fake.capabilities, capability, True)
    assert getattr(fake, capability)() is fake


def test_capabilities_can_be_switched_off_in_the_config() -> None:
    fake = FakeCloudFactory(
        b"capabilities: {instancesV2: false, loadBalancer: false, routes: false,"
        b" instances: false, zones: false, clusters: false}\n"
        b"providerName: acme\nhasClusterID: false\n"
    )
    assert fake.instances_v2() is None
    assert fake.instances() is None
    assert fake.zones() is None
    assert fake.load_balancer() is None
    assert fake.routes() is None
    assert fake.clusters() is None
    assert fake.provider_name == "acme"
    assert not fake.has_cluster_id()


def test_factory_without_config_builds_a_default_fake() -> None:
    fake = FakeCloudFactory(None)
    assert fake.capabilities == FakeCapabilities()
    assert fake.instance_table == {}
    assert FakeCloudFactory(b"").capabilities == FakeCapabilities()


def test_unknown_capability_name_is_rejected_in_process() -> None:
    with pytest.raises(TypeError):
        FakeCloud(capabilities={"teleport": False})


# ---- config validation


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param("capabilities: [", "is not valid YAML or JSON", id="not yaml"),
        pytest.param("- a\n- b\n", "must be a mapping, not list", id="not a mapping"),
        pytest.param("colour: blue\n", "colour: Extra inputs are not permitted", id="unknown key"),
        pytest.param(
            "capabilities: {routes: maybe}\n", "capabilities.routes: Input should be", id="bool"
        ),
        pytest.param(
            "loadBalancer: {ipPool: 192.0.2.1/24}\n",
            "loadBalancer.ipPool: '192.0.2.1/24' is not a CIDR",
            id="pool with host bits",
        ),
        pytest.param(
            "errors: [{method: teleport}]\n",
            "errors.0.method: unknown fake cloud method 'teleport'",
            id="unknown method",
        ),
        pytest.param(
            "errors: [{method: create, kind: explode}]\n",
            "errors.0.kind: Input should be",
            id="unknown kind",
        ),
        pytest.param(
            "errors: [{method: create, times: 0}]\n",
            "errors.0.times: Input should be greater",
            id="times zero",
        ),
        pytest.param(
            "latency: {create: -1}\n", "latency: latency of 'create' must be >= 0", id="latency"
        ),
        pytest.param(
            "instances: {n1: {providerID: n1}}\n",
            "instances.n1.providerID: malformed provider ID",
            id="provider id",
        ),
        pytest.param(
            "instances: {n1: {addresses: [{type: Public, address: 1.2.3.4}]}}\n",
            "instances.n1.addresses.0.type: Input should be",
            id="address type",
        ),
        pytest.param(
            "providerName: 'Fake Cloud'\n", "providerName: String should match", id="name"
        ),
        pytest.param("rateLimit: {qps: 0}\n", "rateLimit.qps: Input should be greater", id="qps"),
        pytest.param(
            "routes: [{targetNode: n1, destinationCIDR: nope}]\n",
            "routes.0.destinationCIDR: 'nope' is not a CIDR",
            id="route cidr",
        ),
    ],
)
def test_malformed_config_is_one_line_naming_the_problem(config: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FakeCloudFactory(config.encode())
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_several_problems_are_counted_in_the_one_line() -> None:
    with pytest.raises(ConfigError, match=r"\(and 1 more problem\)$"):
        FakeCloudFactory(b"colour: blue\nshape: round\n")


def test_config_may_be_json() -> None:
    fake = FakeCloudFactory(json.dumps({"instances": {"n1": {"instanceType": "big"}}}).encode())
    assert fake.instance_table["n1"].instance_type == "big"


# ---- InstancesV2


async def test_instance_metadata_describes_a_known_instance(cloud: FakeCloud) -> None:
    meta = await cloud.instance_metadata(node("node-1"))
    assert meta is not None
    assert meta.provider_id == "fake://node-1"
    assert meta.instance_type == "m5.large"
    assert meta.zone == "zone-a"
    assert meta.region == "region-1"
    assert meta.node_addresses == (addr("10.0.0.1"), addr("node-1", "Hostname"))
    assert dict(meta.additional_labels) == {"example.com/rack": "r1"}


async def test_instance_is_found_by_provider_id(cloud: FakeCloud) -> None:
    meta = await cloud.instance_metadata(node("whatever-name", "fake://i-0002"))
    assert meta is not None
    assert (meta.provider_id, meta.instance_type) == ("fake://i-0002", "m5.xlarge")
    assert await cloud.instance_exists(node("other", "fake://i-0002"))


async def test_provider_id_is_authoritative_over_the_name(cloud: FakeCloud) -> None:
    assert not await cloud.instance_exists(node("node-1", "fake://i-gone"))
    assert not await cloud.instance_exists(node("node-1", "othercloud://node-1"))


async def test_unknown_node_does_not_exist_and_has_no_metadata(cloud: FakeCloud) -> None:
    assert not await cloud.instance_exists(node("node-9"))
    with pytest.raises(InstanceNotFoundError, match="node-9"):
        await cloud.instance_metadata(node("node-9"))
    with pytest.raises(InstanceNotFoundError):
        await cloud.instance_shutdown(node("node-9"))


async def test_instance_marked_gone_does_not_exist(cloud: FakeCloud) -> None:
    cloud.instance_table["node-1"].exists = False
    assert not await cloud.instance_exists(node("node-1"))
    with pytest.raises(InstanceNotFoundError):
        await cloud.instance_metadata(node("node-1"))


async def test_removed_instance_does_not_exist(cloud: FakeCloud) -> None:
    cloud.remove_instance("node-1")
    cloud.remove_instance("node-1")
    assert not await cloud.instance_exists(node("node-1"))


async def test_shut_down_instance_still_exists(cloud: FakeCloud) -> None:
    cloud.instance_table["node-1"].shutdown = True
    assert await cloud.instance_exists(node("node-1"))
    assert await cloud.instance_shutdown(node("node-1"))
    assert not await cloud.instance_shutdown(node("node-2"))


async def test_provider_name_prefixes_generated_provider_ids() -> None:
    fake = FakeCloud(provider_name="acme", instances=[FakeInstance(name="n1")])
    meta = await fake.instance_metadata(node("n1"))
    assert meta is not None
    assert meta.provider_id == "acme://n1"
    assert await fake.instance_exists(node("x", "acme://n1"))


# ---- default instance


async def test_default_instance_answers_any_node_name_deterministically() -> None:
    default = DefaultInstance(zones=("zone-a", "zone-b", "zone-c"), region="r1")
    one, two = FakeCloud(default_instance=default), FakeCloud(default_instance=default)
    names = [f"node-{i}" for i in range(50)]
    first = [await one.instance_metadata(node(n)) for n in names]
    second = [await two.instance_metadata(node(n)) for n in names]
    assert first == second
    internal = [m.node_addresses[0].address for m in first if m is not None]
    assert len(set(internal)) == len(names)
    for ip in internal:
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.0.0.0/8")
    assert {m.zone for m in first if m is not None} == {"zone-a", "zone-b", "zone-c"}
    meta = first[0]
    assert meta is not None
    assert meta.provider_id == "fake://node-0"
    assert meta.instance_type == "fake.medium"
    assert meta.region == "r1"
    assert meta.node_addresses[-1] == addr("node-0", "Hostname")
    assert await one.instance_exists(node("anything"))
    assert await one.instance_exists(node("anything", "fake://anything"))
    assert not await one.instance_exists(node("anything", "other://anything"))


async def test_default_instance_can_add_external_addresses_and_labels() -> None:
    fake = FakeCloud(
        default_instance=DefaultInstance(
            internal_cidr="fd00::/64",
            external_cidr="198.51.100.0/24",
            hostname_address=False,
            labels={"example.com/pool": "default"},
        )
    )
    meta = await fake.instance_metadata(node("n1"))
    assert meta is not None
    internal, external = meta.node_addresses
    assert internal.type == "InternalIP"
    assert ipaddress.ip_address(internal.address) in ipaddress.ip_network("fd00::/64")
    assert external.type == "ExternalIP"
    assert ipaddress.ip_address(external.address) in ipaddress.ip_network("198.51.100.0/24")
    assert dict(meta.additional_labels) == {"example.com/pool": "default"}


async def test_default_instance_uses_the_provided_node_ip_annotation() -> None:
    fake = FakeCloud(default_instance=DefaultInstance())
    annotated = node("n1", annotations={"alpha.kubernetes.io/provided-node-ip": "10.1.2.3,fd00::3"})
    meta = await fake.instance_metadata(annotated)
    assert meta is not None
    assert meta.node_addresses[:2] == (addr("10.1.2.3"), addr("fd00::3"))
    fake.default_instance = DefaultInstance(use_provided_node_ip=False)
    meta = await fake.instance_metadata(annotated)
    assert meta is not None
    assert meta.node_addresses[0].address != "10.1.2.3"


async def test_listed_instances_override_the_default_instance() -> None:
    fake = FakeCloud(default_instance=DefaultInstance())
    fake.add_instance("node-gone", exists=False)
    fake.add_instance("node-big", instance_type="huge")
    assert not await fake.instance_exists(node("node-gone"))
    assert not await fake.instance_exists(node("x", "fake://node-gone"))
    meta = await fake.instance_metadata(node("node-big"))
    assert meta is not None
    assert meta.instance_type == "huge"


# ---- Instances (legacy)


async def test_legacy_instances_answer_by_name_and_by_provider_id(cloud: FakeCloud) -> None:
    assert await cloud.node_addresses("node-1") == (addr("10.0.0.1"), addr("node-1", "Hostname"))
    assert await cloud.node_addresses_by_provider_id("fake://node-1") == (
        addr("10.0.0.1"),
        addr("node-1", "Hostname"),
    )
    assert await cloud.instance_id("node-1") == "node-1"
    assert await cloud.instance_id("node-2") == "i-0002"
    assert await cloud.instance_type("node-1") == "m5.large"
    assert await cloud.instance_type_by_provider_id("fake://i-0002") == "m5.xlarge"
    assert await cloud.instance_exists_by_provider_id("fake://i-0002")
    assert not await cloud.instance_exists_by_provider_id("fake://i-9999")
    assert not await cloud.instance_shutdown_by_provider_id("fake://node-1")
    assert await cloud.current_node_name("host-7") == "host-7"


async def test_legacy_instances_raise_instance_not_found_for_unknown_instances(
    cloud: FakeCloud,
) -> None:
    cloud.instance_table["node-1"].exists = False
    for call in (
        cloud.node_addresses("node-1"),
        cloud.node_addresses_by_provider_id("fake://nope"),
        cloud.instance_id("node-9"),
        cloud.instance_type("node-9"),
        cloud.instance_type_by_provider_id("fake://nope"),
        cloud.instance_shutdown_by_provider_id("fake://nope"),
    ):
        with pytest.raises(InstanceNotFoundError):
            await call


async def test_stopped_instance_still_has_an_instance_id(cloud: FakeCloud) -> None:
    cloud.instance_table["node-1"].shutdown = True
    assert await cloud.instance_id("node-1") == "node-1"
    assert await cloud.instance_shutdown_by_provider_id("fake://node-1")


async def test_shutdown_by_empty_provider_id_is_an_error(cloud: FakeCloud) -> None:
    with pytest.raises(CloudProviderError, match="empty provider ID"):
        await cloud.instance_shutdown_by_provider_id("")


async def test_adding_ssh_keys_is_not_implemented(cloud: FakeCloud) -> None:
    with pytest.raises(NotImplementedByProviderError):
        await cloud.add_ssh_key_to_all_instances("core", b"ssh-ed25519 AAAA")


# ---- Zones and Clusters


async def test_zones_come_from_the_instance_and_the_local_zone() -> None:
    fake = FakeCloud(local_zone=Zone(failure_domain="here", region="r0"))
    fake.add_instance("n1", zone="zone-b", region="r2")
    assert await fake.get_zone() == Zone(failure_domain="here", region="r0")
    assert await fake.get_zone_by_node_name("n1") == Zone(failure_domain="zone-b", region="r2")
    assert await fake.get_zone_by_provider_id("fake://n1") == Zone(
        failure_domain="zone-b", region="r2"
    )
    with pytest.raises(InstanceNotFoundError):
        await fake.get_zone_by_node_name("n9")


async def test_clusters_lists_names_and_master() -> None:
    fake = FakeCloudFactory(b"clusters: {names: [one, two], master: 10.0.0.10}\n")
    assert await fake.list_clusters() == ("one", "two")
    assert await fake.master("one") == "10.0.0.10"


# ---- recorded calls


async def test_calls_are_recorded_with_upstream_like_names_and_keys(cloud: FakeCloud) -> None:
    svc = service()
    await cloud.instance_exists(node("node-1"))
    await cloud.instance_shutdown(node("node-1"))
    await cloud.instance_metadata(node("node-1", "fake://node-1"))
    await cloud.ensure_load_balancer("kubernetes", svc, [node("node-1")])
    await cloud.get_load_balancer("kubernetes", svc)
    await cloud.update_load_balancer("kubernetes", svc, [])
    await cloud.ensure_load_balancer_deleted("kubernetes", svc)
    await cloud.list_routes("kubernetes")
    route = Route(target_node="node-1", destination_cidr="10.244.1.0/24")
    await cloud.create_route("kubernetes", "uid-1", route)
    await cloud.delete_route("kubernetes", route)
    await cloud.instance_exists_by_provider_id("fake://node-1")
    await cloud.get_zone_by_node_name("node-1")
    assert cloud.calls == [
        ("instance-exists", "node-1"),
        ("instance-shutdown", "node-1"),
        ("instance-metadata", "node-1"),
        ("create", "default/web"),
        ("get", "default/web"),
        ("update", "default/web"),
        ("delete", "default/web"),
        ("list-routes", "kubernetes"),
        ("create-route", "node-1"),
        ("delete-route", "node-1"),
        ("instance-exists-by-provider-id", "fake://node-1"),
        ("get-zone-by-node-name", "node-1"),
    ]
    assert cloud.calls[0] == FakeCall("instance-exists", "node-1")
    assert cloud.calls[0].method == "instance-exists"
    assert cloud.total_calls == 12
    assert cloud.call_count() == 12
    assert cloud.call_count("create") == 1
    assert cloud.call_count("instance-exists", "node-1") == 1
    assert cloud.call_count("instance-exists", "node-2") == 0
    assert cloud.call_counts["get"] == 1
    assert {m for m, _ in cloud.calls} <= ALL_METHODS


async def test_clear_calls_forgets_calls_and_counters(cloud: FakeCloud) -> None:
    await cloud.instance_exists(node("node-1"))
    cloud.clear_calls()
    assert cloud.calls == []
    assert cloud.total_calls == 0
    assert cloud.call_count("instance-exists") == 0
    assert cloud.call_count("instance-exists", "node-1") == 0


async def test_counters_are_kept_when_the_call_list_is_off() -> None:
    fake = FakeCloudFactory(b"recordCalls: false\ndefaultInstance: {}\n")
    for i in range(5):
        await fake.instance_metadata(node(f"n{i}"))
    assert fake.calls == []
    assert fake.call_count("instance-metadata") == 5
    assert fake.total_calls == 5


async def test_get_load_balancer_name_is_not_recorded(cloud: FakeCloud) -> None:
    cloud.get_load_balancer_name("kubernetes", service())
    assert cloud.calls == []


# ---- injected errors


async def test_injected_error_fails_every_call_of_that_method(cloud: FakeCloud) -> None:
    cloud.inject_error("instance-metadata", CloudProviderError("api down"))
    for _ in range(3):
        with pytest.raises(CloudProviderError, match="api down"):
            await cloud.instance_metadata(node("node-1"))
    assert await cloud.instance_exists(node("node-1"))
    cloud.clear_errors()
    assert await cloud.instance_metadata(node("node-1")) is not None


async def test_injected_error_with_times_fails_that_many_calls_then_succeeds(
    cloud: FakeCloud,
) -> None:
    rule = cloud.inject_error("instance-exists", times=2)
    for _ in range(2):
        with pytest.raises(CloudProviderError, match="injected"):
            await cloud.instance_exists(node("node-1"))
    assert await cloud.instance_exists(node("node-1"))
    assert rule.fired == 2
    assert rule.times == 0


async def test_injected_error_can_target_one_node(cloud: FakeCloud) -> None:
    cloud.inject_error("instance-metadata", InstanceNotFoundError(), key="node-2")
    assert await cloud.instance_metadata(node("node-1")) is not None
    with pytest.raises(InstanceNotFoundError):
        await cloud.instance_metadata(node("node-2"))
    # the provider ID is an identifier of the call too
    cloud.clear_errors()
    cloud.inject_error("instance-exists", key="fake://i-0002")
    with pytest.raises(CloudProviderError):
        await cloud.instance_exists(node("renamed", "fake://i-0002"))


async def test_injected_error_can_target_one_service(cloud: FakeCloud) -> None:
    cloud.inject_error("create", RetryAfterError("provisioning", 12), key="default/slow")
    await cloud.ensure_load_balancer("kubernetes", service("fast"), [])
    with pytest.raises(RetryAfterError) as caught:
        await cloud.ensure_load_balancer("kubernetes", service("slow"), [])
    assert caught.value.delay == 12
    assert cloud.load_balancer_for("default/slow") is None


async def test_wildcard_error_fails_every_cloud_call_but_not_the_lifecycle(
    cloud: FakeCloud,
) -> None:
    cloud.inject_error("*", RuntimeError("outage"))
    with pytest.raises(RuntimeError, match="outage"):
        await cloud.instance_exists(node("node-1"))
    with pytest.raises(RuntimeError, match="outage"):
        await cloud.list_routes("kubernetes")
    await cloud.initialize(InitContext())
    await cloud.aclose()


async def test_errors_are_checked_in_order_and_the_first_match_fires(cloud: FakeCloud) -> None:
    cloud.inject_error("get", CloudProviderError("first"), times=1)
    cloud.inject_error("get", CloudProviderError("second"))
    with pytest.raises(CloudProviderError, match="first"):
        await cloud.get_load_balancer("kubernetes", service())
    with pytest.raises(CloudProviderError, match="second"):
        await cloud.get_load_balancer("kubernetes", service())


async def test_injected_error_may_be_a_class_or_a_factory(cloud: FakeCloud) -> None:
    cloud.inject_error("update", ImplementedElsewhereError, times=1)
    cloud.inject_error("update", lambda: RetryAfterError("later", 3), times=1)
    with pytest.raises(ImplementedElsewhereError):
        await cloud.update_load_balancer("kubernetes", service(), [])
    with pytest.raises(RetryAfterError):
        await cloud.update_load_balancer("kubernetes", service(), [])


def test_injecting_an_error_for_an_unknown_method_is_refused(cloud: FakeCloud) -> None:
    with pytest.raises(ValueError, match="unknown fake cloud method 'instance-metdata'"):
        cloud.inject_error("instance-metdata")
    with pytest.raises(ValueError, match="unknown fake cloud method"):
        cloud.set_latency("teleport", 1)


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        pytest.param("cloud", CloudProviderError, id="cloud"),
        pytest.param("retryAfter", RetryAfterError, id="retryAfter"),
        pytest.param("instanceNotFound", InstanceNotFoundError, id="instanceNotFound"),
        pytest.param("implementedElsewhere", ImplementedElsewhereError, id="implementedElsewhere"),
        pytest.param("notImplemented", NotImplementedByProviderError, id="notImplemented"),
        pytest.param("generic", RuntimeError, id="generic"),
    ],
)
async def test_config_error_kinds_raise_their_exception(kind: str, cls: type[Exception]) -> None:
    fake = FakeCloudFactory(
        f"errors: [{{method: instance-metadata, kind: {kind}, message: boom, retryAfter: 4}}]\n"
        "defaultInstance: {}\n".encode()
    )
    with pytest.raises(cls, match="boom") as caught:
        await fake.instance_metadata(node("n1"))
    assert type(caught.value) is cls
    if isinstance(caught.value, RetryAfterError):
        assert caught.value.delay == 4
    assert type(make_error("generic")) is RuntimeError


# ---- latency, rate limit, hook


@pytest.mark.looptime
async def test_latency_is_an_async_sleep_per_method(cloud: FakeCloud) -> None:
    loop = asyncio.get_running_loop()
    cloud.set_latency("*", 0.5)
    cloud.set_latency("instance-metadata", 30)
    start = loop.time()
    await cloud.instance_metadata(node("node-1"))
    assert loop.time() - start == pytest.approx(30)
    start = loop.time()
    await cloud.instance_exists(node("node-1"))
    assert loop.time() - start == pytest.approx(0.5)
    start = loop.time()
    await cloud.initialize(InitContext())  # lifecycle is not covered by "*"
    assert loop.time() - start == pytest.approx(0)


@pytest.mark.looptime
async def test_concurrent_calls_sleep_their_latency_in_parallel(cloud: FakeCloud) -> None:
    loop = asyncio.get_running_loop()
    cloud.set_latency("instance-exists", 2)
    start = loop.time()
    await asyncio.gather(*(cloud.instance_exists(node("node-1")) for _ in range(10)))
    assert loop.time() - start == pytest.approx(2)


@pytest.mark.looptime
async def test_rate_limit_spaces_calls_after_the_burst(cloud: FakeCloud) -> None:
    loop = asyncio.get_running_loop()
    cloud.set_rate_limit(5, burst=2)
    start = loop.time()
    await asyncio.gather(*(cloud.instance_exists(node("node-1")) for _ in range(12)))
    assert loop.time() - start == pytest.approx(2.0)  # 2 free, then 10 at 5/s
    cloud.set_rate_limit(None)
    start = loop.time()
    await asyncio.gather(*(cloud.instance_exists(node("node-1")) for _ in range(12)))
    assert loop.time() - start == pytest.approx(0)


@pytest.mark.looptime
async def test_a_rejecting_rate_limit_answers_429_with_when_the_next_token_comes(
    cloud: FakeCloud,
) -> None:
    cloud.set_rate_limit(2, burst=2, reject=True)
    await cloud.instance_exists(node("node-1"))
    await cloud.instance_exists(node("node-1"))
    with pytest.raises(RetryAfterError, match="429 Too Many Requests") as info:
        await cloud.instance_exists(node("node-1"))
    assert info.value.delay == pytest.approx(0.5)
    await asyncio.sleep(0.25)  # a refusal took no token: the hint shrinks with time
    with pytest.raises(RetryAfterError) as info:
        await cloud.instance_metadata(node("node-1"))
    assert info.value.delay == pytest.approx(0.25)
    await asyncio.sleep(info.value.delay)
    assert await cloud.instance_exists(node("node-1")) is True


@pytest.mark.looptime
async def test_a_rejecting_rate_limit_can_come_from_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    FakeCloudState().set_rate_limit(1, burst=1, reject=True).write(path)
    fake = FakeCloudFactory(f"stateFile: {path}\ndefaultInstance: {{}}\n".encode())
    await fake.instance_exists(node("n1"))
    with pytest.raises(RetryAfterError) as info:
        await fake.instance_exists(node("n2"))
    assert info.value.delay == pytest.approx(1.0)


@pytest.mark.looptime
async def test_latency_and_rate_limit_can_come_from_the_config() -> None:
    fake = FakeCloudFactory(
        b'latency: {"*": 0.25}\nrateLimit: {qps: 1, burst: 1}\ndefaultInstance: {}\n'
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(3):
        await fake.instance_exists(node(f"n{i}"))
    assert loop.time() - start == pytest.approx(2.25)


@pytest.mark.looptime
async def test_a_call_that_ignores_cancellation_answers_late_instead_of_stopping(
    cloud: FakeCloud,
) -> None:
    loop = asyncio.get_running_loop()
    cloud.set_latency("instance-exists", 10)
    cloud.ignore_cancellation = {"instance-exists"}
    start = loop.time()
    task = asyncio.create_task(cloud.instance_exists(node("node-1")), name="test/exists")
    await asyncio.sleep(1)
    task.cancel()
    assert await task is True  # the cancellation was swallowed: the full answer, late
    assert loop.time() - start == pytest.approx(10)

    cloud.ignore_cancellation = set()
    task = asyncio.create_task(cloud.instance_exists(node("node-1")), name="test/exists")
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.looptime
async def test_ignore_cancellation_comes_from_the_state_file_and_the_wildcard_covers_cloud_calls(
    tmp_path: Path,
) -> None:
    state = FakeCloudState().set_default_instance().set_latency("*", 5)
    state.set_ignore_cancellation("*").write(tmp_path / "state.json")
    fake = FakeCloudFactory(_config(tmp_path))
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(1) as bound:
        meta = await fake.instance_metadata(node("node-1"))
    assert meta is not None  # the late answer arrived: the timeout could not stop the call
    assert bound.expired()
    assert loop.time() - start == pytest.approx(5)
    assert fake.ignore_cancellation == {"*"}

    state.set_ignore_cancellation().write(tmp_path / "state.json")
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await fake.instance_metadata(node("node-1"))
    assert loop.time() - start == pytest.approx(1)
    assert fake.ignore_cancellation == set()


async def test_call_hook_can_hold_a_call(cloud: FakeCloud) -> None:
    release = asyncio.Event()
    seen: list[FakeCall] = []

    async def hook(call: FakeCall) -> None:
        seen.append(call)
        if call.method == "create":
            await release.wait()

    cloud.call_hook = hook
    task = asyncio.create_task(cloud.ensure_load_balancer("kubernetes", service(), []))
    await asyncio.sleep(0.01)
    assert not task.done()
    assert cloud.load_balancers == {}
    release.set()
    await task
    assert len(cloud.load_balancers) == 1
    assert seen == [("create", "default/web")]


async def test_every_call_suspends_at_least_once(cloud: FakeCloud) -> None:
    other_ran = False

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    task = asyncio.create_task(other())
    await cloud.instance_exists(node("node-1"))
    assert other_ran
    await task


# ---- load balancers


async def test_ensure_creates_a_load_balancer_with_an_ip_from_the_pool(cloud: FakeCloud) -> None:
    svc = service()
    status = await cloud.ensure_load_balancer("kubernetes", svc, [node("node-2"), node("node-1")])
    ip = ingress_ip(status)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("192.0.2.0/24")
    assert ip not in ("192.0.2.0", "192.0.2.255")
    name = cloud.get_load_balancer_name("kubernetes", svc)
    assert name == "a0000defaultweb"
    lb = cloud.load_balancers[name]
    assert lb.service == "default/web"
    assert lb.nodes == ("node-1", "node-2")
    assert lb.ports[0].port == 80
    assert lb.ports[0].node_port == 30080
    assert cloud.load_balancer_for("default/web") is lb
    assert await cloud.get_load_balancer("kubernetes", svc) == status


async def test_ensure_is_idempotent(cloud: FakeCloud) -> None:
    svc = service()
    first = await cloud.ensure_load_balancer("kubernetes", svc, [node("node-1")])
    second = await cloud.ensure_load_balancer("kubernetes", svc, [node("node-1")])
    assert first == second
    assert len(cloud.load_balancers) == 1
    assert cloud.load_balancer_for("default/web").ensure_count == 2  # type: ignore[union-attr]


async def test_ip_depends_on_the_service_not_on_the_order_of_creation() -> None:
    one, two = FakeCloud(), FakeCloud()
    names = [f"svc-{i}" for i in range(20)]
    ips_one = {n: ingress_ip(await one.ensure_load_balancer("k", service(n), [])) for n in names}
    ips_two = {
        n: ingress_ip(await two.ensure_load_balancer("k", service(n), [])) for n in reversed(names)
    }
    assert len(set(ips_one.values())) == len(names)
    # without collisions the hashed address is the same whatever the order
    assert sum(ips_one[n] == ips_two[n] for n in names) >= len(names) - 4


async def test_update_replaces_the_backends(cloud: FakeCloud) -> None:
    svc = service()
    await cloud.ensure_load_balancer("kubernetes", svc, [node("node-1")])
    await cloud.update_load_balancer("kubernetes", svc, [node("node-2"), node("node-3")])
    lb = cloud.load_balancer_for("default/web")
    assert lb is not None
    assert lb.nodes == ("node-2", "node-3")
    assert lb.update_count == 1


async def test_update_of_a_missing_load_balancer_fails(cloud: FakeCloud) -> None:
    with pytest.raises(CloudProviderError, match="does not exist"):
        await cloud.update_load_balancer("kubernetes", service(), [])


async def test_delete_is_idempotent_and_frees_the_ip() -> None:
    fake = FakeCloud(ip_pool="192.0.2.0/30")  # two usable addresses
    svc_a, svc_b, svc_c = service("a"), service("b"), service("c")
    await fake.ensure_load_balancer("k", svc_a, [])
    await fake.ensure_load_balancer("k", svc_b, [])
    with pytest.raises(CloudProviderError, match=r"pool 192\.0\.2\.0/30 is exhausted"):
        await fake.ensure_load_balancer("k", svc_c, [])
    await fake.ensure_load_balancer_deleted("k", svc_a)
    await fake.ensure_load_balancer_deleted("k", svc_a)
    assert await fake.get_load_balancer("k", svc_a) is None
    assert ingress_ip(await fake.ensure_load_balancer("k", svc_c, [])) in (
        "192.0.2.1",
        "192.0.2.2",
    )


async def test_requested_load_balancer_ip_is_honoured(cloud: FakeCloud) -> None:
    status = await cloud.ensure_load_balancer("k", service("a", load_balancer_ip="203.0.113.7"), [])
    assert ingress_ip(status) == "203.0.113.7"
    with pytest.raises(CloudProviderError, match="already in use"):
        await cloud.ensure_load_balancer("k", service("b", load_balancer_ip="203.0.113.7"), [])
    with pytest.raises(CloudProviderError, match="invalid loadBalancerIP"):
        await cloud.ensure_load_balancer("k", service("c", load_balancer_ip="not-an-ip"), [])


async def test_reject_annotation_fails_ensure_with_its_message(cloud: FakeCloud) -> None:
    svc = service(annotations={REJECT_ANNOTATION: "quota exceeded for load balancers"})
    assert REJECT_ANNOTATION == "fake.ccm.io/reject"
    with pytest.raises(CloudProviderError, match=r"^quota exceeded for load balancers$"):
        await cloud.ensure_load_balancer("kubernetes", svc, [])
    assert cloud.load_balancers == {}
    with pytest.raises(CloudProviderError, match="rejected by the fake cloud"):
        await cloud.ensure_load_balancer("k", service(annotations={REJECT_ANNOTATION: ""}), [])


async def test_rejected_protocol_fails_ensure(cloud: FakeCloud) -> None:
    svc = service(ports=[{"name": "sig", "port": 9899, "protocol": "SCTP"}])
    with pytest.raises(CloudProviderError, match=r"do not support protocol SCTP.*port sig"):
        await cloud.ensure_load_balancer("kubernetes", svc, [])
    udp_only = FakeCloudFactory(b"loadBalancer: {rejectProtocols: [udp]}\n")
    await udp_only.ensure_load_balancer("k", svc, [])
    with pytest.raises(CloudProviderError, match="protocol UDP"):
        await udp_only.ensure_load_balancer(
            "k", service(ports=[{"port": 53, "protocol": "UDP"}]), []
        )


async def test_ip_mode_and_port_status_are_reported_when_configured() -> None:
    fake = FakeCloudFactory(
        b"loadBalancer: {ipPool: 198.51.100.0/24, ipMode: Proxy, reportPorts: true}\n"
    )
    status = await fake.ensure_load_balancer("k", service(), [])
    (ingress,) = status.ingress
    assert ipaddress.ip_address(ingress.ip) in ipaddress.ip_network("198.51.100.0/24")
    assert ingress.ip_mode == "Proxy"
    assert [(p.port, p.protocol) for p in ingress.ports] == [(80, "TCP")]


async def test_service_without_uid_gets_a_name_from_its_key(cloud: FakeCloud) -> None:
    await cloud.ensure_load_balancer("k", service("a", uid=""), [])
    await cloud.ensure_load_balancer("k", service("b", uid=""), [])
    assert sorted(cloud.load_balancers) == ["a-default-a", "a-default-b"]


# ---- routes


async def test_routes_are_created_listed_per_cluster_and_deleted(cloud: FakeCloud) -> None:
    route = Route(
        target_node="node-1",
        destination_cidr="10.244.1.0/24",
        target_node_addresses=(addr("10.0.0.1"),),
    )
    await cloud.create_route("kubernetes", "uid-1", route)
    await cloud.create_route(
        "other", "uid-9", Route(target_node="x", destination_cidr="10.9.0.0/16")
    )
    (listed,) = await cloud.list_routes("kubernetes")
    assert listed.name == "kubernetes-uid-1-10.244.1.0-24"
    assert listed.target_node == "node-1"
    assert listed.destination_cidr == "10.244.1.0/24"
    assert listed.target_node_addresses == (addr("10.0.0.1"),)
    assert not listed.blackhole
    assert not listed.enable_node_addresses
    assert len(await cloud.list_routes("other")) == 1
    assert await cloud.list_routes("nobody") == ()
    await cloud.delete_route("kubernetes", listed)
    assert await cloud.list_routes("kubernetes") == ()
    assert len(await cloud.list_routes("other")) == 1


async def test_creating_the_same_route_twice_is_a_no_op(cloud: FakeCloud) -> None:
    route = Route(target_node="node-1", destination_cidr="10.244.1.0/24")
    await cloud.create_route("k", "uid-1", route)
    await cloud.create_route("k", "uid-1", route)
    assert len(await cloud.list_routes("k")) == 1


async def test_routing_a_cidr_to_another_node_fails(cloud: FakeCloud) -> None:
    await cloud.create_route("k", "uid-1", Route(target_node="n1", destination_cidr="10.1.0.0/24"))
    with pytest.raises(CloudProviderError, match=r"already exists.*targets node n1"):
        await cloud.create_route(
            "k", "uid-2", Route(target_node="n2", destination_cidr="10.1.0.0/24")
        )
    with pytest.raises(CloudProviderError, match="is not a CIDR"):
        await cloud.create_route("k", "uid-3", Route(target_node="n3", destination_cidr="bad"))


async def test_deleting_a_missing_route_is_a_no_op(cloud: FakeCloud) -> None:
    await cloud.delete_route(
        "k", Route(name="gone", target_node="n1", destination_cidr="10.0.0.0/24")
    )
    assert cloud.call_count("delete-route") == 1


async def test_route_is_deleted_by_target_and_cidr_when_the_name_differs(cloud: FakeCloud) -> None:
    await cloud.create_route("k", "uid-1", Route(target_node="n1", destination_cidr="10.1.0.0/24"))
    await cloud.delete_route(
        "k", Route(name="other-name", target_node="n1", destination_cidr="10.1.0.0/24")
    )
    assert await cloud.list_routes("k") == ()


async def test_route_blackhole_flag_can_be_set(cloud: FakeCloud) -> None:
    cloud.add_route("k", Route(target_node="n1", destination_cidr="10.1.0.0/24"))
    cloud.set_route_blackhole("k", "n1")
    (route,) = await cloud.list_routes("k")
    assert route.blackhole
    cloud.set_route_blackhole("k", route.name, blackhole=False)
    assert not (await cloud.list_routes("k"))[0].blackhole
    with pytest.raises(KeyError):
        cloud.set_route_blackhole("k", "nobody")


async def test_routes_to_gone_instances_can_be_marked_blackhole_automatically() -> None:
    fake = FakeCloud(routes_auto_blackhole=True, routes_enable_node_addresses=True)
    fake.add_instance("alive")
    fake.add_route("k", Route(target_node="alive", destination_cidr="10.1.0.0/24"))
    fake.add_route("k", Route(target_node="dead", destination_cidr="10.2.0.0/24"))
    routes = {r.target_node: r for r in await fake.list_routes("k")}
    assert not routes["alive"].blackhole
    assert routes["dead"].blackhole
    assert all(r.enable_node_addresses for r in routes.values())


# ---- lifecycle


async def test_initialize_and_aclose_are_recorded(cloud: FakeCloud) -> None:
    assert not cloud.initialized
    context = InitContext(cluster_name="prod")
    await cloud.initialize(context)
    assert cloud.initialized
    assert cloud.init_context is context
    assert cloud.initialized_cluster_name == "prod"
    await cloud.aclose()
    assert cloud.closed
    assert cloud.calls == [("initialize", "prod"), ("aclose", "")]


async def test_initialize_can_be_made_to_fail(cloud: FakeCloud) -> None:
    cloud.inject_error("initialize", CloudProviderError("bad credentials"))
    with pytest.raises(CloudProviderError, match="bad credentials"):
        await cloud.initialize(InitContext())
    assert not cloud.initialized


# ---- state file


def _config(tmp_path: Path, extra: str = "") -> bytes:
    return (
        f"stateFile: {tmp_path / 'state.json'}\nstatusFile: {tmp_path / 'status.json'}\n{extra}"
    ).encode()


async def test_state_file_changes_the_cloud_while_it_runs(tmp_path: Path) -> None:
    state = FakeCloudState().add_instance("node-1", instance_type="small", zone="zone-a")
    state.write(tmp_path / "state.json")
    fake = FakeCloudFactory(_config(tmp_path))
    meta = await fake.instance_metadata(node("node-1"))
    assert meta is not None
    assert (meta.instance_type, meta.zone) == ("small", "zone-a")

    state.update_instance("node-1", instance_type="large").add_instance("node-2")
    state.write(tmp_path / "state.json")
    meta = await fake.instance_metadata(node("node-1"))
    assert meta is not None
    assert meta.instance_type == "large"
    assert await fake.instance_exists(node("node-2"))

    state.remove_instance("node-1").write(tmp_path / "state.json")
    assert not await fake.instance_exists(node("node-1"))
    assert fake.state_generation == 3


async def test_state_file_injects_and_clears_errors_for_one_node(tmp_path: Path) -> None:
    state = FakeCloudState().set_default_instance()
    state.inject_error("instance-metadata", key="node-2", message="metadata service down")
    state.write(tmp_path / "state.json")
    fake = FakeCloudFactory(_config(tmp_path))
    assert await fake.instance_metadata(node("node-1")) is not None
    with pytest.raises(CloudProviderError, match="metadata service down"):
        await fake.instance_metadata(node("node-2"))
    state.clear_errors().write(tmp_path / "state.json")
    assert await fake.instance_metadata(node("node-2")) is not None


async def test_unchanged_sections_are_not_reapplied(tmp_path: Path) -> None:
    state = FakeCloudState().set_default_instance()
    state.inject_error("instance-exists", times=2)
    state.add_route("node-1", "10.244.1.0/24")
    state.write(tmp_path / "state.json")
    fake = FakeCloudFactory(_config(tmp_path))
    with pytest.raises(CloudProviderError):
        await fake.instance_exists(node("n1"))
    await fake.create_route(
        "kubernetes", "uid-2", Route(target_node="node-2", destination_cidr="10.244.2.0/24")
    )
    state.set_latency("get", 0).write(tmp_path / "state.json")
    with pytest.raises(CloudProviderError):  # the second of two failures, not a fresh count
        await fake.instance_exists(node("n1"))
    assert await fake.instance_exists(node("n1"))
    assert len(await fake.list_routes("kubernetes")) == 2  # the route created is kept


async def test_injecting_an_identical_error_again_rearms_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    FakeCloudState().set_default_instance().inject_error("instance-exists", times=1).write(path)
    fake = FakeCloudFactory(_config(tmp_path))
    with pytest.raises(CloudProviderError):
        await fake.instance_exists(node("n1"))
    assert await fake.instance_exists(node("n1"))
    FakeCloudState().set_default_instance().inject_error("instance-exists", times=1).write(path)
    with pytest.raises(CloudProviderError):
        await fake.instance_exists(node("n1"))
    assert await fake.instance_exists(node("n1"))


async def test_null_section_clears_and_missing_section_keeps(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"defaultInstance": {}, "rateLimit": {"qps": 1}}))
    fake = FakeCloudFactory(_config(tmp_path))
    assert await fake.instance_exists(node("n1"))
    FakeCloudState({"defaultInstance": None}).write(path)
    assert not await fake.instance_exists(node("n1"))
    assert fake._bucket is not None  # rateLimit removed from the file: left as it was
    FakeCloudState().clear_rate_limit().write(path)
    await fake.instance_exists(node("n1"))
    assert fake._bucket is None


async def test_missing_state_file_changes_nothing(tmp_path: Path) -> None:
    fake = FakeCloudFactory(_config(tmp_path, "defaultInstance: {}\n"))
    assert await fake.instance_exists(node("n1"))
    assert fake.state_generation == 0
    FakeCloudState().clear_default_instance().write(tmp_path / "state.json")
    (tmp_path / "state.json").unlink()
    assert await fake.instance_exists(node("n1"))


async def test_yaml_state_file_is_read_too(tmp_path: Path) -> None:
    state_path = tmp_path / "state.yaml"
    FakeCloudState().add_instance("n1", instance_type="tiny").write(state_path)
    assert "instanceType: tiny" in state_path.read_text()
    fake = FakeCloudFactory(f"stateFile: {state_path}\n".encode())
    assert await fake.instance_type("n1") == "tiny"
    assert FakeCloudState.load(state_path).to_dict() == {
        "instances": {"n1": {"instanceType": "tiny"}}
    }


async def test_malformed_state_file_fails_the_factory(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"instances": {"n1": {"exists": "perhaps"}}}')
    with pytest.raises(ConfigError) as caught:
        FakeCloudFactory(_config(tmp_path))
    message = str(caught.value)
    assert f"invalid fake cloud state file {tmp_path / 'state.json'}" in message
    assert "instances.n1.exists" in message


async def test_malformed_state_file_at_runtime_is_ignored_and_reported(tmp_path: Path) -> None:
    FakeCloudState().add_instance("n1").write(tmp_path / "state.json")
    fake = FakeCloudFactory(_config(tmp_path, "statusInterval: 0\n"))
    assert await fake.instance_exists(node("n1"))
    (tmp_path / "state.json").write_text("{ not json")
    os.utime(tmp_path / "state.json", ns=(1, 1))
    assert await fake.instance_exists(node("n1"))
    assert fake.state_error is not None
    assert "state.json" in fake.state_error
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.state_error == fake.state_error
    FakeCloudState().add_instance("n2").write(tmp_path / "state.json")
    assert not await fake.instance_exists(node("n1"))
    assert fake.state_error is None


def test_state_helper_validates_as_it_goes() -> None:
    state = FakeCloudState()
    with pytest.raises(ValueError, match="exists"):
        state.add_instance("n1", exists="perhaps")
    with pytest.raises(ValueError, match="unknown fake cloud method"):
        state.inject_error("nope")
    with pytest.raises(ValueError, match="not a CIDR"):
        state.add_route("n1", "10.0.0.1/8")
    with pytest.raises(KeyError):
        state.update_instance("ghost", zone="a")
    with pytest.raises(ValueError, match="invalid fake cloud state"):
        FakeCloudState({"colour": "blue"})


def test_state_helper_writes_camel_case_json(tmp_path: Path) -> None:
    state = (
        FakeCloudState()
        .add_instance("n1", provider_id="fake://i-1", addresses=[addr("10.0.0.1")], shutdown=True)
        .inject_error("create", "retryAfter", key="ns/svc", retry_after=3, times=1)
        .set_latency("*", 0.01)
        .set_rate_limit(10, burst=5)
        .add_route("n1", "10.244.0.0/24", blackhole=True)
    )
    state.write(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["errors"][0]["id"]
    assert data == {
        "instances": {
            "n1": {
                "providerID": "fake://i-1",
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "shutdown": True,
            }
        },
        "errors": [
            {
                "id": data["errors"][0]["id"],
                "method": "create",
                "key": "ns/svc",
                "kind": "retryAfter",
                "retryAfter": 3.0,
                "times": 1,
            }
        ],
        "latency": {"*": 0.01},
        "rateLimit": {"qps": 10.0, "burst": 5},
        "routes": [{"targetNode": "n1", "destinationCIDR": "10.244.0.0/24", "blackhole": True}],
    }
    assert FakeCloudState.load(tmp_path / "s.json").to_dict() == state.to_dict()
    assert list(tmp_path.iterdir()) == [tmp_path / "s.json"]  # no temporary file left behind


async def test_quick_rewrites_of_the_same_size_are_noticed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    fake = FakeCloudFactory(_config(tmp_path))
    for zone in ("zone-a", "zone-b", "zone-c", "zone-d"):
        FakeCloudState().add_instance("n1", zone=zone).write(path)
        assert (await fake.get_zone_by_node_name("n1")).failure_domain == zone


def test_state_writes_always_move_the_mtime_forward(tmp_path: Path) -> None:
    # File times come from a coarse clock and inode numbers are reused: without this, two quick
    # writes of the same size could leave (mtime, size, inode) unchanged and go unnoticed.
    path = tmp_path / "state.json"
    FakeCloudState().add_instance("n1", zone="zone-a").write(path)
    future = path.stat().st_mtime_ns + 3_600 * 10**9
    os.utime(path, ns=(future, future))
    FakeCloudState().add_instance("n1", zone="zone-b").write(path)
    assert path.stat().st_mtime_ns > future


# ---- status file


async def test_status_file_is_not_written_before_the_first_call(tmp_path: Path) -> None:
    # A standby replica builds its provider too; it must not overwrite the leader's status file.
    FakeCloudState().add_route("n2", "10.2.0.0/24").write(tmp_path / "state.json")
    fake = FakeCloudFactory(
        _config(tmp_path, "routes: [{targetNode: n1, destinationCIDR: 10.1.0.0/24}]\n")
    )
    fake.add_route("kubernetes", Route(target_node="n3", destination_cidr="10.3.0.0/24"))
    assert fake.state_generation == 1
    assert FakeCloudStatus.read(tmp_path / "status.json") is None
    await fake.initialize(InitContext(cluster_name="kubernetes"))
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.initialized
    assert status.cluster_name == "kubernetes"


async def test_status_file_holds_load_balancers_routes_and_call_counts(tmp_path: Path) -> None:
    fake = FakeCloudFactory(_config(tmp_path, "statusInterval: 0\n"))
    svc = service()
    status_obj = await fake.ensure_load_balancer("kubernetes", svc, [node("n1"), node("n2")])
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    lb = status.load_balancer_for("default/web")
    assert lb is not None
    assert lb.ip == ingress_ip(status_obj)
    assert lb.nodes == ["n1", "n2"]
    assert lb.service_uid == "0000-default-web"
    assert lb.ports[0].node_port == 30080
    assert lb.ingress == [{"ip": lb.ip}]
    assert status.call_count("create") == 1
    assert status.call_count("create", "default/web") == 1

    await fake.create_route(
        "kubernetes", "uid-1", Route(target_node="n1", destination_cidr="10.244.1.0/24")
    )
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    (route,) = status.routes["kubernetes"]
    assert (route.target_node, route.destination_cidr) == ("n1", "10.244.1.0/24")

    await fake.ensure_load_balancer_deleted("kubernetes", svc)
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.load_balancers == {}
    assert status.total_calls == 3
    assert status.provider == "fake"
    assert status.calls == fake.status()["calls"]


@pytest.mark.looptime
async def test_changes_reach_the_status_file_within_the_interval(tmp_path: Path) -> None:
    fake = FakeCloudFactory(_config(tmp_path, "statusInterval: 2\ndefaultInstance: {}\n"))
    await fake.initialize(InitContext())
    writes = 0
    real_write = fake._write_status

    def counting_write() -> None:
        nonlocal writes
        writes += 1
        real_write()

    fake._write_status = counting_write  # type: ignore[method-assign]
    for i in range(5):
        await fake.instance_metadata(node(f"n{i}"))
        await fake.ensure_load_balancer("kubernetes", service(f"svc-{i}"), [])
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.call_count("instance-metadata") == 0
    assert status.load_balancers == {}
    await asyncio.sleep(2.5)
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.call_count("instance-metadata") == 5
    assert status.call_count("instance-metadata", "n3") == 1
    assert len(status.load_balancers) == 5
    assert writes == 1  # ten changes, one write


async def test_aclose_flushes_the_status_file(tmp_path: Path) -> None:
    fake = FakeCloudFactory(_config(tmp_path, "statusInterval: 600\ndefaultInstance: {}\n"))
    await fake.instance_exists(node("n1"))
    await fake.aclose()
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.closed
    assert status.call_count("instance-exists") == 1
    assert status.call_count("aclose") == 1


async def test_a_restarted_fake_restores_its_load_balancers_and_routes(tmp_path: Path) -> None:
    first = FakeCloudFactory(_config(tmp_path))
    await first.initialize(InitContext())
    svc = service()
    ip = ingress_ip(await first.ensure_load_balancer("kubernetes", svc, [node("n1")]))
    await first.create_route(
        "kubernetes", "u1", Route(target_node="n1", destination_cidr="10.1.0.0/24")
    )
    await first.aclose()

    second = FakeCloudFactory(_config(tmp_path))
    await second.initialize(InitContext())
    assert await second.get_load_balancer("kubernetes", svc) == (
        await first.get_load_balancer("kubernetes", svc)
    )
    assert ingress_ip(await second.ensure_load_balancer("kubernetes", svc, [])) == ip
    assert len(await second.list_routes("kubernetes")) == 1
    assert ingress_ip(await second.ensure_load_balancer("kubernetes", service("other"), [])) != ip

    third = FakeCloudFactory(_config(tmp_path, "restoreFromStatus: false\n"))
    await third.initialize(InitContext())
    assert third.load_balancers == {}


async def test_a_restarted_fake_restores_its_state_even_when_status_writes_are_immediate(
    tmp_path: Path,
) -> None:
    extra = "statusInterval: 0\n"
    first = FakeCloudFactory(_config(tmp_path, extra))
    await first.initialize(InitContext())
    await first.ensure_load_balancer("kubernetes", service(), [node("n1")])
    await first.create_route(
        "kubernetes", "u1", Route(target_node="n1", destination_cidr="10.1.0.0/24")
    )

    second = FakeCloudFactory(_config(tmp_path, extra))  # the first one was SIGKILLed
    await second.initialize(InitContext())  # its first write must not wipe what it restores
    assert len(second.load_balancers) == 1
    assert len(await second.list_routes("kubernetes")) == 1


async def test_replicas_with_a_shared_status_file_act_on_one_cloud(tmp_path: Path) -> None:
    extra = "sharedStatus: true\nstatusInterval: 5\n"
    old_leader = FakeCloudFactory(_config(tmp_path, extra))
    await old_leader.initialize(InitContext())
    web, api = service("web"), service("api")
    await old_leader.ensure_load_balancer("kubernetes", web, [node("n1")])

    new_leader = FakeCloudFactory(_config(tmp_path, extra))
    await new_leader.initialize(InitContext())
    assert await new_leader.get_load_balancer("kubernetes", web) is not None
    await new_leader.ensure_load_balancer_deleted("kubernetes", web)
    await new_leader.create_route(
        "kubernetes", "u1", Route(target_node="n1", destination_cidr="10.1.0.0/24")
    )

    # The deposed leader wakes up: it sees the current cloud, and its own change lands in it
    # without undoing the new leader's.
    assert await old_leader.get_load_balancer("kubernetes", web) is None
    await old_leader.ensure_load_balancer("kubernetes", api, [node("n1")])
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert [lb.service for lb in status.load_balancers.values()] == ["default/api"]
    assert len(status.routes["kubernetes"]) == 1
    assert len(await new_leader.list_routes("kubernetes")) == 1
    assert await new_leader.get_load_balancer("kubernetes", api) is not None


# A process that changes the shared cloud while another one is reading it: it holds the lock,
# reads the status file, takes its time, adds a load balancer and writes the file back.
_RACING_WRITER = """
import fcntl, json, os, sys, time
status, lock = sys.argv[1], sys.argv[1] + ".lock"
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
with open(status) as fh:
    doc = json.load(fh)
time.sleep(0.5)
lbs = doc["loadBalancers"]
[(name, lb)] = list(lbs.items())
lbs["other-" + name] = dict(lb, name="other-" + name, service="default/other", ip="10.9.9.9")
tmp = status + ".racing"
with open(tmp, "w") as fh:
    json.dump(doc, fh)
os.replace(tmp, status)
fcntl.flock(fd, fcntl.LOCK_UN)
"""


async def test_a_change_to_the_shared_cloud_waits_for_another_process_and_loses_nothing(
    tmp_path: Path,
) -> None:
    extra = "sharedStatus: true\n"
    fake = FakeCloudFactory(_config(tmp_path, extra))
    await fake.initialize(InitContext())
    await fake.ensure_load_balancer("kubernetes", service("web"), [node("n1")])
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RACING_WRITER,
        str(tmp_path / "status.json"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdout is not None
    assert await writer.stdout.readline() == b"locked\n"
    # While the other process holds the cloud, this change waits for it instead of being
    # overwritten by (or overwriting) the other's.
    await fake.ensure_load_balancer("kubernetes", service("api"), [node("n1")])
    assert await writer.wait() == 0
    await fake.instance_exists(node("n1"))  # any later call reloads and writes the status
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert sorted(lb.service for lb in status.load_balancers.values()) == [
        "default/api",
        "default/other",
        "default/web",
    ]


# ---- through the registry, as the daemon does


async def test_daemon_style_config_file_with_state_and_status_files(tmp_path: Path) -> None:
    config = tmp_path / "fake.yaml"
    config.write_bytes(_config(tmp_path, "defaultInstance: {zones: [zone-a]}\n"))
    provider = await init_cloud_provider("fake", str(config))
    assert isinstance(provider, FakeCloud)
    await provider.initialize(InitContext())
    v2 = provider.instances_v2()
    assert v2 is not None

    FakeCloudState().inject_error("instance-metadata", key="node-b", times=1).write(
        tmp_path / "state.json"
    )
    with pytest.raises(CloudProviderError):
        await v2.instance_metadata(node("node-b"))
    meta = await v2.instance_metadata(node("node-b"))
    assert meta is not None
    assert meta.zone == "zone-a"

    FakeCloudState().add_instance("node-a", exists=False).write(tmp_path / "state.json")
    assert not await v2.instance_exists(node("node-a"))
    await provider.aclose()
    status = FakeCloudStatus.read(tmp_path / "status.json")
    assert status is not None
    assert status.call_count("instance-metadata", "node-b") == 2
    assert status.state_generation == 2
