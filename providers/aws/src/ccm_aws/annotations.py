"""The Service annotations of cloud-provider-aws, parsed as upstream parses them (``aws.go``,
``aws_loadbalancer.go``, ``aws_validations.go``), quirks included; no AWS call here.

Every malformed value raises :class:`AnnotationError` (a :class:`~ccm.errors.CloudProviderError`
naming the annotation) before the provider changes anything, so the service controller reports
it in a Warning event and the load balancer stays as it was. Annotations upstream reads that this
provider does not implement yet are refused the same way (:data:`NOT_SUPPORTED`), never silently
ignored.

Upstream's quirks kept on purpose:

- ``internal``: any value but ``""`` and ``"false"`` means internal (``"no"`` and ``"False"``
  too);
- key/value lists (``additional-resource-tags``, ``target-node-labels``) split on ``,`` and then
  on ``=``, keeping the text between the first and second ``=``: ``a=b=c`` is ``{a: b}``;
  a bare ``key`` has the value ``""``;
- ``ssl-ports``: ``""`` and ``"*"`` mean every port; an item that is not an integer is a port
  name; items are not trimmed (``" 443"`` is a name);
- integers are Go's ``strconv.ParseInt(v, 10, 0)`` cut to 32 bits (no spaces, an optional sign);
  booleans are Go's ``strconv.ParseBool``;
- ``eip-allocations`` is split on ``,`` without trimming.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ccm.cloudprovider import Node, Service
from ccm.errors import CloudProviderError

__all__ = [
    "AnnotationError",
    "HealthCheck",
    "PortMapping",
    "PortSets",
    "filter_target_nodes",
    "is_external",
    "is_internal",
    "is_nlb",
    "key_values",
    "parse_bool",
    "parse_int32",
    "port_sets",
    "source_ranges",
    "string_list",
    "validate",
]

PREFIX = "service.beta.kubernetes.io/aws-load-balancer-"
TYPE = PREFIX + "type"
INTERNAL = PREFIX + "internal"
ADDITIONAL_TAGS = PREFIX + "additional-resource-tags"
HC_PROTOCOL = PREFIX + "healthcheck-protocol"
HC_PORT = PREFIX + "healthcheck-port"
HC_PATH = PREFIX + "healthcheck-path"
HC_INTERVAL = PREFIX + "healthcheck-interval"
HC_TIMEOUT = PREFIX + "healthcheck-timeout"
HC_HEALTHY = PREFIX + "healthcheck-healthy-threshold"
HC_UNHEALTHY = PREFIX + "healthcheck-unhealthy-threshold"
CROSS_ZONE = PREFIX + "cross-zone-load-balancing-enabled"
SUBNETS = PREFIX + "subnets"
EIP_ALLOCATIONS = PREFIX + "eip-allocations"
TARGET_NODE_LABELS = PREFIX + "target-node-labels"
BACKEND_PROTOCOL = PREFIX + "backend-protocol"
SSL_CERT = PREFIX + "ssl-cert"
SSL_PORTS = PREFIX + "ssl-ports"
SSL_POLICY = PREFIX + "ssl-negotiation-policy"
IDLE_TIMEOUT = PREFIX + "connection-idle-timeout"
SECURITY_GROUPS = PREFIX + "security-groups"
EXTRA_SECURITY_GROUPS = PREFIX + "extra-security-groups"
SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges"

#: Upstream annotations this provider does not implement yet: refused, never ignored.
NOT_SUPPORTED = (
    *(
        PREFIX + name
        for name in (
            "proxy-protocol",
            "access-log-enabled",
            "access-log-emit-interval",
            "access-log-s3-bucket-name",
            "access-log-s3-bucket-prefix",
            "connection-draining-enabled",
            "connection-draining-timeout",
            "target-group-attributes",
            "private-ipv4-addresses",
        )
    ),
    SSL_POLICY,
)

#: Upstream ``backendProtocolMapping``: backend protocol → ELB listener protocol with a cert.
BACKEND_TO_FRONTEND = {"https": "https", "http": "https", "ssl": "ssl", "tcp": "ssl"}

DEFAULT_HC_PORT = "traffic-port"
DEFAULT_HC_PATH = "/"

_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class AnnotationError(CloudProviderError):
    """A Service annotation (or field) the provider cannot use; nothing was changed."""

    def __init__(self, annotation: str, value: str, reason: str) -> None:
        self.annotation = annotation
        self.value = value
        super().__init__(f"annotation {annotation}={value!r}: {reason}")


def is_nlb(service: Service) -> bool:
    return service.annotations.get(TYPE) == "nlb"


def is_external(service: Service) -> bool:
    """Upstream ``isLBExternal``: the AWS Load Balancer Controller owns it."""
    return service.annotations.get(TYPE) in ("nlb-ip", "external")


def is_internal(service: Service) -> bool:
    value = service.annotations.get(INTERNAL, "")
    return value not in ("", "false")


def key_values(annotations: Mapping[str, str], name: str) -> dict[str, str]:
    """Upstream ``getKeyValuePropertiesFromAnnotation``."""
    out: dict[str, str] = {}
    if name not in annotations:
        return out
    for item in annotations[name].strip().split(","):
        parts = item.strip().split("=")
        if len(parts) >= 2 and parts[0]:
            out[parts[0]] = parts[1]
        elif len(parts) == 1 and parts[0]:
            out[parts[0]] = ""
    return out


def string_list(annotations: Mapping[str, str], name: str) -> list[str]:
    """Upstream ``splitCommaSeparatedString`` / ``getSGListFromAnnotation``."""
    return [p.strip() for p in annotations.get(name, "").split(",") if p.strip()]


def parse_int32(annotations: Mapping[str, str], name: str, default: int) -> int:
    """Upstream ``parseInt32Annotation``: Go's ``ParseInt(v, 10, 0)``, then ``int32(...)``."""
    if name not in annotations:
        return default
    value = annotations[name]
    if not _GO_INT.fullmatch(value) or not -(2**63) <= int(value) < 2**63:
        raise AnnotationError(name, value, "not an integer")
    return (int(value) + 2**31) % 2**32 - 2**31


