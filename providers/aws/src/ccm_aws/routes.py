"""Routes: one VPC route per pod CIDR, to the instance of the Node (ports ``aws_routes.go``).

- The route table is ``[Global] RouteTableID``, else the one route table tagged for the cluster
  (none or several is an error, as upstream). EC2 routes carry no tags, so the table is the
  cluster's scope: the ``cluster_name`` argument only names the routes
  (``<cluster>-<destination>``), as upstream.
- ``create_route`` turns the instance's source/destination check off (the instance then forwards
  pod traffic), replaces a blackholed route to the same destination, and is idempotent: a route
  to the same instance already there is left alone.
- ``list_routes`` reports every route of the table to an instance of this account, and blackholed
  routes (target gone) with ``blackhole=True`` so the route controller deletes them.
  IPv4 (``DestinationCidrBlock``) and IPv6 (``DestinationIpv6CidrBlock``) routes both count.
- ``delete_route`` of a route already gone succeeds.

Node names of routed instances: upstream reads them from a Node informer's instance-ID index. The
provider has no informer; it remembers the Node name of every instance it answered about (the
node controller asks for every Node at start and on each address refresh), and falls back to the
instance's private DNS name (the name a kubelet on EC2 gives itself).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ccm.cloudprovider import Route
from ccm.errors import CloudProviderError
from ccm_aws.api import AWSApi, aws_code
from ccm_aws.instances import AWSInstances
from ccm_aws.tags import ClusterTagging

__all__ = ["AWSRoutes", "routes_from_table"]

_log = logging.getLogger("ccm_aws")


def _destination(route: Mapping[str, Any]) -> str:
    return str(route.get("DestinationCidrBlock") or route.get("DestinationIpv6CidrBlock") or "")


def _destination_args(cidr: str) -> dict[str, str]:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise CloudProviderError(f"invalid route destination {cidr!r}") from None
    key = "DestinationIpv6CidrBlock" if network.version == 6 else "DestinationCidrBlock"
    return {key: cidr}


def routes_from_table(
    cluster_name: str,
    table: Mapping[str, Any],
    instances: Mapping[str, Mapping[str, Any]],
    node_names: Mapping[str, str],
) -> list[Route]:
    """Upstream ``ListRoutes`` over one DescribeRouteTables entry: blackholed routes, and routes
    to instances EC2 still lists (``instances`` by ID), named by ``node_names`` (instance ID →
    Node name) or else the instance's private DNS name."""
    out: list[Route] = []
    for entry in table.get("Routes") or ():
        cidr = _destination(entry)
        if not cidr:
            continue
        name = f"{cluster_name}-{cidr}"
        if entry.get("State") == "blackhole":
            out.append(Route(name=name, destination_cidr=cidr, blackhole=True))
            continue
        instance_id = str(entry.get("InstanceId") or "")
        if not instance_id:
            continue  # the gateway, local and peering routes are not the cluster's
        instance = instances.get(instance_id)
        if instance is None:
            _log.warning(
                "unable to find instance ID %s in the list of instances being routed to",
                instance_id,
            )
            continue
        target = node_names.get(instance_id) or str(instance.get("PrivateDnsName") or "")
        out.append(Route(name=name, target_node=target, destination_cidr=cidr))
    return out


class AWSRoutes:
    """The Routes capability of the AWS provider."""

    def __init__(
        self,
        api: AWSApi,
        tagging: ClusterTagging,
        instances: AWSInstances,
        *,
        route_table_id: str = "",
    ) -> None:
        self.api = api
        self.tagging = tagging
        self.instances = instances
        self.route_table_id = route_table_id

    async def _table(self, cluster_name: str) -> dict[str, Any]:
        if self.route_table_id:
            tables = await self.api.paginate(
                "ec2",
                "describe_route_tables",
                "RouteTables",
                Filters=[{"Name": "route-table-id", "Values": [self.route_table_id]}],
            )
        else:
            tables = [
                t
                for t in await self.api.paginate("ec2", "describe_route_tables", "RouteTables")
                if self.tagging.has_cluster_tag(t.get("Tags") or ())
            ]
        if not tables:
            raise CloudProviderError(f"unable to find route table for AWS cluster: {cluster_name}")
        if len(tables) != 1:
            raise CloudProviderError(
                f"found multiple matching AWS route tables for AWS cluster: {cluster_name}"
            )
        return tables[0]

    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        table = await self._table(cluster_name)
        ids = sorted(
            {str(r["InstanceId"]) for r in table.get("Routes") or () if r.get("InstanceId")}
        )
        instances = await self.instances.by_ids(ids) if ids else {}
        return routes_from_table(cluster_name, table, instances, self.instances.node_names)

    async def create_route(self, cluster_name: str, name_hint: str, route: Route) -> None:
        instance_id = await self.instances.instance_id_for_node_name(route.target_node)
        await self.api.call(
            "ec2",
            "modify_instance_attribute",
            InstanceId=instance_id,
            SourceDestCheck={"Value": False},
        )
        table = await self._table(cluster_name)
        destination = _destination_args(route.destination_cidr)
        for entry in table.get("Routes") or ():
            if _destination(entry) != route.destination_cidr:
                continue
            if entry.get("State") == "blackhole":
                _log.info("deleting blackholed route: %s", route.destination_cidr)
                await self.api.call(
                    "ec2", "delete_route", RouteTableId=table["RouteTableId"], **destination
                )
            elif entry.get("InstanceId") == instance_id:
                return  # already there
        await self.api.call(
            "ec2",
            "create_route",
            RouteTableId=table["RouteTableId"],
            InstanceId=instance_id,
            **destination,
        )

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        table = await self._table(cluster_name)
        try:
            await self.api.call(
                "ec2",
                "delete_route",
                RouteTableId=table["RouteTableId"],
                **_destination_args(route.destination_cidr),
            )
        except CloudProviderError as exc:
            if aws_code(exc) != "InvalidRoute.NotFound":
                raise
