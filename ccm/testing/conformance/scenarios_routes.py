"""Routes scenarios: create/list/delete round-trip, idempotence, cluster scoping, dual-stack.

Cluster scoping applies only to a cloud whose routes carry their cluster: a driver declaring
``route_scope = "route-table"`` gets it reported not applicable, with :data:`ROUTE_TABLE_SCOPE`
as the reason; the other scenarios are played in full whatever the driver declares."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from ccm import errors
from ccm.cloudprovider import Route
from ccm.testing.conformance.context import Context
from ccm.testing.conformance.driver import declared_route_scope
from ccm.testing.conformance.registry import _offered, scenario
from ccm.testing.conformance.results import NotApplicable, RuleViolation

CAP = "routes"

#: Why ``cluster-name-scoping`` is not applicable to a driver declaring ``"route-table"``.
ROUTE_TABLE_SCOPE = (
    "routes are scoped by the route table the provider is configured with; "
    "cluster_name only names them, as upstream"
)


async def _listed(ctx: Context, routes: Any, cluster: str, target: str, cidr: str) -> list[Route]:
    listed = await ctx.call("list_routes", routes.list_routes(cluster))
    return [r for r in listed if r.target_node == target and r.destination_cidr == cidr]


async def _target(ctx: Context) -> str:
    return (await ctx.need_driver().create_machine(ctx.name("rt"))).name


_NO_ROUTE_VIEW = "the driver cannot list the cloud's routes; the provider's list_routes was taken"


async def _in_cloud(ctx: Context, cluster: str, target: str, cidr: str, check: str) -> bool | None:
    """Whether the cloud (read by the driver) holds the route, or None, recording ``check`` as
    unverified, when the driver cannot list routes."""
    held = await ctx.need_driver().routes(cluster)
    if held is None:
        ctx.unverified(check, _NO_ROUTE_VIEW)
        return None
    return any(r.target_node == target and r.destination_cidr == cidr for r in held)


async def _cleanup(ctx: Context, routes: Any, cluster: str, target: str) -> None:
    with contextlib.suppress(Exception):
        for r in await routes.list_routes(cluster):
            if r.target_node == target:
                await routes.delete_route(cluster, r)


@scenario(CAP, "round-trip")
async def round_trip(ctx: Context) -> None:
    """A created route is listed (target and CIDR); deleting the listed route removes it."""
    routes = _offered(ctx, CAP)
    cluster = ctx.config.cluster_name
    target = await _target(ctx)
    cidr = "10.250.1.0/24"
    try:
        await ctx.call(
            "create_route",
            routes.create_route(
                cluster, str(uuid.uuid4()), Route(target_node=target, destination_cidr=cidr)
            ),
        )
        found = await _listed(ctx, routes, cluster, target, cidr)
        if len(found) != 1:
            raise RuleViolation(
                "route-round-trip",
                f"list_routes shows {len(found)} routes for {target} {cidr} after create",
            )
        if (
            await _in_cloud(ctx, cluster, target, cidr, "the cloud holds the created route")
            is False
        ):
            raise RuleViolation(
                "route-round-trip", f"list_routes shows {target} {cidr} but the cloud does not"
            )
        await ctx.call("delete_route", routes.delete_route(cluster, found[0]))
        if await _listed(ctx, routes, cluster, target, cidr):
            raise RuleViolation("route-round-trip", "the route is still listed after delete_route")
        if await _in_cloud(ctx, cluster, target, cidr, "no route left after delete"):
            raise RuleViolation(
                "route-round-trip",
                f"leaked route: the cloud still holds {target} {cidr} after delete_route",
            )
    finally:
        await _cleanup(ctx, routes, cluster, target)


@scenario(CAP, "idempotent-create-delete")
async def idempotent(ctx: Context) -> None:
    """Creating the same route twice leaves one route; deleting it twice succeeds."""
    routes = _offered(ctx, CAP)
    cluster = ctx.config.cluster_name
    target = await _target(ctx)
    cidr = "10.250.2.0/24"
    hint = str(uuid.uuid4())
    try:
        for _ in range(2):
            try:
                await ctx.call(
                    "create_route",
                    routes.create_route(
                        cluster, hint, Route(target_node=target, destination_cidr=cidr)
                    ),
                )
            except errors.CCMError as exc:
                raise RuleViolation(
                    "route-create-idempotent", f"creating the same route again raised {exc!r}"
                ) from None
        found = await _listed(ctx, routes, cluster, target, cidr)
        if len(found) != 1:
            raise RuleViolation(
                "route-create-idempotent",
                f"{len(found)} routes listed after creating the same route twice",
            )
        for attempt in (1, 2):
            try:
                await ctx.call("delete_route", routes.delete_route(cluster, found[0]))
            except errors.CCMError as exc:
                raise RuleViolation(
                    "route-delete-idempotent", f"delete #{attempt} raised {exc!r}"
                ) from None
    finally:
        await _cleanup(ctx, routes, cluster, target)


@scenario(CAP, "cluster-name-scoping")
async def scoping(ctx: Context) -> None:
    """Routes of cluster A are neither listed nor deleted through cluster B (not applicable when
    the driver declares its routes scoped by the route table)."""
    routes = _offered(ctx, CAP)
    if declared_route_scope(ctx.driver) == "route-table":
        raise NotApplicable(ROUTE_TABLE_SCOPE)
    a = f"{ctx.config.cluster_name}-a"
    b = f"{ctx.config.cluster_name}-b"
    target = await _target(ctx)
    cidr = "10.250.3.0/24"
    try:
        await ctx.call(
            "create_route",
            routes.create_route(
                a, str(uuid.uuid4()), Route(target_node=target, destination_cidr=cidr)
            ),
        )
        if await _listed(ctx, routes, b, target, cidr):
            raise RuleViolation(
                "route-cluster-scoping", f"list_routes({b!r}) shows a route of cluster {a!r}"
            )
        await ctx.call(
            "create_route",
            routes.create_route(
                b, str(uuid.uuid4()), Route(target_node=target, destination_cidr=cidr)
            ),
        )
        in_b = await _listed(ctx, routes, b, target, cidr)
        if len(in_b) != 1:
            raise RuleViolation(
                "route-cluster-scoping", f"list_routes({b!r}) shows {len(in_b)} routes, expected 1"
            )
        await ctx.call("delete_route", routes.delete_route(b, in_b[0]))
        if not await _listed(ctx, routes, a, target, cidr):
            raise RuleViolation(
                "route-cluster-scoping",
                f"delete_route({b!r}, ...) deleted the route of cluster {a!r}: "
                "delete must honour the cluster name",
            )
        kept = await _in_cloud(ctx, a, target, cidr, "the other cluster's route kept in the cloud")
        if kept is False:
            raise RuleViolation(
                "route-cluster-scoping", f"the cloud no longer holds the route of cluster {a!r}"
            )
    finally:
        await _cleanup(ctx, routes, a, target)
        await _cleanup(ctx, routes, b, target)


@scenario(CAP, "dual-stack")
async def dual_stack(ctx: Context) -> None:
    """An IPv4 and an IPv6 route to the same Node are both created, listed and deleted."""
    routes = _offered(ctx, CAP)
    cluster = ctx.config.cluster_name
    target = await _target(ctx)
    cidrs = ("10.250.4.0/24", "fd00:10:250:4::/64")
    try:
        for cidr in cidrs:
            await ctx.call(
                "create_route",
                routes.create_route(
                    cluster, str(uuid.uuid4()), Route(target_node=target, destination_cidr=cidr)
                ),
            )
        for cidr in cidrs:
            found = await _listed(ctx, routes, cluster, target, cidr)
            if len(found) != 1:
                raise RuleViolation(
                    "route-dual-stack", f"the {cidr} route to {target} is not listed exactly once"
                )
            await ctx.call("delete_route", routes.delete_route(cluster, found[0]))
        for cidr in cidrs:
            if await _listed(ctx, routes, cluster, target, cidr):
                raise RuleViolation(
                    "route-dual-stack", f"the {cidr} route is still listed after delete"
                )
    finally:
        await _cleanup(ctx, routes, cluster, target)
