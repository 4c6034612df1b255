"""The pure rules of classic ELBs' security groups and of public subnets (upstream
``aws.go``/``aws_loadbalancer.go``); no AWS call here, so every rule is tested on plain dicts.
The annotations are :mod:`ccm_aws.annotations`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "TAG_SERVICE_NAME",
    "group_permissions",
    "ip_permissions",
    "is_public",
    "tag_map",
    "wanted_permissions",
]

TAG_SERVICE_NAME = "kubernetes.io/service-name"
TAG_ROLE_ELB = "kubernetes.io/role/elb"
TAG_ROLE_INTERNAL_ELB = "kubernetes.io/role/internal-elb"

Permission = tuple[str, int, int, str]  # protocol, from port, to port, CIDR


def tag_map(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(t.get("Key", "")): str(t.get("Value", "")) for t in items}


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
