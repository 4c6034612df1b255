"""Routes: one route per Node and pod CIDR in the route table ``routeTableName`` (in
``routeTableResourceGroup``, else ``resourceGroup``), next hop ``VirtualAppliance`` at the Node's
internal IP of the CIDR's family.

Names are upstream's with dual-stack on (its default since the IPv6DualStack feature went GA):
``<nodeName>____<cidr without ".", ":" and "/">``; a listed route's Node is the part of its name
before ``____``, so routes named ``<nodeName>`` by older releases are read too. As upstream, the
route table belongs to the cluster: every route in it is listed (``cluster_name`` does not scope
them; the route controller only touches routes inside ``--cluster-cidr``), and the table is
created in ``location`` when it does not exist. Each route is written and deleted on its own
(ARM's ``routeTables/<table>/routes/<name>``), so concurrent creates never overwrite one another.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Any

from azure.mgmt.network import models as network

from ccm import errors, wellknown
from ccm.cloudprovider import InstancesV2, Node, Route, Routes
from ccm_azure.api import AzureApi, is_not_found

__all__ = ["SEPARATOR", "AzureRoutes", "node_of_route", "route_name"]

SEPARATOR = "____"


def route_name(node_name: str, cidr: str) -> str:
    """Upstream's route name for a Node's pod CIDR."""
    return f"{node_name}{SEPARATOR}{cidr.replace(':', '').replace('.', '').replace('/', '')}"


def node_of_route(name: str) -> str:
    return name.split(SEPARATOR, 1)[0]


class AzureRoutes(Routes):
    """The routes of the cluster's route table."""

    def __init__(
        self, api: AzureApi, instances: InstancesV2, *, table: str, group: str, location: str
    ) -> None:
        self.api = api
        self.instances = instances
        self.table = table
        self.group = group
        self.location = location
        self._table_lock = asyncio.Lock()

    def _check(self) -> None:
        if not self.table:
            raise errors.CloudProviderError("routes need routeTableName in azure.json")

    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        self._check()
        try:
            found = await self.api.collect(
                "Routes.List", lambda: self.api.network.routes.list(self.group, self.table)
            )
        except Exception as exc:
            if is_not_found(exc):
                return []
            raise
        return [
            Route(
                name=str(r.name),
                target_node=node_of_route(str(r.name)),
                destination_cidr=str(r.address_prefix),
            )
            for r in found
            if r.address_prefix
        ]

    async def _ensure_table(self) -> None:
        async with self._table_lock:
            try:
                await self.api.call(
                    "RouteTables.Get",
                    lambda: self.api.network.route_tables.get(self.group, self.table),
                )
                return
            except Exception as exc:
                if not is_not_found(exc):
                    raise
            table = network.RouteTable(location=self.location)
            await self.api.wait(
                "RouteTables.CreateOrUpdate",
                lambda: self.api.network.route_tables.begin_create_or_update(
                    self.group, self.table, table
                ),
            )

    async def _next_hop(self, route: Route) -> str:
        family = ipaddress.ip_network(route.destination_cidr, strict=False).version
        node = Node({"metadata": {"name": route.target_node}, "spec": {}})
        meta = await self.instances.instance_metadata(node)
        for address in meta.node_addresses if meta is not None else ():
            internal = address.type == wellknown.ADDRESS_INTERNAL_IP
            if internal and ipaddress.ip_address(address.address).version == family:
                return address.address
        raise errors.CloudProviderError(
            f"node {route.target_node} has no internal IPv{family} address for route "
            f"{route.destination_cidr}"
        )

    async def create_route(self, cluster_name: str, name_hint: str, route: Route) -> None:
        self._check()
        hop = await self._next_hop(route)
        name = route_name(route.target_node, route.destination_cidr)
        body = network.Route(
            address_prefix=route.destination_cidr,
            next_hop_type="VirtualAppliance",
            next_hop_ip_address=hop,
        )

        async def put() -> Any:
            return await self.api.wait(
                "Routes.CreateOrUpdate",
                lambda: self.api.network.routes.begin_create_or_update(
                    self.group, self.table, name, body
                ),
            )

        try:
            await put()
        except Exception as exc:
            if not is_not_found(exc):
                raise
            await self._ensure_table()
            await put()

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        self._check()
        name = route.name or route_name(route.target_node, route.destination_cidr)
        try:
            await self.api.wait(
                "Routes.Delete",
                lambda: self.api.network.routes.begin_delete(self.group, self.table, name),
            )
        except Exception as exc:
            if not is_not_found(exc):
                raise
