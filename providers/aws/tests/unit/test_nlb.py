"""NLBs (elbv2, instance targets) against moto: upstream's names, listeners and target groups per
port, health checks, targets from the Nodes, tags; updates converge; an NLB made by
cloud-provider-aws is adopted; delete leaves nothing tagged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ccm_aws import annotations as ann
from ccm_aws.nlb import target_group_name
from ccm_aws.testing import Ec2Console

from ccm.cloudprovider import Service

from .test_elb import CLUSTER, node, service

MakeProvider = Callable[..., Awaitable[Any]]
NLB = {ann.TYPE: "nlb"}


# Upstream's TestBuildTargetGroupName table: (cluster, namespace, name, port, node port,
# protocol, target type, health-check protocol, interval) → name.
@pytest.mark.parametrize(
    ("args", "want"),
    [
        (("cluster-a", "default", "service-a", 80, 8080, "TCP", "instance", "", 0),
         "k8s-default-servicea-7fa2e07508"),
        (("cluster-b", "default", "service-a", 80, 8080, "TCP", "instance", "", 0),
         "k8s-default-servicea-719ee635da"),
        (("cluster-a", "another", "service-a", 80, 8080, "TCP", "instance", "", 0),
         "k8s-another-servicea-f66e09847d"),
        (("cluster-a", "default", "service-b", 80, 8080, "TCP", "instance", "", 0),
         "k8s-default-serviceb-196c19c881"),
        (("cluster-a", "default", "service-a", 9090, 8080, "TCP", "instance", "", 0),
         "k8s-default-servicea-06876706cb"),
        (("cluster-a", "default", "service-a", 80, 9090, "TCP", "instance", "", 0),
         "k8s-default-servicea-119f844ec0"),
        (("cluster-a", "default", "service-a", 80, 8080, "UDP", "instance", "", 0),
         "k8s-default-servicea-3868761686"),
        (("cluster-a", "default", "service-a", 80, 8080, "TCP", "ip", "", 0),
         "k8s-default-servicea-0fa31f4b0f"),
        (("cluster-a", "default", "service-a", 80, 8080, "TCP", "ip", "HTTP", 10),
         "k8s-default-servicea-4028e49618"),
    ],
)  # fmt: skip
def test_target_group_names_are_upstreams(args: tuple[Any, ...], want: str) -> None:
    assert target_group_name(*args) == want


@pytest.fixture
def setup(console: Ec2Console, network: dict[str, Any], cluster_id: str) -> dict[str, Any]:
    console.make_public(network["vpc"])
    instances = [
        console.run_instance(subnet, cluster_id=cluster_id)
        for subnet in network["subnets"].values()
    ]
    return {"nodes": [node(i) for i in instances], "ids": [i["InstanceId"] for i in instances]}


def _lb(console: Ec2Console, name: str) -> dict[str, Any]:
    (found,) = console.elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
    return dict(found)


def _listeners(console: Ec2Console, arn: str) -> dict[int, dict[str, Any]]:
    found = console.elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]
    return {int(x["Port"]): x for x in found}


def _group(console: Ec2Console, arn: str) -> dict[str, Any]:
    (found,) = console.elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"]
    return dict(found)


def _targets(console: Ec2Console, arn: str) -> set[tuple[str, int]]:
    found = console.elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {(d["Target"]["Id"], d["Target"]["Port"]) for d in found}


def _tags(console: Ec2Console, arn: str) -> dict[str, str]:
    (found,) = console.elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
    return {t["Key"]: t["Value"] for t in found["Tags"]}


def _all_groups(console: Ec2Console) -> set[str]:
    return {g["TargetGroupName"] for g in console.elbv2.describe_target_groups()["TargetGroups"]}


async def test_ensure_update_delete_an_nlb(
    make_provider: MakeProvider,
    console: Ec2Console,
    network: dict[str, Any],
    setup: dict[str, Any],
    cluster_id: str,
) -> None:
    provider = await make_provider()
    lb = provider.load_balancer()
    svc = service(
        annotations={
            **NLB,
            ann.ADDITIONAL_TAGS: "team=web,cost",
        }
    )
    name = "a" + svc.uid.replace("-", "")[:31]
    assert await lb.get_load_balancer(CLUSTER, svc) is None

    status = await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    described = _lb(console, name)
    assert described["Type"] == "network"
    assert described["Scheme"] == "internet-facing"
    assert [i.hostname for i in status.ingress] == [described["DNSName"]]
    got = await lb.get_load_balancer(CLUSTER, svc)
    assert got is not None and [i.hostname for i in got.ingress] == [described["DNSName"]]
    assert sorted(z["SubnetId"] for z in described["AvailabilityZones"]) == sorted(
        network["subnets"].values()
    )
    owned = {
        f"kubernetes.io/cluster/{cluster_id}": "owned",
        "kubernetes.io/service-name": "shop/web",
        "team": "web",
        "cost": "",
    }
    assert _tags(console, described["LoadBalancerArn"]) == owned
    listeners = _listeners(console, described["LoadBalancerArn"])
    assert sorted(listeners) == [80, 443]
    for port, node_port in ((80, 30080), (443, 30443)):
        listener = listeners[port]
        assert listener["Protocol"] == "TCP"
        group = _group(console, listener["DefaultActions"][0]["TargetGroupArn"])
        assert group["TargetGroupName"] == target_group_name(
            cluster_id, "shop", "web", port, node_port, "TCP", "instance", "TCP", 30
        )
        assert (group["Port"], group["Protocol"], group["TargetType"]) == (
            node_port,
            "TCP",
            "instance",
        )
        assert (
            group["HealthCheckProtocol"],
            group["HealthCheckPort"],
            group["HealthCheckIntervalSeconds"],
            group["HealthyThresholdCount"],
            group["UnhealthyThresholdCount"],
        ) == ("TCP", "traffic-port", 30, 3, 3)
        assert _targets(console, group["TargetGroupArn"]) == {(i, node_port) for i in setup["ids"]}
        assert _tags(console, group["TargetGroupArn"]) == owned
    attributes = console.elbv2.describe_load_balancer_attributes(
        LoadBalancerArn=described["LoadBalancerArn"]
    )["Attributes"]
    assert {"Key": "load_balancing.cross_zone.enabled", "Value": "false"} in attributes

    # Ensure again: nothing created or modified.
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    assert {c for c in calls if not c.startswith("Describe")} == set()

    # A node port changes, a port goes, cross-zone on; one Node goes.
    changed = service(
        uid=svc.uid,
        ports=((80, 30081),),
        annotations={
            **NLB,
            ann.CROSS_ZONE: "true",
        },
    )
    old_groups = {x["DefaultActions"][0]["TargetGroupArn"] for x in listeners.values()}
    await lb.ensure_load_balancer(CLUSTER, changed, setup["nodes"])
    await lb.update_load_balancer(CLUSTER, changed, setup["nodes"][:1])
    listeners = _listeners(console, described["LoadBalancerArn"])
    assert sorted(listeners) == [80]
    group = _group(console, listeners[80]["DefaultActions"][0]["TargetGroupArn"])
    assert group["Port"] == 30081
    assert _targets(console, group["TargetGroupArn"]) == {(setup["ids"][0], 30081)}
    left = {g["TargetGroupArn"] for g in console.elbv2.describe_target_groups()["TargetGroups"]}
    assert not old_groups & left
    attributes = console.elbv2.describe_load_balancer_attributes(
        LoadBalancerArn=described["LoadBalancerArn"]
    )["Attributes"]
    assert {"Key": "load_balancing.cross_zone.enabled", "Value": "true"} in attributes

    await lb.ensure_load_balancer_deleted(CLUSTER, changed)
    await lb.ensure_load_balancer_deleted(CLUSTER, changed)
    assert await lb.get_load_balancer(CLUSTER, changed) is None
    names = {
        x["LoadBalancerName"] for x in console.elbv2.describe_load_balancers()["LoadBalancers"]
    }
    assert name not in names
    assert not {g for g in _all_groups(console) if g.startswith("k8s-shop-web-")} & {
        group["TargetGroupName"]
    }
    assert group["TargetGroupArn"] not in {
        g["TargetGroupArn"] for g in console.elbv2.describe_target_groups()["TargetGroups"]
    }


async def test_an_nlb_made_by_cloud_provider_aws_is_adopted(
    make_provider: MakeProvider,
    console: Ec2Console,
    network: dict[str, Any],
    setup: dict[str, Any],
    cluster_id: str,
) -> None:
    svc = service(ports=((80, 30080),), annotations=NLB)
    name = "a" + svc.uid.replace("-", "")[:31]
    tags = [
        {"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"},
        {"Key": "kubernetes.io/service-name", "Value": "shop/web"},
    ]
    made = console.elbv2.create_load_balancer(
        Name=name, Type="network", Subnets=sorted(network["subnets"].values()), Tags=tags
    )["LoadBalancers"][0]
    group = console.elbv2.create_target_group(
        Name=target_group_name(cluster_id, "shop", "web", 80, 30080, "TCP", "instance", "TCP", 30),
        Protocol="TCP",
        Port=30080,
        VpcId=network["vpc"],
        TargetType="instance",
        HealthCheckProtocol="TCP",
        HealthCheckPort="traffic-port",
        HealthCheckIntervalSeconds=30,
        HealthyThresholdCount=3,
        UnhealthyThresholdCount=3,
        Tags=tags,
    )["TargetGroups"][0]
    console.elbv2.create_listener(
        LoadBalancerArn=made["LoadBalancerArn"],
        Protocol="TCP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}],
    )
    provider = await make_provider()
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    lb = provider.load_balancer()
    status = await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    assert [i.hostname for i in status.ingress] == [made["DNSName"]]
    assert {c for c in calls if not c.startswith("Describe")} == {"RegisterTargets"}
    assert _targets(console, group["TargetGroupArn"]) == {(i, 30080) for i in setup["ids"]}
    await lb.ensure_load_balancer_deleted(CLUSTER, svc)
    assert group["TargetGroupArn"] not in {
        g["TargetGroupArn"] for g in console.elbv2.describe_target_groups()["TargetGroups"]
    }


async def test_stopped_instances_are_not_targets(
    make_provider: MakeProvider, console: Ec2Console, setup: dict[str, Any]
) -> None:
    console.stop(setup["ids"][1])
    lb = (await make_provider()).load_balancer()
    svc = service(ports=((80, 30080),), annotations=NLB)
    await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    described = _lb(console, lb.get_load_balancer_name(CLUSTER, svc))
    (listener,) = _listeners(console, described["LoadBalancerArn"]).values()
    arn = listener["DefaultActions"][0]["TargetGroupArn"]
    assert _targets(console, arn) == {(setup["ids"][0], 30080)}
    await lb.ensure_load_balancer_deleted(CLUSTER, svc)


def _nlb_rules(console: Ec2Console, group: str) -> set[tuple[str, int, str, str]]:
    found = console.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    return {
        (p["IpProtocol"], p["FromPort"], r["CidrIp"], r.get("Description", ""))
        for p in found["IpPermissions"]
        for r in p.get("IpRanges", [])
        if r.get("Description", "").startswith("kubernetes.io/rule/nlb/")
    }


@pytest.mark.parametrize("disabled", [False, True])
async def test_node_security_groups_admit_nlb_clients_and_health_checks(
    make_provider: MakeProvider,
    console: Ec2Console,
    network: dict[str, Any],
    cluster_id: str,
    disabled: bool,
) -> None:
    console.make_public(network["vpc"])
    nodes_group = console.ec2.create_security_group(
        GroupName="nodes", Description="n", VpcId=network["vpc"]
    )["GroupId"]
    console.ec2.create_tags(
        Resources=[nodes_group],
        Tags=[{"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"}],
    )
    subnets = network["subnets"]
    instance = console.run_instance(
        next(iter(subnets.values())), cluster_id=cluster_id, security_groups=[nodes_group]
    )
    fields = {"DisableSecurityGroupIngress": "true"} if disabled else {}
    lb = (await make_provider(**fields)).load_balancer()
    svc = service(ports=((80, 30080),), annotations=NLB)
    name = lb.get_load_balancer_name(CLUSTER, svc)
    await lb.ensure_load_balancer(CLUSTER, svc, [node(instance)])
    cidrs = [
        s["CidrBlock"]
        for s in console.ec2.describe_subnets(SubnetIds=list(subnets.values()))["Subnets"]
    ]
    client, health = (
        f"kubernetes.io/rule/nlb/client={name}",
        f"kubernetes.io/rule/nlb/health={name}",
    )
    want = {
        ("tcp", 30080, "203.0.113.0/24", client),
        ("icmp", 3, "203.0.113.0/24", "kubernetes.io/rule/nlb/mtu"),
    }
    want |= {("tcp", 30080, c, health) for c in cidrs}
    assert _nlb_rules(console, nodes_group) == (set() if disabled else want)
    await lb.ensure_load_balancer_deleted(CLUSTER, svc)
    assert _nlb_rules(console, nodes_group) == set()


async def test_two_nlbs_checking_health_on_one_port_share_the_rule(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    console.make_public(network["vpc"])
    group = console.ec2.create_security_group(
        GroupName="nodes", Description="n", VpcId=network["vpc"]
    )["GroupId"]
    console.ec2.create_tags(
        Resources=[group], Tags=[{"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"}]
    )
    subnet = next(iter(network["subnets"].values()))
    instance = console.run_instance(subnet, cluster_id=cluster_id, security_groups=[group])
    lb = (await make_provider()).load_balancer()
    shared = {**NLB, "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port": "10256"}
    first = service(ports=((80, 30080),), annotations=shared)
    second = service(ports=((81, 30081),), annotations=shared)
    await lb.ensure_load_balancer(CLUSTER, first, [node(instance)])
    await lb.ensure_load_balancer(CLUSTER, second, [node(instance)])
    ports = {(r[0], r[1]) for r in _nlb_rules(console, group)}
    assert {("tcp", 30080), ("tcp", 30081), ("tcp", 10256)} <= ports
    await lb.ensure_load_balancer_deleted(CLUSTER, first)
    await lb.ensure_load_balancer_deleted(CLUSTER, second)


async def test_the_type_cannot_change_after_creation(
    make_provider: MakeProvider, console: Ec2Console, setup: dict[str, Any]
) -> None:
    provider = await make_provider()
    lb = provider.load_balancer()
    classic = service(ports=((80, 30080),))
    status = await lb.ensure_load_balancer(CLUSTER, classic, setup["nodes"])
    raw = service(uid=classic.uid, ports=((80, 30080),), annotations=NLB).to_dict()
    raw["status"] = {"loadBalancer": {"ingress": [{"hostname": status.ingress[0].hostname}]}}
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    with pytest.raises(ann.AnnotationError, match="cannot update Load Balancer Type"):
        await lb.ensure_load_balancer(CLUSTER, Service(raw), setup["nodes"])
    assert {c for c in calls if not c.startswith("Describe")} == set()
    await lb.ensure_load_balancer_deleted(CLUSTER, classic)


async def test_what_a_cut_short_delete_left_still_exists_until_deleted(
    make_provider: MakeProvider, console: Ec2Console, setup: dict[str, Any]
) -> None:
    lb = (await make_provider()).load_balancer()
    classic = service(ports=((80, 30080),))
    nlb = service(ports=((80, 30080),), annotations=NLB)
    for svc in (classic, nlb):
        await lb.ensure_load_balancer(CLUSTER, svc, setup["nodes"])
    name = lb.get_load_balancer_name(CLUSTER, classic)
    # The ELB went, its security group stayed; the NLB went, its target group stayed.
    console.elb.delete_load_balancer(LoadBalancerName=name)
    arn = _lb(console, lb.get_load_balancer_name(CLUSTER, nlb))["LoadBalancerArn"]
    for listener in _listeners(console, arn).values():
        console.elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
    console.elbv2.delete_load_balancer(LoadBalancerArn=arn)
    for svc in (classic, nlb):
        status = await lb.get_load_balancer(CLUSTER, svc)
        assert status is not None
        assert not status.ingress
        await lb.ensure_load_balancer_deleted(CLUSTER, svc)
        assert await lb.get_load_balancer(CLUSTER, svc) is None
    groups = console.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"k8s-elb-{name}"]}]
    )["SecurityGroups"]
    assert groups == []
    assert not {g for g in _all_groups(console) if g.startswith("k8s-shop-web-")}
