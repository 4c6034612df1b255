"""delete_route removes matching routes of every cluster, not only of ``cluster_name``."""

from __future__ import annotations

from ccm.cloudprovider import Route
from ccm.testing.fake_cloud import FakeCloud


class RouteDeleteIgnoresCluster(FakeCloud):
    async def delete_route(self, cluster_name: str, route: Route) -> None:
        for cluster in list(self.route_table):
            await super().delete_route(cluster, route)
