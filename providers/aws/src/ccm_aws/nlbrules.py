"""The Nodes' security groups admit an NLB's traffic (upstream
``updateInstanceSecurityGroupsForNLB``): an NLB has no security group of its own, so each backend
instance's group (:func:`ccm_aws.nodegroups.instance_group`) gets

- a client rule per traffic port from each source range, described
  ``kubernetes.io/rule/nlb/client=<load balancer name>`` (UDP for a UDP Service);
- a health rule per health-check port from the NLB's subnets' CIDRs, described
  ``kubernetes.io/rule/nlb/health=<name>``, unless the client rule already covers it (TCP from
  ``0.0.0.0/0`` on the same ports);
- ICMP fragmentation-needed (3/4) from every client rule's range, described
  ``kubernetes.io/rule/nlb/mtu`` (shared by the NLBs of the group).

The cluster's other tagged groups lose this NLB's rules; deleting the NLB removes them from every
tagged group. ``[Global] DisableSecurityGroupIngress = true`` turns all of this off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccm.errors import CloudProviderError
from ccm_aws.annotations import DEFAULT_HC_PORT, PortMapping
from ccm_aws.api import AWSApi, aws_code
from ccm_aws.nodegroups import instance_group
from ccm_aws.tags import ClusterTagging

__all__ = ["CLIENT", "HEALTH", "MTU", "sync_nlb_ingress"]

CLIENT = "kubernetes.io/rule/nlb/client"
HEALTH = "kubernetes.io/rule/nlb/health"
MTU = "kubernetes.io/rule/nlb/mtu"
DUPLICATE = "InvalidPermission.Duplicate"

Rule = tuple[str, int, int, str, str]  # protocol, from port, to port, CIDR, description


def _rules(group: Mapping[str, Any]) -> set[Rule]:
    return {
        (
            str(p.get("IpProtocol")),
            int(p.get("FromPort", -1)),
            int(p.get("ToPort", -1)),
            str(r.get("CidrIp")),
            str(r.get("Description") or ""),
        )
        for p in group.get("IpPermissions") or ()
        for r in p.get("IpRanges") or ()
    }


def _api_rules(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    return [
        {
            "IpProtocol": p,
            "FromPort": f,
            "ToPort": t,
            "IpRanges": [{"CidrIp": c, "Description": d}],
        }
        for p, f, t, c, d in sorted(rules)
    ]


def wanted_rules(
    name: str,
    mappings: Sequence[PortMapping],
    client_cidrs: Sequence[str],
    subnet_cidrs: Sequence[str],
) -> set[Rule]:
    """The client and health rules of the NLB ``name`` on a backend's group."""
    client_ports = {m.traffic_port for m in mappings}
    protocol = "udp" if any(m.traffic_protocol == "UDP" for m in mappings) else "tcp"
    health_ports = {
        m.traffic_port if m.health_check.port == DEFAULT_HC_PORT else int(m.health_check.port)
        for m in mappings
    }
    client = f"{CLIENT}={name}"
    rules = {(protocol, p, p, c, client) for p in client_ports for c in client_cidrs}
    if list(client_cidrs) != ["0.0.0.0/0"] or protocol != "tcp" or health_ports != client_ports:
        health = f"{HEALTH}={name}"
        rules |= {("tcp", p, p, c, health) for p in health_ports for c in subnet_cidrs}
    return rules


async def sync_nlb_ingress(
    api: AWSApi,
    tagging: ClusterTagging,
    name: str,
    instances: Iterable[Mapping[str, Any]],
    wanted: set[Rule],
) -> None:
    """Give the groups of ``instances`` exactly ``wanted`` of the NLB ``name``'s rules, take
    them from the cluster's other tagged groups, and keep the MTU rules in step."""
    tagged: list[dict[str, Any]] = []
    if tagging.cluster_id:
        tagged = await api.paginate(
            "ec2",
            "describe_security_groups",
            "SecurityGroups",
            Filters=[{"Name": "tag-key", "Values": [tagging.cluster_tag_key]}],
        )
    known = {str(g["GroupId"]): g for g in tagged}
    desired = {g for i in instances if (g := instance_group(i, known)) is not None}
    missing = sorted(desired - set(known))
    if missing:
        for group in await api.paginate(
            "ec2", "describe_security_groups", "SecurityGroups", GroupIds=missing
        ):
            known[str(group["GroupId"])] = group
    ours = {f"{CLIENT}={name}", f"{HEALTH}={name}"}
    for group_id, group in sorted(known.items()):
        have = _rules(group)
        want = {r for r in have if r[4] not in ours and r[4] != MTU}
        if group_id in desired:
            want |= wanted
        want |= {("icmp", 3, 4, r[3], MTU) for r in want if r[4].startswith(CLIENT + "=")}
        revoke, grant = have - want, want - have
        if revoke:
            await api.call(
                "ec2",
                "revoke_security_group_ingress",
                GroupId=group_id,
                IpPermissions=_api_rules(revoke),
            )
        if grant:
            await _authorize(api, group_id, grant)


async def _authorize(api: AWSApi, group_id: str, rules: set[Rule]) -> None:
    """Authorize ``rules``; one the group has already under another description (two NLBs
    checking health on the same port) is skipped, as AWS allows one rule per range."""
    try:
        await api.call(
            "ec2",
            "authorize_security_group_ingress",
            GroupId=group_id,
            IpPermissions=_api_rules(rules),
        )
    except CloudProviderError as exc:
        if aws_code(exc) != DUPLICATE:
            raise
        for rule in sorted(rules):
            try:
                await api.call(
                    "ec2",
                    "authorize_security_group_ingress",
                    GroupId=group_id,
                    IpPermissions=_api_rules([rule]),
                )
            except CloudProviderError as one:
                if aws_code(one) != DUPLICATE:
                    raise
