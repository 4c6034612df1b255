"""Network security group rules as upstream names and shares them: one allow rule per protocol,
sources and ports, whose destinations are the frontends of every Service allowing the same; gone
with the last Service; etag-guarded like the load balancer."""

from __future__ import annotations

import asyncio
from typing import Any

from ccm_azure.annotations import ALLOWED_SERVICE_TAGS, INTERNAL
from ccm_azure.nsg import allow_rule_name
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld

from ccm.cloudprovider import Node, Service

CLUSTER = "kubernetes"
ADDRESSES = {"addresses": [{"type": "InternalIP", "address": "10.0.0.4"}]}
NODES = [Node({"metadata": {"name": "n1"}, "status": ADDRESSES})]


def service(uid: str, *ports: int, udp: tuple[int, ...] = (), **spec: Any) -> Service:
    annotations = spec.pop("annotations", {})
    return Service(
        {
            "metadata": {"name": f"svc-{uid}", "namespace": "ns", "uid": uid,
                         "annotations": annotations},
            "spec": {
                "type": "LoadBalancer",
                "ports": [{"port": p, "nodePort": 30000 + p, "protocol": "TCP"} for p in ports]
                + [{"port": p, "nodePort": 31000 + p, "protocol": "UDP"} for p in udp],
                **spec,
            },
        }
    )  # fmt: skip


def test_rule_names_are_byte_identical_to_upstreams() -> None:
    # The names upstream's own tests expect (securitygroup_test.go, accesscontrol_test.go).
    assert (
        allow_rule_name("Tcp", "IPv4", ["foo", "bar"], [443])
        == "k8s-azure-lb_allow_IPv4_b5ae07e8a4177ea2d37162cdf2badf8b"
    )
    assert (
        allow_rule_name("Udp", "IPv4", ["src_quo", "src_baz"], [56, 53])
        == "k8s-azure-lb_allow_IPv4_648b18e18a92d1a4b415033da37c79a5"
    )


async def test_public_services_share_the_internet_rule_and_leave_nothing(
    make_provider: Any, world: AzureWorld
) -> None:
    lbs = (await make_provider()).load_balancer()
    a, b = service("0001", 80, 443), service("0002", 80, 443, udp=(53,))
    ip_a = (await lbs.ensure_load_balancer(CLUSTER, a, NODES)).ingress[0].ip
    ip_b = (await lbs.ensure_load_balancer(CLUSTER, b, NODES)).ingress[0].ip
    rules = world.security_rules()
    tcp = allow_rule_name("Tcp", "IPv4", ["Internet"], [80, 443])
    udp = allow_rule_name("Udp", "IPv4", ["Internet"], [53])
    assert set(rules) == {tcp, udp}
    props = rules[tcp]["properties"]
    assert sorted(props["destinationAddressPrefixes"]) == sorted([ip_a, ip_b])
    assert props["destinationPortRanges"] == ["443", "80"]
    assert (props["sourceAddressPrefix"], props["access"], props["direction"]) == (
        "Internet", "Allow", "Inbound",
    )  # fmt: skip
    assert {r["properties"]["priority"] for r in rules.values()} == {500, 501}
    assert rules[udp]["properties"]["destinationAddressPrefix"] == ip_b

    # A port change moves the Service to another rule; the first rule keeps the other Service.
    a2 = service("0001", 8080)
    await lbs.ensure_load_balancer(CLUSTER, a2, NODES)
    rules = world.security_rules()
    assert rules[tcp]["properties"]["destinationAddressPrefix"] == ip_b
    moved = allow_rule_name("Tcp", "IPv4", ["Internet"], [8080])
    assert rules[moved]["properties"]["destinationAddressPrefix"] == ip_a

    await lbs.ensure_load_balancer_deleted(CLUSTER, a2)
    await lbs.ensure_load_balancer_deleted(CLUSTER, b)
    assert world.security_rules() == {}


async def test_source_ranges_and_service_tags(make_provider: Any, world: AzureWorld) -> None:
    lbs = (await make_provider()).load_balancer()
    ranged = service(
        "0003", 443, loadBalancerSourceRanges=["10.1.0.0/24", "10.1.1.0/24", "192.168.0.0/16"]
    )
    ip = (await lbs.ensure_load_balancer(CLUSTER, ranged, NODES)).ingress[0].ip
    name = allow_rule_name("Tcp", "IPv4", ["10.1.0.0/23", "192.168.0.0/16"], [443])
    assert set(world.security_rules()) == {name}, "aggregated ranges, no Internet rule"
    props = world.security_rules()[name]["properties"]
    assert props["sourceAddressPrefixes"] == ["10.1.0.0/23", "192.168.0.0/16"]
    assert props["destinationAddressPrefix"] == ip

    tagged = service("0004", 80, annotations={ALLOWED_SERVICE_TAGS: "AzureCloud, Storage"})
    await lbs.ensure_load_balancer(CLUSTER, tagged, NODES)
    assert set(world.security_rules()) == {
        name,
        allow_rule_name("Tcp", "IPv4", ["AzureCloud"], [80]),
        allow_rule_name("Tcp", "IPv4", ["Storage"], [80]),
    }
    # An internal Service without ranges gets no rule (upstream: not open to the Internet).
    internal = service("0005", 80, annotations={INTERNAL: "true"})
    before = set(world.security_rules())
    await lbs.ensure_load_balancer(CLUSTER, internal, NODES)
    assert set(world.security_rules()) == before


async def test_rules_not_ours_are_kept_and_races_retried(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    sg = arm.get_resource(world.create_security_group())
    assert sg is not None
    sg["properties"]["securityRules"] = [
        {"name": "allow-ssh", "properties": {"priority": 500, "protocol": "Tcp", "access": "Allow",
         "direction": "Inbound", "sourceAddressPrefix": "*", "sourcePortRange": "*",
         "destinationAddressPrefix": "*", "destinationPortRange": "22"}},
    ]  # fmt: skip
    lbs = (await make_provider()).load_balancer()
    race = arm.inject("PUT", "/networksecuritygroups/nsg-1", 412, code="PreconditionFailed")
    services = [service(f"1{i:03d}", 80) for i in range(5)]
    ips = await asyncio.gather(*(lbs.ensure_load_balancer(CLUSTER, s, NODES) for s in services))
    assert race.seen == 1
    rules = world.security_rules()
    (ours,) = [r for n, r in rules.items() if n != "allow-ssh"]
    assert ours["properties"]["priority"] == 501, "the first free priority from 500"
    got = ours["properties"]["destinationAddressPrefixes"]
    assert sorted(got) == sorted(s.ingress[0].ip for s in ips)
    for s in services:
        await lbs.ensure_load_balancer_deleted(CLUSTER, s)
    assert set(world.security_rules()) == {"allow-ssh"}
