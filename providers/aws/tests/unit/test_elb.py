"""Classic ELBs against moto: name, tags, subnets, listeners, health check, security group from
the source ranges, instances; updates converge; delete removes the ELB and its group."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ccm_aws.annotations import INTERNAL as ANNOTATION_INTERNAL
from ccm_aws.annotations import TYPE as ANNOTATION_TYPE
from ccm_aws.testing import Ec2Console

from ccm.cloudprovider import Node, Service
from ccm.errors import CloudProviderError, ImplementedElsewhereError

MakeProvider = Callable[..., Awaitable[Any]]
CLUSTER = "kubernetes"


def service(
    *,
    uid: str | None = None,
    ports: tuple[tuple[int, int], ...] = ((80, 30080), (443, 30443)),
    ranges: tuple[str, ...] = ("203.0.113.0/24",),
    annotations: dict[str, str] | None = None,
    protocol: str = "TCP",
) -> Service:
    return Service(
        {
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": uid or str(uuid.uuid4()),
                "annotations": annotations or {},
            },
            "spec": {
                "type": "LoadBalancer",
                "ports": [
                    {"name": f"p{p}", "protocol": protocol, "port": p, "nodePort": n}
                    for p, n in ports
                ],
                "loadBalancerSourceRanges": list(ranges),
            },
        }
    )


def node(instance: dict[str, Any]) -> Node:
    zone = instance["Placement"]["AvailabilityZone"]
    return Node(
        {
            "metadata": {"name": instance["PrivateDnsName"]},
            "spec": {"providerID": f"aws:///{zone}/{instance['InstanceId']}"},
        }
    )


@pytest.fixture
def setup(console: Ec2Console, network: dict[str, Any], cluster_id: str) -> dict[str, Any]:
    console.make_public(network["vpc"])
    instances = [
        console.run_instance(subnet, cluster_id=cluster_id)
        for subnet in network["subnets"].values()
    ]
    return {
        "nodes": [node(i) for i in instances],
        "ids": sorted(i["InstanceId"] for i in instances),
    }


def _permissions(console: Ec2Console, group: str) -> set[tuple[str, int, int, str]]:
    found = console.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    return {
        (p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"])
        for p in found["IpPermissions"]
        for r in p.get("IpRanges", [])
    }


async def test_ensure_update_delete_a_classic_elb(
    make_provider: MakeProvider,
    console: Ec2Console,
    network: dict[str, Any],
    setup: dict[str, Any],
    cluster_id: str,
) -> None:
    provider = await make_provider()
    lb = provider.load_balancer()
    svc = service()
    name = "a" + svc.uid.replace("-", "")[:31]
    assert lb.get_load_balancer_name(CLUSTER, svc) == name
    assert await lb.get_load_balancer(CLUSTER, svc) is None

    status = await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    (described,) = console.elb.describe_load_balancers(LoadBalancerNames=[name])[
        "LoadBalancerDescriptions"
    ]
    assert [i.hostname for i in status.ingress] == [described["DNSName"]]
    assert await lb.get_load_balancer(CLUSTER, svc) is not None
    assert sorted(described["Subnets"]) == sorted(network["subnets"].values())
    assert sorted(
        (d["Listener"]["LoadBalancerPort"], d["Listener"]["InstancePort"])
        for d in described["ListenerDescriptions"]
    ) == [(80, 30080), (443, 30443)]
    assert described["HealthCheck"]["Target"] == "TCP:30080"
    assert sorted(i["InstanceId"] for i in described["Instances"]) == setup["ids"]
    tags = console.elb.describe_tags(LoadBalancerNames=[name])["TagDescriptions"][0]["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {
        f"kubernetes.io/cluster/{cluster_id}": "owned",
        "kubernetes.io/service-name": "shop/web",
    }
    (group,) = described["SecurityGroups"]
    assert _permissions(console, group) == {
        ("tcp", 80, 80, "203.0.113.0/24"),
        ("tcp", 443, 443, "203.0.113.0/24"),
        ("icmp", 3, 4, "203.0.113.0/24"),
    }

    # Ensure again: nothing to change, nothing created or modified.
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    assert {c for c in calls if not c.startswith("Describe")} == set()

    # A port and a source range change; one Node goes.
    changed = service(uid=svc.uid, ports=((80, 30081),), ranges=("198.51.100.0/24",))
    await lb.ensure_load_balancer(CLUSTER, changed, setup["nodes"])
    await lb.update_load_balancer(CLUSTER, changed, setup["nodes"][:1])
    (described,) = console.elb.describe_load_balancers(LoadBalancerNames=[name])[
        "LoadBalancerDescriptions"
    ]
    assert [
        (d["Listener"]["LoadBalancerPort"], d["Listener"]["InstancePort"])
        for d in described["ListenerDescriptions"]
    ] == [(80, 30081)]
    assert described["HealthCheck"]["Target"] == "TCP:30081"
    assert [i["InstanceId"] for i in described["Instances"]] == [
        setup["nodes"][0].provider_id.rsplit("/", 1)[-1]
    ]
    assert _permissions(console, group) == {
        ("tcp", 80, 80, "198.51.100.0/24"),
        ("icmp", 3, 4, "198.51.100.0/24"),
    }

    await lb.ensure_load_balancer_deleted(CLUSTER, changed)
    await lb.ensure_load_balancer_deleted(CLUSTER, changed)
    assert console.elb.describe_load_balancers()["LoadBalancerDescriptions"] == [] or name not in {
        d["LoadBalancerName"]
        for d in console.elb.describe_load_balancers()["LoadBalancerDescriptions"]
    }
    groups = console.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"k8s-elb-{name}"]}]
    )["SecurityGroups"]
    assert groups == []
    assert await lb.get_load_balancer(CLUSTER, changed) is None


async def test_internal_elb_uses_internal_role_subnets(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], setup: dict[str, Any]
) -> None:
    zone, subnet = sorted(network["subnets"].items())[0]
    tagged = console.ec2.create_subnet(
        VpcId=network["vpc"], CidrBlock=subnet_cidr(console, network["vpc"]), AvailabilityZone=zone
    )["Subnet"]["SubnetId"]
    console.ec2.create_tags(
        Resources=[tagged], Tags=[{"Key": "kubernetes.io/role/internal-elb", "Value": "1"}]
    )
    lb = (await make_provider()).load_balancer()
    svc = service(annotations={ANNOTATION_INTERNAL: "true"})
    await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    name = lb.get_load_balancer_name(CLUSTER, svc)
    (described,) = console.elb.describe_load_balancers(LoadBalancerNames=[name])[
        "LoadBalancerDescriptions"
    ]
    assert described["Scheme"] == "internal"
    assert tagged in described["Subnets"]
    assert subnet not in described["Subnets"]
    await lb.ensure_load_balancer_deleted(CLUSTER, svc)


def subnet_cidr(console: Ec2Console, vpc: str) -> str:
    cidr = console.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"]
    a, b = cidr.split(".")[:2]
    return f"{a}.{b}.128.0/20"


async def test_external_types_are_implemented_elsewhere(
    make_provider: MakeProvider, setup: dict[str, Any]
) -> None:
    lb = (await make_provider()).load_balancer()
    for kind in ("external", "nlb-ip"):
        svc = service(annotations={ANNOTATION_TYPE: kind})
        with pytest.raises(ImplementedElsewhereError):
            await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
        with pytest.raises(ImplementedElsewhereError):
            await lb.update_load_balancer(CLUSTER, svc, setup["nodes"])
        assert await lb.get_load_balancer(CLUSTER, svc) is None
        await lb.ensure_load_balancer_deleted(CLUSTER, svc)


async def test_udp_is_refused_before_anything_is_created(
    make_provider: MakeProvider, console: Ec2Console, setup: dict[str, Any]
) -> None:
    lb = (await make_provider()).load_balancer()
    svc = service(protocol="UDP")
    with pytest.raises(CloudProviderError, match="Protocol UDP not supported"):
        await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    assert await lb.get_load_balancer(CLUSTER, svc) is None


def _admitting(console: Ec2Console, groups: list[str], source: str) -> set[str]:
    found = console.ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
    return {
        g["GroupId"]
        for g in found
        for p in g["IpPermissions"]
        if p["IpProtocol"] == "-1" and any(u["GroupId"] == source for u in p["UserIdGroupPairs"])
    }


@pytest.mark.parametrize("disabled", [False, True])
async def test_node_security_groups_admit_their_elb(
    make_provider: MakeProvider,
    console: Ec2Console,
    network: dict[str, Any],
    cluster_id: str,
    disabled: bool,
) -> None:
    console.make_public(network["vpc"])
    ec2 = console.ec2
    tagged = ec2.create_security_group(GroupName="nodes", Description="n", VpcId=network["vpc"])[
        "GroupId"
    ]
    ec2.create_tags(
        Resources=[tagged], Tags=[{"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"}]
    )
    lone = ec2.create_security_group(GroupName="lone", Description="l", VpcId=network["vpc"])[
        "GroupId"
    ]
    subnet = next(iter(network["subnets"].values()))
    first = console.run_instance(subnet, cluster_id=cluster_id, security_groups=[tagged])
    second = console.run_instance(subnet, cluster_id=cluster_id, security_groups=[lone])
    fields = {"DisableSecurityGroupIngress": "true"} if disabled else {}
    lb = (await make_provider(**fields)).load_balancer()
    svc = service()
    await lb.ensure_load_balancer(CLUSTER, svc, [node(first), node(second)])
    name = lb.get_load_balancer_name(CLUSTER, svc)
    (described,) = console.elb.describe_load_balancers(LoadBalancerNames=[name])[
        "LoadBalancerDescriptions"
    ]
    (source,) = described["SecurityGroups"]
    both = [tagged, lone]
    assert _admitting(console, both, source) == (set() if disabled else {tagged, lone})
    await lb.update_load_balancer(CLUSTER, svc, [node(first)])
    assert _admitting(console, both, source) == (set() if disabled else {tagged})
    await lb.ensure_load_balancer_deleted(CLUSTER, svc)
    assert _admitting(console, both, source) == set()
    remaining = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"k8s-elb-{name}"]}]
    )["SecurityGroups"]
    assert remaining == []


async def test_a_classic_elb_needs_a_node_port(
    make_provider: MakeProvider, setup: dict[str, Any]
) -> None:
    lb = (await make_provider()).load_balancer()
    svc = service(ports=((80, 0),))
    with pytest.raises(CloudProviderError, match="no node ports"):
        await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    assert await lb.get_load_balancer(CLUSTER, svc) is None
