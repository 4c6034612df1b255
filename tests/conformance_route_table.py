"""A conformance driver of the fake cloud declaring its routes scoped by the route table
(``route_scope = "route-table"``), as the AWS and Azure drivers do: the suite reports
``cluster-name-scoping`` not applicable for it and checks every other route scenario in full.

``--driver tests.conformance_route_table:driver_factory`` (from the repository's root)."""

from __future__ import annotations

from ccm.cloudprovider import CloudProvider
from ccm.testing.conformance.fake_driver import FakeCloudDriver, fake_driver_factory


class RouteTableScopedDriver(FakeCloudDriver):
    route_scope = "route-table"


def driver_factory(provider: CloudProvider) -> RouteTableScopedDriver:
    return RouteTableScopedDriver(fake_driver_factory(provider).cloud)
