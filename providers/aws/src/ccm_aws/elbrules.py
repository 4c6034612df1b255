"""The pure rules of classic ELBs: annotations, listeners, health check, security-group
permissions and the choice of subnets (upstream ``aws.go``/``aws_loadbalancer.go``); no AWS call
here, so every rule is tested on plain dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccm.cloudprovider import Service
from ccm.errors import CloudProviderError, ImplementedElsewhereError

__all__ = [
    "ANNOTATION_INTERNAL",
    "ANNOTATION_SOURCE_RANGES",
    "ANNOTATION_TYPE",
    "HEALTH_CHECK",
    "TAG_SERVICE_NAME",
    "check_supported",
    "health_check_target",
    "is_external",
    "is_internal",
    "is_public",
    "listeners",
    "source_ranges",
    "wanted_permissions",
]

ANNOTATION_INTERNAL = "service.beta.kubernetes.io/aws-load-balancer-internal"
ANNOTATION_TYPE = "service.beta.kubernetes.io/aws-load-balancer-type"
ANNOTATION_SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges"
TAG_SERVICE_NAME = "kubernetes.io/service-name"
TAG_ROLE_ELB = "kubernetes.io/role/elb"
TAG_ROLE_INTERNAL_ELB = "kubernetes.io/role/internal-elb"
HEALTH_CHECK = {"HealthyThreshold": 2, "UnhealthyThreshold": 6, "Timeout": 5, "Interval": 10}

Permission = tuple[str, int, int, str]  # protocol, from port, to port, CIDR


def tag_map(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(t.get("Key", "")): str(t.get("Value", "")) for t in items}


def is_external(service: Service) -> bool:
    """Upstream ``isLBExternal``: another controller (the AWS Load Balancer Controller) owns it."""
    return service.annotations.get(ANNOTATION_TYPE) in ("nlb-ip", "external")


def check_supported(service: Service) -> None:
    if is_external(service):
        raise ImplementedElsewhereError()
    if service.annotations.get(ANNOTATION_TYPE) == "nlb":
        raise CloudProviderError(
            f"{ANNOTATION_TYPE}: nlb is not supported by this provider yet (service {service.key})"
        )


def is_internal(service: Service) -> bool:
    value = service.annotations.get(ANNOTATION_INTERNAL)
    return value is not None and value != "" and value != "false"


def source_ranges(service: Service) -> list[str]:
    ranges = [str(r).strip() for r in service.spec.get("loadBalancerSourceRanges") or ()]
    if not ranges:
        annotation = service.annotations.get(ANNOTATION_SOURCE_RANGES, "")
        ranges = [r.strip() for r in annotation.split(",") if r.strip()]
    return ranges or ["0.0.0.0/0"]


def listeners(service: Service) -> list[dict[str, Any]]:
    out = []
    for port in service.ports:
        protocol = str(port.get("protocol", "TCP"))
        if protocol != "TCP":
            raise CloudProviderError(
                f"Protocol {protocol} not supported by LoadBalancer (service {service.key})"
            )
        out.append(
            {
                "Protocol": "TCP",
                "LoadBalancerPort": int(port["port"]),
                "InstanceProtocol": "TCP",
                "InstancePort": int(port.get("nodePort") or 0),
            }
        )
    if not out:
        raise CloudProviderError(f"requested load balancer with no ports (service {service.key})")
    return out


def health_check_target(service: Service, first_node_port: int) -> str:
    policy = service.spec.get("externalTrafficPolicy")
    hc_port = service.spec.get("healthCheckNodePort")
    if policy == "Local" and hc_port:
        return f"HTTP:{int(hc_port)}/healthz"
    return f"TCP:{first_node_port}"


def wanted_permissions(ports: Sequence[int], cidrs: Sequence[str]) -> set[Permission]:
    perms = {("tcp", p, p, c) for p in ports for c in cidrs}
    perms |= {("icmp", 3, 4, c) for c in cidrs}  # path MTU discovery
    return perms


def group_permissions(group: Mapping[str, Any]) -> set[Permission]:
    out: set[Permission] = set()
    for perm in group.get("IpPermissions") or ():
        for rng in perm.get("IpRanges") or ():
            out.add(
                (
                    str(perm.get("IpProtocol")),
                    int(perm.get("FromPort", -1)),
                    int(perm.get("ToPort", -1)),
                    str(rng.get("CidrIp")),
                )
            )
    return out


def ip_permissions(perms: Iterable[Permission]) -> list[dict[str, Any]]:
    return [
        {"IpProtocol": p, "FromPort": f, "ToPort": t, "IpRanges": [{"CidrIp": c}]}
        for p, f, t, c in sorted(perms)
    ]


def is_public(tables: Sequence[Mapping[str, Any]], subnet_id: str) -> bool:
    """Upstream ``isSubnetPublic``: the subnet's route table (else the VPC's main one) routes to
    an internet gateway."""
    table = next(
        (
            t
            for t in tables
            if any(a.get("SubnetId") == subnet_id for a in t.get("Associations") or ())
        ),
        None,
    )
    if table is None:
        table = next(
            (t for t in tables if any(a.get("Main") for a in t.get("Associations") or ())), None
        )
    if table is None:
        return False
    return any(str(r.get("GatewayId") or "").startswith("igw") for r in table.get("Routes") or ())
