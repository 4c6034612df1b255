"""Where a load balancer lives, shared by classic ELBs and NLBs: the backends' instance IDs, the
VPC and the subnets (upstream ``findELBSubnets``, ``getLoadBalancerSubnets``,
``resolveSubnetNameOrIDs``).

- The VPC is ``[Global] VPC``, else the VPC of the Nodes' instances, else the one VPC whose
  subnets carry the cluster tag (a Service may come before any Node).
- Subnets: the annotation ``service.beta.kubernetes.io/aws-load-balancer-subnets`` (IDs, or
  ``Name`` tags within the VPC; every item must resolve), else the VPC's subnets tagged for the
  cluster or for no cluster; for an internet-facing load balancer only public ones (their route
  table routes to an internet gateway); one per zone, preferring the role tag
  (``kubernetes.io/role/elb``, or ``kubernetes.io/role/internal-elb``), then the cluster tag,
  then the lowest ID.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ccm.cloudprovider import Node, Service
from ccm.errors import CloudProviderError
from ccm_aws import addresses, elbrules
from ccm_aws import annotations as ann
from ccm_aws.api import AWSApi
from ccm_aws.instances import AWSInstances
from ccm_aws.tags import TAG_CLUSTER_PREFIX, ClusterTagging

__all__ = ["LBNetwork", "instance_ids"]

_log = logging.getLogger("ccm_aws")


def instance_ids(nodes: Sequence[Node]) -> list[str]:
    """The instance IDs of the Nodes' providerIDs (Nodes without a usable one are logged and
    left out, as upstream's ``mapToAWSInstanceIDsTolerant``)."""
    ids: set[str] = set()
    for node in nodes:
        if not node.provider_id:
            _log.warning("node %s did not have ProviderID set", node.name)
            continue
        try:
            ids.add(addresses.instance_id_from_provider_id(node.provider_id))
        except ValueError:
            _log.warning("unable to parse ProviderID %s for node %s", node.provider_id, node.name)
    return sorted(ids)


class LBNetwork:
    """The VPC and subnets of the cluster's load balancers."""

    def __init__(
        self, api: AWSApi, tagging: ClusterTagging, instances: AWSInstances, *, vpc: str = ""
    ) -> None:
        self.api = api
        self.tagging = tagging
        self.instances = instances
        self.configured_vpc = vpc

    async def vpc(self, ids: Sequence[str]) -> str:
        if self.configured_vpc:
            return self.configured_vpc
        found = await self.instances.by_ids(ids) if ids else {}
        vpcs = sorted({str(i.get("VpcId")) for i in found.values() if i.get("VpcId")})
        if not vpcs and self.tagging.cluster_id:
            subnets = await self.api.paginate(
                "ec2",
                "describe_subnets",
                "Subnets",
                Filters=[{"Name": "tag-key", "Values": [self.tagging.cluster_tag_key]}],
            )
            vpcs = sorted({str(s["VpcId"]) for s in subnets})
            if len(vpcs) > 1:
                raise CloudProviderError(
                    f"subnets of several VPCs are tagged for the cluster ({', '.join(vpcs)}): "
                    "set [Global] VPC"
                )
        if not vpcs:
            raise CloudProviderError(
                "could not find the VPC of the load balancer: set [Global] VPC"
            )
        return vpcs[0]

    async def subnets(self, vpc: str, service: Service, internal: bool) -> list[str]:
        if ann.SUBNETS in service.annotations:
            return await self._named_subnets(vpc, service.annotations[ann.SUBNETS])
        return await self._discovered_subnets(vpc, internal)

    async def _named_subnets(self, vpc: str, raw: str) -> list[str]:
        items = [p.strip() for p in raw.split(",") if p.strip()]
        if not items:
            raise ann.AnnotationError(ann.SUBNETS, raw, "unable to resolve empty subnet slice")
        ids = [i for i in items if i.startswith("subnet-")]
        names = [i for i in items if not i.startswith("subnet-")]
        found: list[dict[str, object]] = []
        if ids:
            found += await self.api.paginate(
                "ec2",
                "describe_subnets",
                "Subnets",
                Filters=[{"Name": "subnet-id", "Values": ids}],
            )
        if names:
            found += await self.api.paginate(
                "ec2",
                "describe_subnets",
                "Subnets",
                Filters=[
                    {"Name": "tag:Name", "Values": names},
                    {"Name": "vpc-id", "Values": [vpc]},
                ],
            )
        if len(found) != len(items):
            raise ann.AnnotationError(
                ann.SUBNETS,
                raw,
                f"expected to find {len(items)}, but found {len(found)} subnets",
            )
        return [str(s["SubnetId"]) for s in found]

    async def _discovered_subnets(self, vpc: str, internal: bool) -> list[str]:
        subnets = await self.api.paginate(
            "ec2", "describe_subnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc]}]
        )
        tables = await self.api.paginate(
            "ec2",
            "describe_route_tables",
            "RouteTables",
            Filters=[{"Name": "vpc-id", "Values": [vpc]}],
        )
        role = elbrules.TAG_ROLE_INTERNAL_ELB if internal else elbrules.TAG_ROLE_ELB
        best: dict[str, tuple[tuple[int, int, str], str]] = {}
        for subnet in subnets:
            tags = subnet.get("Tags") or ()
            ours = self.tagging.has_cluster_tag(tags)
            if not ours and any(k.startswith(TAG_CLUSTER_PREFIX) for k in elbrules.tag_map(tags)):
                continue  # another cluster's
            subnet_id, zone = str(subnet["SubnetId"]), str(subnet["AvailabilityZone"])
            if not internal and not elbrules.is_public(tables, subnet_id):
                continue
            rank = (0 if role in elbrules.tag_map(tags) else 1, 0 if ours else 1, subnet_id)
            if zone not in best or rank < best[zone][0]:
                best[zone] = (rank, subnet_id)
        if not best:
            raise CloudProviderError("could not find any suitable subnets for creating the ELB")
        return [best[zone][1] for zone in sorted(best)]
