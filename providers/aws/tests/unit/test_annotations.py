"""The annotations, parsed as cloud-provider-aws parses them: its test tables (TestBuildListener,
TestGetKeyValuePropertiesFromAnnotation, TestEnsureLoadBalancerHealthCheck,
TestCloud_buildNLBHealthCheckConfiguration, TestFilterTargetNodes, TestCheckProtocol,
TestCheckMixedProtocol) and its quirks; a malformed value is refused, naming the annotation,
before any AWS call."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ccm_aws import annotations as ann
from ccm_aws.annotations import AnnotationError, HealthCheck

from ccm.cloudprovider import Node, Service
from ccm.errors import CloudProviderError

from .test_elb import CLUSTER, service


def svc(
    annotations: dict[str, str] | None = None,
    *,
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> Service:
    return Service(
        {
            "metadata": {
                "name": "test-svc",
                "namespace": "default",
                "uid": str(uuid.uuid4()),
                "annotations": annotations or {},
            },
            "spec": {
                "type": "LoadBalancer",
                "ports": ports
                if ports is not None
                else [{"name": "http", "protocol": "TCP", "port": 8080, "nodePort": 32205}],
                **spec,
            },
        }
    )


@pytest.mark.parametrize(
    ("value", "internal"),
    [("", False), ("false", False), ("true", True), ("0.0.0.0/0", True), ("False", True),
     ("no", True), ("FALSE", True)],
)  # fmt: skip
def test_any_internal_value_but_false_means_internal(value: str, internal: bool) -> None:
    assert ann.is_internal(svc({ann.INTERNAL: value})) is internal
    assert ann.is_internal(svc()) is False


# TestGetKeyValuePropertiesFromAnnotation
@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("Key=Val", {"Key": "Val"}),
        ("Key1=Val1, Key2=Val2", {"Key1": "Val1", "Key2": "Val2"}),
        ("Key1=, Key2=Val2", {"Key1": "", "Key2": "Val2"}),
        ("K=V K1=V2,Key1========, =====, ======Val, =Val, , 234,",
         {"K": "V K1", "Key1": "", "234": ""}),
        ("a=b=c", {"a": "b"}),
    ],
)  # fmt: skip
def test_key_values(value: str, want: dict[str, str]) -> None:
    assert ann.key_values({ann.ADDITIONAL_TAGS: value}, ann.ADDITIONAL_TAGS) == want
    assert ann.key_values({"Nothing": value}, ann.ADDITIONAL_TAGS) == {}


# TestBuildListener: (lb port, port name, node port, backend, cert, ssl ports) →
# (error, lb protocol, instance protocol, cert)
@pytest.mark.parametrize(
    ("case", "want"),
    [
        ((80, "", 7999, "", "", ""), (False, "tcp", "tcp", "")),
        ((80, "", 8000, "", "cert", ""), (False, "ssl", "tcp", "cert")),
        ((443, "", 8001, "https", "", ""), (False, "tcp", "tcp", "")),
        ((443, "", 8002, "bacon", "foo", ""), (True, "", "", "")),
        ((443, "", 8003, "http=", "=", ""), (True, "", "", "")),
        ((443, "", 8004, "https", "cert", ""), (False, "https", "https", "cert")),
        ((443, "", 8005, "http", "cert", ""), (False, "https", "http", "cert")),
        ((443, "", 8006, "ssl", "cert", ""), (False, "ssl", "ssl", "cert")),
        ((443, "", 8007, "tcp", "cert", ""), (False, "ssl", "tcp", "cert")),
        ((1234, "", 8008, "tcp", "cert", "1234,5678"), (False, "ssl", "tcp", "cert")),
        ((443, "", 8009, "tcp", "cert", "1234,5678"), (False, "tcp", "tcp", "")),
        ((1234, "bar", 8010, "tcp", "cert", "foo,bar"), (False, "ssl", "tcp", "cert")),
        ((443, "", 8011, "tcp", "cert", "foo,bar"), (False, "tcp", "tcp", "")),
        ((80, "", 8012, "http", "", ""), (False, "http", "http", "")),
    ],
)  # fmt: skip
def test_classic_listeners(
    case: tuple[int, str, int, str, str, str], want: tuple[bool, str, str, str]
) -> None:
    port, name, node_port, backend, cert, ssl_ports = case
    annotations = {
        k: v
        for k, v in (
            (ann.BACKEND_PROTOCOL, backend),
            (ann.SSL_CERT, cert),
            (ann.SSL_PORTS, ssl_ports),
        )
        if v
    }
    service_ = svc(annotations, ports=[{"name": name, "port": port, "nodePort": node_port}])
    error, protocol, instance_protocol, cert_id = want
    if error:
        with pytest.raises(AnnotationError, match=ann.BACKEND_PROTOCOL):
            ann.classic_listeners(service_)
        return
    (listener,) = ann.classic_listeners(service_)
    assert listener["Protocol"] == protocol.upper()
    assert listener["InstanceProtocol"] == instance_protocol.upper()
    assert (listener["LoadBalancerPort"], listener["InstancePort"]) == (port, node_port)
    assert listener.get("SSLCertificateId", "") == cert_id


def test_ssl_ports_quirks() -> None:
    assert ann.port_sets("") is None
    assert ann.port_sets("*") is None
    sets = ann.port_sets("443, 8443,https")
    assert sets == ann.PortSets(names=frozenset({" 8443", "https"}), numbers=frozenset({443}))


# TestEnsureLoadBalancerHealthCheck (first node port 8080)
@pytest.mark.parametrize(
    ("annotations", "want"),
    [
        ({}, ("TCP:8080", 2, 6, 5, 10)),
        ({ann.HC_HEALTHY: "7"}, ("TCP:8080", 7, 6, 5, 10)),
        ({ann.HC_UNHEALTHY: "7"}, ("TCP:8080", 2, 7, 5, 10)),
        ({ann.HC_TIMEOUT: "7"}, ("TCP:8080", 2, 6, 7, 10)),
        ({ann.HC_INTERVAL: "7"}, ("TCP:8080", 2, 6, 5, 7)),
        ({ann.HC_PORT: "2122"}, ("TCP:2122", 2, 6, 5, 10)),
        ({ann.HC_PROTOCOL: "HTTP"}, ("HTTP:8080/", 2, 6, 5, 10)),
        ({ann.HC_PROTOCOL: "HTTPS", ann.HC_PATH: "/healthz", ann.HC_PORT: "31224"},
         ("HTTPS:31224/healthz", 2, 6, 5, 10)),
        ({ann.HC_PROTOCOL: "SSL", ann.HC_PATH: "/healthz", ann.HC_PORT: "3124"},
         ("SSL:3124", 2, 6, 5, 10)),
        ({ann.HC_PROTOCOL: "TCP", ann.HC_PORT: "traffic-port"}, ("TCP:8080", 2, 6, 5, 10)),
        ({ann.BACKEND_PROTOCOL: "https"}, ("SSL:8080", 2, 6, 5, 10)),
    ],
)  # fmt: skip
def test_classic_health_check(
    annotations: dict[str, str], want: tuple[str, int, int, int, int]
) -> None:
    check = ann.classic_health_check(svc(annotations), 8080)
    assert (check.target, check.healthy, check.unhealthy, check.timeout, check.interval) == want


def test_classic_health_check_of_a_local_service() -> None:
    local = {"externalTrafficPolicy": "Local", "healthCheckNodePort": 32213}
    assert ann.classic_health_check(svc(**local), 8080).target == "HTTP:32213/healthz"
    traffic = svc({ann.HC_PORT: "traffic-port"}, **local)
    assert ann.classic_health_check(traffic, 8080).target == "HTTP:8080/healthz"


@pytest.mark.parametrize(
    "annotations",
    [{ann.HC_TIMEOUT: "1"}, {ann.HC_TIMEOUT: "3.3"}, {ann.HC_INTERVAL: " 10"},
     {ann.HC_PORT: "http"}, {ann.HC_HEALTHY: "1"}],
)  # fmt: skip
def test_classic_health_check_refuses_bad_values(annotations: dict[str, str]) -> None:
    (name,) = annotations
    with pytest.raises(AnnotationError, match=name):
        ann.classic_health_check(svc(annotations), 8080)


LOCAL = {"externalTrafficPolicy": "Local", "healthCheckNodePort": 32213}


# TestCloud_buildNLBHealthCheckConfiguration (service node-port probe mode)
@pytest.mark.parametrize(
    ("annotations", "spec", "want"),
    [
        ({}, {}, HealthCheck("traffic-port", "", "TCP", 30, 10, 3, 3)),
        ({}, LOCAL, HealthCheck("32213", "/healthz", "HTTP", 10, 10, 2, 2)),
        ({ann.HC_PROTOCOL: "TCP", ann.HC_PORT: "8001", ann.HC_PATH: "/healthz",
          ann.HC_HEALTHY: "4", ann.HC_UNHEALTHY: "4", ann.HC_INTERVAL: "10",
          ann.HC_TIMEOUT: "5"}, LOCAL, HealthCheck("8001", "", "TCP", 10, 5, 4, 4)),
        ({ann.HC_PROTOCOL: "HTTP", ann.HC_PORT: "41233", ann.HC_PATH: "/healthz",
          ann.HC_HEALTHY: "5", ann.HC_UNHEALTHY: "5", ann.HC_INTERVAL: "30",
          ann.HC_TIMEOUT: "6"}, {}, HealthCheck("41233", "/healthz", "HTTP", 30, 6, 5, 5)),
        ({ann.HC_PROTOCOL: "Http"}, {}, HealthCheck("traffic-port", "/", "HTTP", 30, 10, 3, 3)),
        ({ann.HC_INTERVAL: "23"}, {}, HealthCheck("traffic-port", "", "TCP", 23, 10, 3, 3)),
        ({ann.HC_HEALTHY: "7", ann.HC_UNHEALTHY: "5"}, {},
         HealthCheck("traffic-port", "", "TCP", 30, 10, 7, 5)),
        ({ann.HC_TIMEOUT: "non-numeric"}, {}, None),
        ({ann.HC_PROTOCOL: "SSL"}, {}, None),
        ({ann.HC_PORT: "traffic"}, {}, None),
    ],
)  # fmt: skip
def test_nlb_health_check(
    annotations: dict[str, str], spec: dict[str, Any], want: HealthCheck | None
) -> None:
    service_ = svc(annotations, **spec)
    if want is None:
        with pytest.raises(AnnotationError):
            ann.nlb_health_check(service_)
    else:
        assert ann.nlb_health_check(service_) == want


def test_integers_are_gos_parseint_cut_to_32_bits() -> None:
    assert ann.parse_int32({"x": "+7"}, "x", 0) == 7
    assert ann.parse_int32({"x": "4294967297"}, "x", 0) == 1
    for bad in ("7 ", "0x10", "1_0", "", "9223372036854775808"):
        with pytest.raises(AnnotationError):
            ann.parse_int32({"x": bad}, "x", 0)


def test_booleans_are_gos_parsebool() -> None:
    assert [ann.parse_bool("x", v) for v in ("1", "t", "T", "TRUE", "true", "True")] == [True] * 6
    assert [ann.parse_bool("x", v) for v in ("0", "f", "F", "FALSE", "false", "False")] == [
        False
    ] * 6
    for bad in ("yes", "on", "tRUE", ""):
        with pytest.raises(AnnotationError):
            ann.parse_bool("x", bad)


# TestFilterTargetNodes
@pytest.mark.parametrize(
    ("labels", "value", "targeted"),
    [
        ({"k1": "v1"}, None, True),
        ({"k1": "v1", "k2": "v2"}, "k1=v1,k2=v2", True),
        ({"k1": "v1", "k2": "v2"}, "k1,k2", True),
        ({"k1": "v1"}, "k1=v1,k2", False),
        ({"k1": "v1", "k2": "v2"}, "k3=v3", False),
        ({}, "k1", False),
    ],
)  # fmt: skip
def test_target_node_labels(labels: dict[str, str], value: str | None, targeted: bool) -> None:
    node = Node({"metadata": {"name": "n", "labels": labels}})
    annotations = {} if value is None else {ann.TARGET_NODE_LABELS: value}
    assert ann.filter_target_nodes([node], annotations) == ([node] if targeted else [])


# TestCheckProtocol, TestCheckMixedProtocol, and the other checks before any cloud call
@pytest.mark.parametrize(
    ("nlb", "protocols", "error"),
    [
        (False, ["TCP"], None),
        (True, ["TCP"], None),
        (False, ["UDP"], "Protocol UDP not supported"),
        (True, ["UDP"], None),
        (True, ["UDP", "TCP"], "mixed protocol is not supported"),
        (True, ["SCTP"], "Protocol SCTP not supported"),
    ],
)  # fmt: skip
def test_protocols(nlb: bool, protocols: list[str], error: str | None) -> None:
    ports = [{"protocol": p, "port": 53, "nodePort": 30053 + i} for i, p in enumerate(protocols)]
    service_ = svc({ann.TYPE: "nlb"} if nlb else {}, ports=ports)
    if error is None:
        ann.validate(service_)
    else:
        with pytest.raises(CloudProviderError, match=error):
            ann.validate(service_)


@pytest.mark.parametrize(
    ("annotations", "spec", "named"),
    [
        ({ann.CROSS_ZONE: "yes"}, {}, ann.CROSS_ZONE),
        ({ann.IDLE_TIMEOUT: "1m"}, {}, ann.IDLE_TIMEOUT),
        ({ann.TYPE: "nlb", ann.CROSS_ZONE: "maybe"}, {}, ann.CROSS_ZONE),
        ({ann.TYPE: "nlb", ann.EXTRA_SECURITY_GROUPS: "sg-1"}, {}, ann.EXTRA_SECURITY_GROUPS),
        ({ann.SOURCE_RANGES: "10.0.0.0/8,nonsense"}, {}, ann.SOURCE_RANGES),
        ({}, {"loadBalancerSourceRanges": ["300.0.0.0/8"]}, "spec.loadBalancerSourceRanges"),
        ({ann.PREFIX + "proxy-protocol": "*"}, {}, "proxy-protocol"),
        ({ann.SSL_POLICY: "ELBSecurityPolicy-2016-08"}, {}, ann.SSL_POLICY),
        ({}, {"loadBalancerIP": "1.2.3.4"}, "LoadBalancerIP cannot be specified"),
        ({ann.TYPE: "NLB"}, {}, ann.TYPE),
        ({ann.TYPE: "alb"}, {}, ann.TYPE),
        ({ann.BACKEND_PROTOCOL: "grpc"}, {}, ann.BACKEND_PROTOCOL),
        ({ann.HC_PROTOCOL: "UDP"}, {}, ann.HC_PROTOCOL),
        ({}, {"sessionAffinity": "ClientIP"}, "unsupported load balancer affinity"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_annotation(
    annotations: dict[str, str], spec: dict[str, Any], named: str
) -> None:
    with pytest.raises(CloudProviderError, match=named):
        ann.validate(svc(annotations, **spec))


def test_a_type_change_is_suspected_from_the_hostname() -> None:
    def with_host(annotations: dict[str, str], host: str) -> Service:
        raw = svc(annotations).to_dict()
        raw["status"] = {"loadBalancer": {"ingress": [{"hostname": host}]}}
        return Service(raw)

    nlb = {ann.TYPE: "nlb"}
    assert ann.type_changed(with_host(nlb, "a-1.elb.amazonaws.com"))
    assert not ann.type_changed(with_host(nlb, "a-1.elb.us-east-1.amazonaws.com"))
    assert ann.type_changed(with_host({}, "a-1.elb.us-east-1.amazonaws.com"))
    assert not ann.type_changed(with_host({}, "a-1.elb.amazonaws.com"))
    assert not ann.type_changed(svc(nlb))


def test_source_ranges() -> None:
    assert ann.source_ranges(svc()) == ["0.0.0.0/0"]
    assert ann.source_ranges(svc({ann.SOURCE_RANGES: " 10.0.0.0/8 , 192.168.1.7/16"})) == [
        "10.0.0.0/8",
        "192.168.0.0/16",
    ]
    spec = svc({ann.SOURCE_RANGES: "10.0.0.0/8"}, loadBalancerSourceRanges=["1.2.3.4/32"])
    assert ann.source_ranges(spec) == ["1.2.3.4/32"]


MakeProvider = Callable[..., Awaitable[Any]]


@pytest.mark.parametrize("nlb", [False, True])
async def test_a_malformed_annotation_changes_nothing_in_the_cloud(
    make_provider: MakeProvider, network: dict[str, Any], nlb: bool
) -> None:
    provider = await make_provider()
    calls: list[str] = []
    provider.api.observe(lambda model, **_: calls.append(model.name))
    annotations = {ann.HC_INTERVAL: "ten"}
    if nlb:
        annotations[ann.TYPE] = "nlb"
    bad = service(annotations=annotations)
    lb = provider.load_balancer()
    with pytest.raises(AnnotationError, match=ann.HC_INTERVAL):
        await lb.ensure_load_balancer(CLUSTER, bad, [])
    with pytest.raises(AnnotationError, match=ann.HC_INTERVAL):
        await lb.update_load_balancer(CLUSTER, bad, [])
    assert calls == []
