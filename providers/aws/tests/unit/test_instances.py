"""InstancesV2 and InstancesBatch against moto's EC2 over HTTP: look-ups, addresses, and the
exact state semantics of upstream (terminated = gone, stopped = shut down, a malformed providerID
is an error)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ccm_aws.instances import LABEL_ZONE_ID
from ccm_aws.testing import Ec2Console

from ccm.cloudprovider import InstancesBatch, InstancesV2, Node
from ccm.errors import CloudProviderError, InstanceNotFoundError

MakeProvider = Callable[..., Awaitable[Any]]


def node(name: str, provider_id: str = "", labels: dict[str, str] | None = None) -> Node:
    spec = {"providerID": provider_id} if provider_id else {}
    return Node({"metadata": {"name": name, "labels": labels or {}}, "spec": spec})


def pid(instance: dict[str, Any]) -> str:
    return f"aws:///{instance['Placement']['AvailabilityZone']}/{instance['InstanceId']}"


def count_calls(provider: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    return calls


@pytest.fixture
def subnet(network: dict[str, Any]) -> str:
    return str(next(iter(network["subnets"].values())))


async def test_initializes_a_node_named_by_its_private_dns_name(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    instance = console.run_instance(subnet, cluster_id=cluster_id, public_ip=True)
    provider = await make_provider()
    v2 = provider.instances_v2()
    assert isinstance(v2, InstancesV2)
    md = await v2.instance_metadata(node(instance["PrivateDnsName"]))
    zone = instance["Placement"]["AvailabilityZone"]
    assert md.provider_id == pid(instance)
    assert md.instance_type == "t3.medium"
    assert (md.zone, md.region) == (zone, "us-east-1")
    assert dict(md.additional_labels) == {LABEL_ZONE_ID: console.zone_id(zone)}
    assert [(a.type, a.address) for a in md.node_addresses] == [
        ("InternalIP", instance["PrivateIpAddress"]),
        ("ExternalIP", instance["PublicIpAddress"]),
        ("InternalDNS", instance["PrivateDnsName"]),
        ("Hostname", instance["PrivateDnsName"]),
        ("ExternalDNS", instance["PublicDnsName"]),
    ]


async def test_finds_a_node_named_by_its_instance_id(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    v2 = (await make_provider()).instances_v2()
    for name in (instance["InstanceId"], f"{instance['InstanceId']}.ec2.internal"):
        md = await v2.instance_metadata(node(name))
        assert md.provider_id == pid(instance)


async def test_keeps_the_nodes_provider_id_and_zone_id_label(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    v2 = (await make_provider()).instances_v2()
    bare = instance["InstanceId"]
    md = await v2.instance_metadata(node("whatever", bare, {LABEL_ZONE_ID: "set"}))
    assert md.provider_id == bare
    assert dict(md.additional_labels) == {}


async def test_name_lookup_sees_only_this_clusters_live_instances(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    foreign = console.run_instance(subnet, cluster_id="someone-else")
    terminated = console.run_instance(subnet, cluster_id=cluster_id)
    console.terminate(terminated["InstanceId"])
    v2 = (await make_provider()).instances_v2()
    for instance in (foreign, terminated):
        view = node(instance["PrivateDnsName"])
        with pytest.raises(InstanceNotFoundError):
            await v2.instance_metadata(view)
        # No providerID and nothing found by name: doubt, not "gone".
        with pytest.raises(InstanceNotFoundError):
            await v2.instance_exists(view)


async def test_states_exists_and_shutdown_as_upstream(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    running, stopped, terminated = (
        console.run_instance(subnet, cluster_id=cluster_id) for _ in range(3)
    )
    console.stop(stopped["InstanceId"])
    console.terminate(terminated["InstanceId"])
    v2 = (await make_provider()).instances_v2()
    unknown = "aws:///us-east-1a/i-0123456789abcdef0"
    table = [
        (pid(running), True, False),
        (pid(stopped), True, True),
        (pid(terminated), False, False),
    ]
    for provider_id, exists, shutdown in table:
        assert await v2.instance_exists(node("n", provider_id)) is exists, provider_id
        assert await v2.instance_shutdown(node("n", provider_id)) is shutdown, provider_id
    assert await v2.instance_exists(node("n", unknown)) is False
    with pytest.raises(InstanceNotFoundError):
        await v2.instance_shutdown(node("n", unknown))
    with pytest.raises(InstanceNotFoundError):
        await v2.instance_metadata(node("n", pid(terminated)))
    console.start(stopped["InstanceId"])
    assert await v2.instance_shutdown(node("n", pid(stopped))) is False


@pytest.mark.parametrize(
    "provider_id", ["aws:///us-east-1a/vol-0123", "gce:///zone/i-0123", "aws://i-0123"]
)
async def test_a_malformed_provider_id_is_an_error_never_gone(
    make_provider: MakeProvider, provider_id: str
) -> None:
    provider = await make_provider()
    v2, batch = provider.instances_v2(), provider.instances_batch()
    view = node("n", provider_id)
    for call in (v2.instance_exists, v2.instance_shutdown, v2.instance_metadata):
        with pytest.raises(CloudProviderError, match="malformed providerID") as caught:
            await call(view)
        assert not isinstance(caught.value, InstanceNotFoundError)
    (answer,) = await batch.instance_exists_batch([view])
    assert isinstance(answer, CloudProviderError)
    assert not isinstance(answer, InstanceNotFoundError)


async def test_secondary_ips_and_interfaces_follow_device_index(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    ec2 = console.ec2
    primary_eni = instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.assign_private_ip_addresses(
        NetworkInterfaceId=primary_eni, SecondaryPrivateIpAddressCount=1
    )
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni, InstanceId=instance["InstanceId"], DeviceIndex=1
    )
    described = console.describe(instance["InstanceId"])
    by_index = sorted(described["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"])
    expected_ips = [p["PrivateIpAddress"] for n in by_index for p in n["PrivateIpAddresses"]]
    assert len(expected_ips) == 3
    assert expected_ips[0] == described["PrivateIpAddress"]
    v2 = (await make_provider()).instances_v2()
    md = await v2.instance_metadata(node("n", pid(instance)))
    internal = [a.address for a in md.node_addresses if a.type == "InternalIP"]
    assert internal == expected_ips


async def test_batch_answers_as_the_single_calls_with_one_call_per_lookup_kind(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    running, stopped, terminated, by_name = (
        console.run_instance(subnet, cluster_id=cluster_id) for _ in range(4)
    )
    console.stop(stopped["InstanceId"])
    console.terminate(terminated["InstanceId"])
    provider = await make_provider()
    v2, batch = provider.instances_v2(), provider.instances_batch()
    assert isinstance(batch, InstancesBatch)
    views = [
        node("a", pid(running)),
        node("b", pid(stopped)),
        node("c", pid(terminated)),
        node("d", "aws:///us-east-1a/i-0123456789abcdef0"),
        node(by_name["PrivateDnsName"]),
        node("ip-10-255-255-1.ec2.internal"),
        node("e", "aws:///us-east-1a/bad"),
        node("a", pid(running)),
    ]

    async def outcome(awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except Exception as exc:
            return exc

    for method in ("instance_exists", "instance_shutdown", "instance_metadata"):
        single = [await outcome(getattr(v2, method)(v)) for v in views]
        calls = count_calls(provider)
        answers = await getattr(batch, f"{method}_batch")(views)
        assert len(answers) == len(views)
        for view, want, got in zip(views, single, answers, strict=True):
            if isinstance(want, Exception):
                assert type(got) is type(want), (method, view, got, want)
            else:
                assert got == want, (method, view, got, want)
        # The odd ID "bad" never reaches EC2 (malformed); one filtered call per look-up kind.
        assert calls["DescribeInstances"] == 2, (method, calls)


async def test_batch_reads_every_page(
    make_provider: MakeProvider, console: Ec2Console, subnet: str, cluster_id: str
) -> None:
    instances = [console.run_instance(subnet, cluster_id=cluster_id) for _ in range(12)]
    provider = await make_provider()
    batch = provider.instances_batch()
    batch.page_size = 5
    calls = count_calls(provider)
    answers = await batch.instance_exists_batch([node("n", pid(i)) for i in instances])
    assert answers == [True] * 12
    assert calls["DescribeInstances"] == 3
