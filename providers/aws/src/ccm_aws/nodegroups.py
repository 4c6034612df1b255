"""The Nodes' security groups admit their ELB (upstream
``updateInstanceSecurityGroupsForLoadBalancer``): each backend instance's security group gets one
rule allowing all traffic from the ELB's security group, and loses it when no backend of that
ELB uses the group any more, or when the ELB is deleted.

An instance's group is the one of its groups tagged for the cluster; with no tagged group, its
only group (upstream ``findSecurityGroupForInstance``); an instance with several untagged groups
is skipped with a warning. ``[Global] DisableSecurityGroupIngress = true`` turns all of this off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ccm_aws.api import AWSApi
from ccm_aws.tags import ClusterTagging

__all__ = ["instance_group", "sync_node_ingress"]

_log = logging.getLogger("ccm_aws")


def instance_group(instance: Mapping[str, Any], tagged: Iterable[str]) -> str | None:
    """The security group of ``instance`` that admits load-balancer traffic, if one is clear."""
    groups = [str(g["GroupId"]) for g in instance.get("SecurityGroups") or ()]
    ours = [g for g in groups if g in set(tagged)]
    if len(ours) == 1:
        return ours[0]
    if len(ours) > 1:
        _log.warning(
            "instance %s has several security groups tagged for the cluster: %s; using %s",
            instance.get("InstanceId"),
            ours,
            sorted(ours)[0],
        )
        return sorted(ours)[0]
    if len(groups) == 1:
        return groups[0]
    _log.warning(
        "no security group of instance %s is tagged for the cluster; not opening it to the load "
        "balancer (groups: %s)",
        instance.get("InstanceId"),
        groups,
    )
    return None


def _admits(group: Mapping[str, Any], source: str) -> bool:
    return any(
        perm.get("IpProtocol") == "-1"
        and any(pair.get("GroupId") == source for pair in perm.get("UserIdGroupPairs") or ())
        for perm in group.get("IpPermissions") or ()
    )


async def sync_node_ingress(
    api: AWSApi,
    tagging: ClusterTagging,
    source: str,
    instances: Iterable[Mapping[str, Any]],
    *,
    candidates: Iterable[str] = (),
    keep_others: bool = False,
) -> None:
    """Make exactly the groups of ``instances`` admit ``source`` (the ELB's group) among the
    cluster's tagged groups, those groups and ``candidates`` (groups of former backends);
    ``keep_others``: only add rules, never revoke one."""
    tagged: list[dict[str, Any]] = []
    if tagging.cluster_id:
        tagged = await api.paginate(
            "ec2",
            "describe_security_groups",
            "SecurityGroups",
            Filters=[{"Name": "tag-key", "Values": [tagging.cluster_tag_key]}],
        )
    tagged_ids = {str(g["GroupId"]) for g in tagged}
    wanted = {g for i in instances if (g := instance_group(i, tagged_ids)) is not None}
    wanted.discard(source)
    known = {str(g["GroupId"]): g for g in tagged}
    others = sorted((wanted | set(candidates)) - set(known) - {source})
    if others:
        for group in await api.paginate(
            "ec2", "describe_security_groups", "SecurityGroups", GroupIds=others
        ):
            known[str(group["GroupId"])] = group
    rule = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": source}]}]
    for group_id, group in sorted(known.items()):
        has = _admits(group, source)
        if group_id in wanted and not has:
            _log.info("Adding security group ingress from %s to %s", source, group_id)
            await api.call(
                "ec2", "authorize_security_group_ingress", GroupId=group_id, IpPermissions=rule
            )
        elif group_id not in wanted and has and not keep_others:
            _log.info("Removing security group ingress from %s to %s", source, group_id)
            await api.call(
                "ec2", "revoke_security_group_ingress", GroupId=group_id, IpPermissions=rule
            )
