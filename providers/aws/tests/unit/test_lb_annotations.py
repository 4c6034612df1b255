"""The annotations on moto: what each one changes on a classic ELB and on an NLB."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import boto3
import pytest
from ccm_aws import annotations as ann
from ccm_aws.testing import Ec2Console

from ccm.cloudprovider import Node

from .test_elb import CLUSTER, node, service, subnet_cidr

MakeProvider = Callable[..., Awaitable[Any]]


def _labelled(instance: dict[str, Any], labels: dict[str, str]) -> Node:
    raw = node(instance).to_dict()
    raw["metadata"]["labels"] = labels
    return Node(raw)


async def test_classic_elb_annotations(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    console.make_public(network["vpc"])
    zone, subnet = sorted(network["subnets"].items())[0]
    named = console.ec2.create_subnet(
        VpcId=network["vpc"], CidrBlock=subnet_cidr(console, network["vpc"]), AvailabilityZone=zone
    )["Subnet"]["SubnetId"]
    console.ec2.create_tags(Resources=[named], Tags=[{"Key": "Name", "Value": "lb-subnet"}])
    extra = console.ec2.create_security_group(
        GroupName="extra", Description="extra", VpcId=network["vpc"]
    )["GroupId"]
    web = console.run_instance(subnet, cluster_id=cluster_id)
    other = console.run_instance(subnet, cluster_id=cluster_id)
    nodes = [_labelled(web, {"role": "web"}), _labelled(other, {"role": "db"})]
    svc = service(
        ports=((80, 30080),),
        annotations={
            ann.ADDITIONAL_TAGS: "team=web",
            ann.SUBNETS: "lb-subnet",
            ann.EXTRA_SECURITY_GROUPS: extra,
            ann.TARGET_NODE_LABELS: "role=web",
            ann.BACKEND_PROTOCOL: "http",
            ann.CROSS_ZONE: "true",
            ann.IDLE_TIMEOUT: "120",
            ann.HC_INTERVAL: "30",
            ann.HC_PATH: "/ready",
        },
    )
    lb = (await make_provider()).load_balancer()
    await lb.ensure_load_balancer(CLUSTER, svc, nodes)
    name = lb.get_load_balancer_name(CLUSTER, svc)
    (d,) = console.elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"]
    assert d["Subnets"] == [named]
    assert len(d["SecurityGroups"]) == 2 and d["SecurityGroups"][1] == extra
    assert [i["InstanceId"] for i in d["Instances"]] == [web["InstanceId"]]
    (listener,) = [x["Listener"] for x in d["ListenerDescriptions"]]
    assert (listener["Protocol"], listener["InstanceProtocol"]) == ("HTTP", "HTTP")
    assert d["HealthCheck"]["Target"] == "TCP:30080"  # the path is only for HTTP(S) checks
    assert d["HealthCheck"]["Interval"] == 30
    tags = console.elb.describe_tags(LoadBalancerNames=[name])["TagDescriptions"][0]["Tags"]
    assert {"Key": "team", "Value": "web"} in tags
    own = console.ec2.describe_security_groups(GroupIds=[d["SecurityGroups"][0]])
    assert {"Key": "team", "Value": "web"} in own["SecurityGroups"][0]["Tags"]
    attributes = console.elb.describe_load_balancer_attributes(LoadBalancerName=name)[
        "LoadBalancerAttributes"
    ]
    assert attributes["CrossZoneLoadBalancing"]["Enabled"] is True
    assert attributes["ConnectionSettings"]["IdleTimeout"] == 120

    # BYO security groups replace the ELB's own group.
    byo = service(
        uid=svc.uid, ports=((80, 30080),), annotations={ann.SECURITY_GROUPS: f" {extra} "}
    )
    await lb.ensure_load_balancer(CLUSTER, byo, nodes)
    (d,) = console.elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"]
    assert d["SecurityGroups"] == [extra]
    await lb.ensure_load_balancer_deleted(CLUSTER, byo)
    assert console.ec2.describe_security_groups(GroupIds=[extra])["SecurityGroups"]


async def test_nlb_annotations(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    subnets = sorted(network["subnets"].values())
    eips = [console.ec2.allocate_address(Domain="vpc")["AllocationId"] for _ in subnets]
    instance = console.run_instance(subnets[0], cluster_id=cluster_id)
    svc = service(
        ports=((53, 30053),),
        protocol="UDP",
        annotations={
            ann.TYPE: "nlb",
            ann.INTERNAL: "0.0.0.0/0",
            ann.SUBNETS: ",".join(subnets),
            ann.EIP_ALLOCATIONS: ",".join(eips),
            ann.HC_PROTOCOL: "http",
            ann.HC_PATH: "/ready",
            ann.HC_PORT: "10256",
        },
    )
    lb = (await make_provider()).load_balancer()
    await lb.ensure_load_balancer(CLUSTER, svc, [node(instance)])
    name = lb.get_load_balancer_name(CLUSTER, svc)
    (d,) = console.elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
    assert d["Scheme"] == "internal"
    assert sorted(z["SubnetId"] for z in d["AvailabilityZones"]) == subnets
    (listener,) = console.elbv2.describe_listeners(LoadBalancerArn=d["LoadBalancerArn"])[
        "Listeners"
    ]
    assert (listener["Port"], listener["Protocol"]) == (53, "UDP")
    (group,) = console.elbv2.describe_target_groups(
        TargetGroupArns=[listener["DefaultActions"][0]["TargetGroupArn"]]
    )["TargetGroups"]
    assert (group["Protocol"], group["Port"]) == ("UDP", 30053)
    assert (group["HealthCheckProtocol"], group["HealthCheckPath"], group["HealthCheckPort"]) == (
        "HTTP",
        "/ready",
        "10256",
    )
    await lb.ensure_load_balancer_deleted(CLUSTER, svc)
    assert not console.elbv2.describe_load_balancers()["LoadBalancers"] or name not in {
        x["LoadBalancerName"] for x in console.elbv2.describe_load_balancers()["LoadBalancers"]
    }


async def test_eip_allocations_must_match_the_subnets(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    console.make_public(network["vpc"])
    svc = service(annotations={ann.TYPE: "nlb", ann.EIP_ALLOCATIONS: "eipalloc-1"})
    provider = await make_provider()
    calls: list[str] = []
    provider.api.observe(lambda model, **_: calls.append(model.name))
    lb = provider.load_balancer()
    with pytest.raises(ann.AnnotationError, match=ann.EIP_ALLOCATIONS):
        await lb.ensure_load_balancer(CLUSTER, svc, [])
    assert not {c for c in calls if not c.startswith("Describe")}


async def test_nlb_tls_listeners(
    make_provider: MakeProvider,
    moto_server: Any,
    console: Ec2Console,
    network: dict[str, Any],
    cluster_id: str,
) -> None:
    console.make_public(network["vpc"])
    acm = boto3.client(
        "acm",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    cert = acm.request_certificate(DomainName="web.example.com")["CertificateArn"]
    instance = console.run_instance(next(iter(network["subnets"].values())), cluster_id=cluster_id)
    svc = service(
        ports=((80, 30080), (443, 30443)),
        annotations={
            ann.TYPE: "nlb",
            ann.SSL_CERT: cert,
            ann.SSL_PORTS: "443",
            ann.BACKEND_PROTOCOL: "ssl",
        },
    )
    lb = (await make_provider()).load_balancer()
    await lb.ensure_load_balancer(CLUSTER, svc, [node(instance)])
    (d,) = console.elbv2.describe_load_balancers(Names=[lb.get_load_balancer_name(CLUSTER, svc)])[
        "LoadBalancers"
    ]
    listeners = {
        x["Port"]: x
        for x in console.elbv2.describe_listeners(LoadBalancerArn=d["LoadBalancerArn"])["Listeners"]
    }
    assert listeners[80]["Protocol"] == "TCP"
    assert listeners[443]["Protocol"] == "TLS"
    assert [c["CertificateArn"] for c in listeners[443]["Certificates"]] == [cert]
    (group,) = console.elbv2.describe_target_groups(
        TargetGroupArns=[listeners[443]["DefaultActions"][0]["TargetGroupArn"]]
    )["TargetGroups"]
    assert group["Protocol"] == "TLS"
    # TLS off again: the same listener turns TCP (AWS allows one listener per port), on a new
    # TCP target group.
    tls_listener = listeners[443]["ListenerArn"]
    plain = service(uid=svc.uid, ports=((80, 30080), (443, 30443)), annotations={ann.TYPE: "nlb"})
    await lb.ensure_load_balancer(CLUSTER, plain, [node(instance)])
    listeners = {
        x["Port"]: x
        for x in console.elbv2.describe_listeners(LoadBalancerArn=d["LoadBalancerArn"])["Listeners"]
    }
    assert sorted(listeners) == [80, 443]
    assert listeners[443]["Protocol"] == "TCP"
    # (moto keeps a modified listener's certificates; AWS shows none on a TCP listener)
    assert listeners[443]["ListenerArn"] == tls_listener
    await lb.ensure_load_balancer_deleted(CLUSTER, plain)


async def test_a_shared_byo_group_keeps_its_node_rule_when_one_elb_goes(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    console.make_public(network["vpc"])
    ec2 = console.ec2
    nodes_group = ec2.create_security_group(
        GroupName="nodes", Description="n", VpcId=network["vpc"]
    )["GroupId"]
    ec2.create_tags(
        Resources=[nodes_group],
        Tags=[{"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"}],
    )
    byo = ec2.create_security_group(GroupName="byo", Description="b", VpcId=network["vpc"])[
        "GroupId"
    ]
    subnet = next(iter(network["subnets"].values()))
    instance = console.run_instance(subnet, cluster_id=cluster_id, security_groups=[nodes_group])
    lb = (await make_provider()).load_balancer()
    first = service(ports=((80, 30080),), annotations={ann.SECURITY_GROUPS: byo})
    second = service(ports=((81, 30081),), annotations={ann.SECURITY_GROUPS: byo})
    for svc in (first, second):
        await lb.ensure_load_balancer(CLUSTER, svc, [node(instance)])

    def admits() -> bool:
        found = ec2.describe_security_groups(GroupIds=[nodes_group])["SecurityGroups"][0]
        return any(
            p["IpProtocol"] == "-1" and any(u["GroupId"] == byo for u in p["UserIdGroupPairs"])
            for p in found["IpPermissions"]
        )

    assert admits()
    await lb.ensure_load_balancer_deleted(CLUSTER, first)
    assert admits()  # the second ELB still needs it
    await lb.ensure_load_balancer_deleted(CLUSTER, second)
    assert ec2.describe_security_groups(GroupIds=[byo])["SecurityGroups"]
