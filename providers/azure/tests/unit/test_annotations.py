"""The ``azure-*`` Service annotations: upstream's names, parsing and case rules (table tests
after upstream's), their effect on the load balancer, and a bad one refused before any call."""

from __future__ import annotations

from typing import Any

import pytest
from ccm_azure import annotations as a
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld

from ccm import errors
from ccm.cloudprovider import Node, Service

CLUSTER = "kubernetes"
ADDRESSES = {"addresses": [{"type": "InternalIP", "address": "10.0.0.4"}]}
NODES = [Node({"metadata": {"name": "n1"}, "status": ADDRESSES})]
LB = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Network/loadBalancers/"


def service(annotations: dict[str, str], uid: str = "1234-abcd", **spec: Any) -> Service:
    return Service(
        {
            "metadata": {"name": "web", "namespace": "ns", "uid": uid,
                         "annotations": annotations},
            "spec": {"type": "LoadBalancer",
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], **spec},
        }
    )  # fmt: skip


def test_the_names_are_upstreams() -> None:
    assert a.INTERNAL == "service.beta.kubernetes.io/azure-load-balancer-internal"
    assert a.INTERNAL_SUBNET == "service.beta.kubernetes.io/azure-load-balancer-internal-subnet"
    assert a.PIP_NAME == "service.beta.kubernetes.io/azure-pip-name"
    assert a.DNS_LABEL_NAME == "service.beta.kubernetes.io/azure-dns-label-name"
    assert a.LOAD_BALANCER_RESOURCE_GROUP == (
        "service.beta.kubernetes.io/azure-load-balancer-resource-group"
    )
    assert a.HEALTH_PROBE_REQUEST_PATH == (
        "service.beta.kubernetes.io/azure-load-balancer-health-probe-request-path"
    )
    assert a.TCP_IDLE_TIMEOUT == "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"
    assert a.ALLOWED_SERVICE_TAGS == "service.beta.kubernetes.io/azure-allowed-service-tags"


@pytest.mark.parametrize(
    ("value", "internal"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("yes", False),
     ("", False), (" true", False)],
)  # fmt: skip
def test_internal_is_true_in_any_case(value: str, internal: bool) -> None:
    assert a.parse(service({a.INTERNAL: value})).internal is internal


@pytest.mark.parametrize(
    ("value", "want"),
    [("4", 4), ("100", 100), (" 30 ", 30), ("3", None), ("101", None), ("abc", None),
     ("4.5", None), ("", None)],
)  # fmt: skip
def test_tcp_idle_timeout_is_a_whole_number_of_minutes_between_4_and_100(
    value: str, want: int | None
) -> None:
    if want is None:
        with pytest.raises(errors.CloudProviderError, match=a.TCP_IDLE_TIMEOUT):
            a.parse(service({a.TCP_IDLE_TIMEOUT: value}))
    else:
        assert a.parse(service({a.TCP_IDLE_TIMEOUT: value})).idle_timeout == want
    assert a.parse(service({})).idle_timeout == 4


@pytest.mark.parametrize(
    ("protocol", "app", "path", "want"),
    [
        (None, None, None, ("Tcp", None)),
        ("http", None, None, ("Http", "/")),
        ("HTTPS", None, "/healthz", ("Https", "/healthz")),
        (" Http ", None, "/ready", ("Http", "/ready")),
        ("tcp", None, "/ignored", ("Tcp", None)),
        ("grpc", None, None, ("Tcp", None)),
        (None, "http", "/app", ("Http", "/app")),
        ("tcp", "https", None, ("Https", "/")),
    ],
)
def test_probe_protocol_and_request_path(
    protocol: str | None, app: str | None, path: str | None, want: tuple[str, str | None]
) -> None:
    ann = {a.HEALTH_PROBE_PROTOCOL: protocol} if protocol is not None else {}
    if path is not None:
        ann[a.HEALTH_PROBE_REQUEST_PATH] = path
    assert a.parse(service(ann)).probe_for(app) == want


def test_internal_subnet_only_for_internal_services_and_trimmed() -> None:
    assert a.parse(service({a.INTERNAL_SUBNET: "apps"})).internal_subnet is None
    opts = a.parse(service({a.INTERNAL: "true", a.INTERNAL_SUBNET: " apps "}))
    assert opts.internal_subnet == "apps"
    assert a.parse(service({a.INTERNAL: "true", a.INTERNAL_SUBNET: "  "})).internal_subnet is None