def parse_bool(name: str, value: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise AnnotationError(name, value, "not a boolean")


@dataclass(frozen=True)
class PortSets:
    """Upstream ``portSets`` of ``ssl-ports``."""

    names: frozenset[str] = frozenset()
    numbers: frozenset[int] = frozenset()

    def has(self, port: Mapping[str, object], *, lower_name: bool) -> bool:
        name = str(port.get("name") or "")
        return int(str(port.get("port") or 0)) in self.numbers or (
            (name.lower() if lower_name else name) in self.names
        )


def port_sets(value: str) -> PortSets | None:
    """Upstream ``getPortSets``: ``None`` means every port."""
    if value in ("", "*"):
        return None
    names, numbers = set(), set()
    for item in value.split(","):
        if _GO_INT.fullmatch(item):
            numbers.add(int(item))
        else:
            names.add(item)
    return PortSets(frozenset(names), frozenset(numbers))


def source_ranges(service: Service) -> list[str]:
    """Upstream ``GetLoadBalancerSourceRanges``: the spec's ranges, else the annotation's, else
    ``0.0.0.0/0``; each must be a CIDR."""
    spec = [str(r).strip() for r in service.spec.get("loadBalancerSourceRanges") or ()]
    if spec:
        name, raw, ranges = "spec.loadBalancerSourceRanges", ",".join(spec), spec
    else:
        name, raw = SOURCE_RANGES, service.annotations.get(SOURCE_RANGES, "").strip()
        ranges = [r.strip() for r in raw.split(",") if r.strip()]
    out: list[str] = []
    for item in ranges:
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise AnnotationError(name, raw, f"{item!r} is not a CIDR") from None
    return sorted(set(out)) or ["0.0.0.0/0"]


def filter_target_nodes(nodes: Sequence[Node], annotations: Mapping[str, str]) -> list[Node]:
    """Upstream ``filterTargetNodes``: every label of ``target-node-labels`` present, with the
    same value unless the annotation's value is empty; a Node without labels never matches."""
    wanted = key_values(annotations, TARGET_NODE_LABELS)
    if not wanted:
        return list(nodes)
    return [
        n
        for n in nodes
        if n.labels
        and all(k in n.labels and (v == "" or n.labels[k] == v) for k, v in wanted.items())
    ]


@dataclass(frozen=True)
class HealthCheck:
    """Upstream ``healthCheckConfig`` of an NLB target group."""

    port: str = DEFAULT_HC_PORT
    path: str = ""
    protocol: str = "TCP"
    interval: int = 30
    timeout: int = 10
    healthy: int = 3
    unhealthy: int = 3


@dataclass(frozen=True)
class PortMapping:
    """Upstream ``nlbPortMapping``: one NLB listener and its target group."""

    frontend_port: int
    frontend_protocol: str
    traffic_port: int
    traffic_protocol: str
    health_check: HealthCheck = field(default_factory=HealthCheck)
    certificate: str = ""


def nlb_health_check(service: Service) -> HealthCheck:
    """Upstream ``buildNLBHealthCheckConfiguration`` (service node-port probe mode)."""
    a = service.annotations
    hc = HealthCheck()
    if service.spec.get("externalTrafficPolicy") == "Local":
        node_port = int(service.spec.get("healthCheckNodePort") or 0)
        hc = HealthCheck(str(node_port), "/healthz", "HTTP", 10, 10, 2, 2)
    protocol = a[HC_PROTOCOL].upper() if HC_PROTOCOL in a else hc.protocol
    if protocol in ("HTTP", "HTTPS"):
        path = a.get(HC_PATH, hc.path or DEFAULT_HC_PATH)
    elif protocol == "TCP":
        path = ""
    else:
        raise AnnotationError(
            HC_PROTOCOL, a.get(HC_PROTOCOL, ""), "unsupported health check protocol"
        )
    port = a.get(HC_PORT, hc.port)
    if port != DEFAULT_HC_PORT and not _GO_INT.fullmatch(port):
        raise AnnotationError(HC_PORT, port, "invalid health check port")
    return HealthCheck(
        port=port,
        path=path,
        protocol=protocol,
        interval=parse_int32(a, HC_INTERVAL, hc.interval),
        timeout=parse_int32(a, HC_TIMEOUT, hc.timeout),
        healthy=parse_int32(a, HC_HEALTHY, hc.healthy),
        unhealthy=parse_int32(a, HC_UNHEALTHY, hc.unhealthy),
    )


def nlb_mappings(service: Service) -> list[PortMapping]:
    """The NLB listeners of ``service`` (upstream's loop over the ports in EnsureLoadBalancer)."""
    a = service.annotations
    ssl = port_sets(a.get(SSL_PORTS, ""))
    cert = a.get(SSL_CERT, "")
    hc = nlb_health_check(service)
    out = []
    for port in service.ports:
        if not port.get("nodePort"):
            continue
        protocol = str(port.get("protocol") or "TCP")
        mapping = PortMapping(int(port["port"]), protocol, int(port["nodePort"]), protocol, hc)
        if protocol != "UDP" and cert and (ssl is None or ssl.has(port, lower_name=False)):
            backend = "TLS" if a.get(BACKEND_PROTOCOL) == "ssl" else protocol
            mapping = PortMapping(
                mapping.frontend_port, "TLS", mapping.traffic_port, backend, hc, cert
            )
        out.append(mapping)
    return out


def classic_listeners(service: Service) -> list[dict[str, object]]:
    """Upstream ``buildListener`` for each port with a node port."""
    a = service.annotations
    ssl = port_sets(a.get(SSL_PORTS, ""))
    cert = a.get(SSL_CERT, "")
    out: list[dict[str, object]] = []
    for port in service.ports:
        if not port.get("nodePort"):
            continue
        protocol = str(port.get("protocol") or "TCP").lower()
        backend = protocol
        listener: dict[str, object] = {}
        if cert and (ssl is None or ssl.has(port, lower_name=True)):
            backend = a.get(BACKEND_PROTOCOL, "")
            if backend == "":
                protocol, backend = "ssl", "tcp"
            elif backend in BACKEND_TO_FRONTEND:
                protocol = BACKEND_TO_FRONTEND[backend]
            else:
                raise AnnotationError(BACKEND_PROTOCOL, backend, "invalid backend protocol")
            listener["SSLCertificateId"] = cert
        elif a.get(BACKEND_PROTOCOL) == "http":
            protocol = backend = "http"
        listener.update(
            Protocol=protocol.upper(),
            LoadBalancerPort=int(port["port"]),
            InstanceProtocol=backend.upper(),
            InstancePort=int(port["nodePort"]),
        )
        out.append(listener)
    return out


def type_changed(service: Service) -> bool:
    """Upstream's check that the type annotation changed after creation: the ingress hostname
    has the other kind's pattern (classic: ``*.elb.amazonaws.com``, NLB:
    ``*.elb.<region>.amazonaws.com``). moto names NLBs like classic ELBs, so the caller confirms
    with the cloud before refusing."""
    ingress = (service.status.get("loadBalancer") or {}).get("ingress") or ()
    if not ingress:
        return False
    classic = str(ingress[0].get("hostname") or "").endswith(".elb.amazonaws.com")
    return is_nlb(service) == classic


def validate(service: Service) -> None:
    """Upstream's checks before any cloud call (``ensureLoadBalancerValidation`` and the start
    of ``EnsureLoadBalancer``), plus a parse of every annotation this provider reads."""
    a, nlb = service.annotations, is_nlb(service)
    for name in NOT_SUPPORTED:
        if name in a:
            raise AnnotationError(name, a[name], "not supported by this provider yet")
    # Unknown values upstream passes on silently (a classic ELB for any other type; AWS's own
    # error for a health-check protocol) are refused here, before anything is built.
    if a.get(TYPE, "") not in ("", "nlb", "nlb-ip", "external"):
        raise AnnotationError(TYPE, a[TYPE], "unknown type (nlb, nlb-ip, external, or none)")
    if a.get(BACKEND_PROTOCOL, "") not in ("", *BACKEND_TO_FRONTEND):
        raise AnnotationError(BACKEND_PROTOCOL, a[BACKEND_PROTOCOL], "unknown backend protocol")
    if HC_PROTOCOL in a and a[HC_PROTOCOL].upper() not in ("TCP", "HTTP", "HTTPS", "SSL"):
        raise AnnotationError(HC_PROTOCOL, a[HC_PROTOCOL], "unknown health check protocol")
    if nlb and EXTRA_SECURITY_GROUPS in a:
        raise AnnotationError(
            EXTRA_SECURITY_GROUPS, a[EXTRA_SECURITY_GROUPS], "not supported by NLB"
        )
    affinity = service.spec.get("sessionAffinity") or "None"
    if affinity != "None":
        raise CloudProviderError(f"unsupported load balancer affinity: {affinity}")
    if not service.ports:
        raise CloudProviderError("requested load balancer with no ports")
    protocols = [str(p.get("protocol") or "TCP") for p in service.ports]
    if len(set(protocols)) > 1:
        raise CloudProviderError("mixed protocol is not supported for LoadBalancer")
    allowed = ("TCP", "UDP") if nlb else ("TCP",)
    if protocols[0] not in allowed:
        raise CloudProviderError(f"Protocol {protocols[0]} not supported by LoadBalancer")
    if service.spec.get("loadBalancerIP"):
        raise CloudProviderError("LoadBalancerIP cannot be specified for AWS ELB")
    source_ranges(service)
    if nlb:
        nlb_mappings(service)
        nlb_cross_zone(service)
    else:
        classic_listeners(service)
        classic_health_check(service, 0)
        classic_attributes(service)


@dataclass(frozen=True)
class ClassicHealthCheck:
    target: str
    healthy: int
    unhealthy: int
    timeout: int
    interval: int

    def to_api(self) -> dict[str, object]:
        return {
            "Target": self.target,
            "HealthyThreshold": self.healthy,
            "UnhealthyThreshold": self.unhealthy,
            "Timeout": self.timeout,
            "Interval": self.interval,
        }


def classic_health_check(service: Service, first_node_port: int) -> ClassicHealthCheck:
    """Upstream's classic health check: ``EnsureLoadBalancer`` picks the protocol and port,
    ``ensureLoadBalancerHealthCheck`` applies the annotations, ``getExpectedHealthCheck`` the
    thresholds and ``ValidateHealthCheck`` their minimums."""
    a = service.annotations
    hc_node_port = int(service.spec.get("healthCheckNodePort") or 0)
    if service.spec.get("externalTrafficPolicy") == "Local" and hc_node_port:
        protocol, port, path = "HTTP", hc_node_port, "/healthz"
        if a.get(HC_PORT) == DEFAULT_HC_PORT:
            port = first_node_port
    else:
        backend = a.get(BACKEND_PROTOCOL, "").lower()
        protocol = "SSL" if backend in ("https", "ssl") else "TCP"
        port, path = first_node_port, ""
    protocol = a.get(HC_PROTOCOL, protocol)
    if HC_PORT in a and a[HC_PORT] != DEFAULT_HC_PORT:
        if not _GO_INT.fullmatch(a[HC_PORT]):
            raise AnnotationError(HC_PORT, a[HC_PORT], "invalid health check port")
        port = parse_int32(a, HC_PORT, port)
    if protocol.upper() in ("HTTP", "HTTPS"):
        path = a.get(HC_PATH) or path or DEFAULT_HC_PATH
    else:
        path = ""
    check = ClassicHealthCheck(
        target=f"{protocol}:{port}{path}",
        healthy=parse_int32(a, HC_HEALTHY, 2),
        unhealthy=parse_int32(a, HC_UNHEALTHY, 6),
        timeout=parse_int32(a, HC_TIMEOUT, 5),
        interval=parse_int32(a, HC_INTERVAL, 10),
    )
    for name, value, least in (
        (HC_HEALTHY, check.healthy, 2),
        (HC_INTERVAL, check.interval, 5),
        (HC_TIMEOUT, check.timeout, 2),
        (HC_UNHEALTHY, check.unhealthy, 2),
    ):
        if value < least:
            raise AnnotationError(name, a.get(name, ""), f"must be at least {least}")
    return check


def classic_attributes(service: Service) -> dict[str, object]:
    """The classic ELB attributes upstream sets on every ensure (idle timeout 60 s, cross-zone
    off by default)."""
    a = service.annotations
    cross_zone = False
    if a.get(CROSS_ZONE, ""):
        cross_zone = parse_bool(CROSS_ZONE, a[CROSS_ZONE])
    idle = 60
    if a.get(IDLE_TIMEOUT, ""):
        value = a[IDLE_TIMEOUT]  # Go's ParseInt(v, 10, 32): out of range is an error
        if not _GO_INT.fullmatch(value) or not -(2**31) <= int(value) < 2**31:
            raise AnnotationError(IDLE_TIMEOUT, value, "not a 32-bit integer")
        idle = int(value)
    return {
        "CrossZoneLoadBalancing": {"Enabled": cross_zone},
        "ConnectionSettings": {"IdleTimeout": idle},
    }


def nlb_cross_zone(service: Service) -> str:
    """Upstream ``reconcileLBAttributes``: ``load_balancing.cross_zone.enabled``."""
    value = service.annotations.get(CROSS_ZONE, "")
    return "true" if value and parse_bool(CROSS_ZONE, value) else "false"
