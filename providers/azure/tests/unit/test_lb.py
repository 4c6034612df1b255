"""The shared Standard load balancer: upstream's names, etag-guarded read-modify-write, a public
IP per Service, nothing left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ccm_azure.lb import ANNOTATION_INTERNAL
from ccm_azure.testing.arm import FakeArm

from ccm.cloudprovider import Node, Service

CLUSTER = "kubernetes"
LB = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Network/loadBalancers/"
PIP = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Network/publicIPAddresses/"


def service(uid: str, *ports: int, internal: bool = False) -> Service:
    annotations = {ANNOTATION_INTERNAL: "true"} if internal else {}
    return Service(
        {
            "metadata": {"name": f"svc-{uid}", "namespace": "ns", "uid": uid,
                         "annotations": annotations},
            "spec": {
                "type": "LoadBalancer",
                "ports": [
                    {"port": p, "nodePort": 30000 + p, "protocol": "TCP"} for p in ports
                ],
            },
        }
    )  # fmt: skip


def node(name: str, ip: str) -> Node:
    return Node(
        {
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
    )


NODES = [node("n1", "10.0.0.4"), node("n2", "10.0.0.5")]


def lb(arm: FakeArm, name: str = CLUSTER) -> dict[str, Any] | None:
    return arm.get_resource(LB + name)


def names(body: dict[str, Any], part: str) -> set[str]:
    return {x["name"] for x in body["properties"].get(part, [])}


async def test_ensure_builds_the_shared_load_balancer_as_upstream_names_it(
    make_provider: Any, arm: FakeArm
) -> None:
    lbs = (await make_provider()).load_balancer()
    a = service("1111-aaaa", 80, 443)
    assert lbs.get_load_balancer_name(CLUSTER, a) == "a1111aaaa"
    assert await lbs.get_load_balancer(CLUSTER, a) is None
    status = await lbs.ensure_load_balancer(CLUSTER, a, NODES)
    pip = arm.get_resource(PIP + "kubernetes-a1111aaaa")
    assert pip is not None
    assert status.ingress[0].ip == pip["properties"]["ipAddress"]
    assert pip["tags"] == {"k8s-azure-service": "ns/svc-1111-aaaa",
                           "k8s-azure-cluster-name": CLUSTER}  # fmt: skip
    body = lb(arm)
    assert body is not None and body["sku"]["name"] == "Standard"
    assert names(body, "frontendIPConfigurations") == {"a1111aaaa"}
    assert names(body, "loadBalancingRules") == {"a1111aaaa-TCP-80", "a1111aaaa-TCP-443"}
    assert names(body, "probes") == {"a1111aaaa-TCP-80", "a1111aaaa-TCP-443"}
    probe_ports = {p["properties"]["port"] for p in body["properties"]["probes"]}
    assert probe_ports == {30080, 30443}
    (pool,) = body["properties"]["backendAddressPools"]
    assert pool["name"] == CLUSTER
    backends = pool["properties"]["loadBalancerBackendAddresses"]
    assert {(b["name"], b["properties"]["ipAddress"]) for b in backends} == {
        ("n1", "10.0.0.4"),
        ("n2", "10.0.0.5"),
    }
    assert await lbs.get_load_balancer(CLUSTER, a) == status
    assert await lbs.ensure_load_balancer(CLUSTER, a, NODES) == status
    again = lb(arm)
    for part in ("frontendIPConfigurations", "loadBalancingRules", "probes"):
        assert names(again, part) == names(body, part)
    made = [k for k in arm.resources if "/networksecuritygroups/" not in k]
    assert len(made) == 2, "no second load balancer or public IP"

    # A second Service: its own frontend and public IP on the same load balancer.
    b = service("2222-bbbb", 8080)
    await lbs.ensure_load_balancer(CLUSTER, b, NODES)
    assert names(lb(arm), "frontendIPConfigurations") == {"a1111aaaa", "a2222bbbb"}

    # The backends change.
    await lbs.update_load_balancer(CLUSTER, a, NODES[:1])
    (pool,) = lb(arm)["properties"]["backendAddressPools"]
    assert [x["name"] for x in pool["properties"]["loadBalancerBackendAddresses"]] == ["n1"]

    # Deleting the first leaves the second; deleting the second deletes the load balancer.
    await lbs.ensure_load_balancer_deleted(CLUSTER, a)
    await lbs.ensure_load_balancer_deleted(CLUSTER, a)
    assert names(lb(arm), "frontendIPConfigurations") == {"a2222bbbb"}
    assert names(lb(arm), "loadBalancingRules") == {"a2222bbbb-TCP-8080"}
    assert arm.get_resource(PIP + "kubernetes-a1111aaaa") is None
    await lbs.ensure_load_balancer_deleted(CLUSTER, b)
    assert lb(arm) is None
    assert not [k for k in arm.resources if "/publicipaddresses/" in k]


async def test_an_internal_service_gets_a_private_frontend_on_the_internal_load_balancer(
    make_provider: Any, arm: FakeArm
) -> None:
    lbs = (await make_provider()).load_balancer()
    svc = service("3333", 80, internal=True)
    status = await lbs.ensure_load_balancer(CLUSTER, svc, NODES)
    body = lb(arm, "kubernetes-internal")
    assert body is not None and lb(arm) is None
    (frontend,) = body["properties"]["frontendIPConfigurations"]
    assert frontend["properties"]["subnet"]["id"].endswith(
        "/virtualNetworks/vnet-1/subnets/subnet-1"
    )
    assert status.ingress[0].ip == frontend["properties"]["privateIPAddress"]
    assert not [k for k in arm.resources if "/publicipaddresses/" in k]
    # Switched to public: it leaves the internal load balancer.
    public = service("3333", 80)
    await lbs.ensure_load_balancer(CLUSTER, public, NODES)
    assert lb(arm, "kubernetes-internal") is None
    assert names(lb(arm), "frontendIPConfigurations") == {"a3333"}
    await lbs.ensure_load_balancer_deleted(CLUSTER, public)
    assert lb(arm) is None


async def test_concurrent_ensures_never_lose_a_frontend(make_provider: Any, arm: FakeArm) -> None:
    lbs = (await make_provider()).load_balancer()
    services = [service(f"{i:04d}", 80) for i in range(6)]
    await asyncio.gather(*(lbs.ensure_load_balancer(CLUSTER, s, NODES) for s in services))
    assert names(lb(arm), "frontendIPConfigurations") == {f"a{i:04d}" for i in range(6)}


async def test_a_stale_etag_is_read_again(make_provider: Any, arm: FakeArm) -> None:
    lbs = (await make_provider()).load_balancer()
    await lbs.ensure_load_balancer(CLUSTER, service("0001", 80), NODES)
    arm.inject("PUT", "/loadbalancers/kubernetes", 412, code="PreconditionFailed")
    arm.calls.clear()
    await lbs.ensure_load_balancer(CLUSTER, service("0002", 80), NODES)
    assert arm.calls["PUT loadBalancers"] == 2
    assert arm.calls["GET loadBalancers"] >= 2
    assert names(lb(arm), "frontendIPConfigurations") == {"a0001", "a0002"}


async def test_update_does_not_create_a_load_balancer(make_provider: Any, arm: FakeArm) -> None:
    lbs = (await make_provider()).load_balancer()
    await lbs.update_load_balancer(CLUSTER, service("0001", 80), NODES)
    assert lb(arm) is None


@pytest.mark.parametrize("status", [429])
async def test_throttled_writes_are_retry_after_errors(
    make_provider: Any, arm: FakeArm, status: int
) -> None:
    from ccm import errors

    lbs = (await make_provider()).load_balancer()
    arm.inject("PUT", "/loadbalancers/kubernetes", status, retry_after="9")
    with pytest.raises(errors.RetryAfterError) as caught:
        await lbs.ensure_load_balancer(CLUSTER, service("0001", 80), NODES)
    assert caught.value.delay == 9


async def test_get_load_balancer_only_reads(make_provider: Any, arm: FakeArm) -> None:
    from ccm import errors

    lbs = (await make_provider()).load_balancer()
    svc = service("0001", 80)
    await lbs.ensure_load_balancer(CLUSTER, svc, NODES)
    arm.delete_resource(PIP + "kubernetes-a0001")
    arm.calls.clear()
    with pytest.raises(errors.CloudProviderError, match="no address"):
        await lbs.get_load_balancer(CLUSTER, svc)
    assert not [c for c in arm.calls if not c.startswith("GET")], arm.calls
    assert arm.get_resource(PIP + "kubernetes-a0001") is None