@pytest.mark.parametrize(
    ("annotations", "spec", "named"),
    [
        ({"service.beta.kubernetes.io/azure-load-balancer-health-probe-interval": "5"}, {},
         "azure-load-balancer-health-probe-interval"),
        ({a.DNS_LABEL_NAME: "Bad_Label"}, {}, a.DNS_LABEL_NAME),
        ({a.HEALTH_PROBE_REQUEST_PATH: "healthz"}, {}, a.HEALTH_PROBE_REQUEST_PATH),
        ({a.TCP_IDLE_TIMEOUT: "1000"}, {}, a.TCP_IDLE_TIMEOUT),
        ({}, {"loadBalancerSourceRanges": ["10.0.0.0/33"]}, "loadBalancerSourceRanges"),
    ],
)  # fmt: skip
async def test_a_bad_or_unknown_annotation_changes_nothing(
    make_provider: Any, arm: FakeArm, annotations: dict[str, str], spec: dict[str, Any],
    named: str,
) -> None:  # fmt: skip
    lbs = (await make_provider()).load_balancer()
    arm.calls.clear()
    with pytest.raises(errors.CloudProviderError, match=named):
        await lbs.ensure_load_balancer(CLUSTER, service(annotations, **spec), NODES)
    assert not arm.calls, "no ARM call at all"


async def test_the_annotations_shape_the_load_balancer(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    lbs = (await make_provider()).load_balancer()
    svc = service(
        {
            a.PIP_NAME: "my-ip",
            a.DNS_LABEL_NAME: "my-app",
            a.LOAD_BALANCER_RESOURCE_GROUP: "ip-rg",
            a.HEALTH_PROBE_PROTOCOL: "Http",
            a.HEALTH_PROBE_REQUEST_PATH: "/healthz",
            a.TCP_IDLE_TIMEOUT: "30",
        }
    )
    status = await lbs.ensure_load_balancer(CLUSTER, svc, NODES)
    pip = arm.get_resource(world.resource_id("Microsoft.Network", "publicIPAddresses", "my-ip",
                                             "ip-rg"))  # fmt: skip
    assert pip is not None and status.ingress[0].ip == pip["properties"]["ipAddress"]
    assert pip["properties"]["dnsSettings"]["domainNameLabel"] == "my-app"
    body = arm.get_resource(LB + CLUSTER)
    assert body is not None
    (probe,) = body["properties"]["probes"]
    assert probe["properties"] == {"protocol": "Http", "port": 30080, "requestPath": "/healthz",
                                   "intervalInSeconds": 5, "numberOfProbes": 2}  # fmt: skip
    (rule,) = body["properties"]["loadBalancingRules"]
    assert rule["properties"]["idleTimeoutInMinutes"] == 30
    assert rule["properties"]["enableTcpReset"] is True
    await lbs.ensure_load_balancer_deleted(CLUSTER, svc)
    assert arm.get_resource(pip["id"]) is None, "ccm made it: ccm deletes it"


async def test_a_public_ip_ccm_did_not_make_is_kept(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    pip_id = world.resource_id("Microsoft.Network", "publicIPAddresses", "byo-ip")
    arm.put_resource(pip_id, {"location": "eastus", "properties": {"ipAddress": "40.1.2.3"}})
    lbs = (await make_provider()).load_balancer()
    svc = service({a.PIP_NAME: "byo-ip"})
    assert (await lbs.ensure_load_balancer(CLUSTER, svc, NODES)).ingress[0].ip == "40.1.2.3"
    await lbs.ensure_load_balancer_deleted(CLUSTER, svc)
    assert arm.get_resource(pip_id) is not None
    assert arm.get_resource(LB + CLUSTER) is None


async def test_an_internal_subnet_names_the_frontend_and_rules_as_upstream(
    make_provider: Any, arm: FakeArm
) -> None:
    lbs = (await make_provider()).load_balancer()
    svc = service({a.INTERNAL: "true", a.INTERNAL_SUBNET: "apps"})
    await lbs.ensure_load_balancer(CLUSTER, svc, NODES)
    body = arm.get_resource(LB + CLUSTER + "-internal")
    assert body is not None
    (frontend,) = body["properties"]["frontendIPConfigurations"]
    assert frontend["name"] == "a1234abcd-apps"
    assert frontend["properties"]["subnet"]["id"].endswith("/virtualNetworks/vnet-1/subnets/apps")
    assert [r["name"] for r in body["properties"]["loadBalancingRules"]] == [
        "a1234abcd-apps-TCP-80"
    ]
    await lbs.ensure_load_balancer_deleted(CLUSTER, svc)
    assert arm.get_resource(LB + CLUSTER + "-internal") is None


def test_long_subnet_names_are_cut_as_upstream_cuts_them() -> None:
    from ccm_azure.lbparts import frontend_name, rule_name

    uid = "0123456789abcdef0123456789abcdef"
    base = "a" + uid[:31]
    # Cut at 75 characters: a cut ending in "-" ends in "_" instead; one ending in a letter stays.
    svc = service({a.INTERNAL: "true", a.INTERNAL_SUBNET: "s" * 41 + "-" + "t" * 10}, uid=uid)
    opts = a.parse(svc)
    assert frontend_name(svc, opts) == base + "-" + "s" * 41 + "_"
    letters = service({a.INTERNAL: "true", a.INTERNAL_SUBNET: "s" * 60}, uid=uid)
    assert frontend_name(letters, a.parse(letters)) == base + "-" + "s" * 42
    rule = rule_name(svc, opts, "TCP", 443)
    assert len(rule) == 75 and rule.endswith("-TCP-443")
