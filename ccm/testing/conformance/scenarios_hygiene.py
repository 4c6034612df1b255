"""Contract hygiene: no mutation of inputs, ``ccm.errors`` types only, cancellation and timeouts,
no blocking of the event loop.

These run last (registered last): the error-type and the event-loop checks also cover every call
the controllers and the scenarios made during the earlier scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ccm import errors
from ccm.cloudprovider import Route
from ccm.testing.conformance.context import Context, node_view, service_view
from ccm.testing.conformance.registry import scenario
from ccm.testing.conformance.results import BLOCKING_RULE, RuleViolation, describe_holds

CAP = "hygiene"


Probe = tuple[str, Callable[[], Awaitable[Any]]]


async def _probes(ctx: Context) -> tuple[list[Probe], Callable[[], Awaitable[None]]]:
    """(label, call factory) for one call of each offered capability, on fresh inputs, and a
    cleanup that removes whatever the probes may have left in the cloud."""
    probes: list[Probe] = []
    cleanups: list[Callable[[], Awaitable[Any]]] = []
    cluster = ctx.config.cluster_name
    machine = await ctx.driver.create_machine(ctx.name("hy")) if ctx.driver is not None else None
    name = machine.name if machine else ctx.name("hy")
    inst = ctx.provider.instances_v2()
    if inst is not None:
        node = node_view(
            name, machine.provider_id if machine else "", machine.addresses if machine else ()
        )
        probes.append(("instance_metadata", lambda: inst.instance_metadata(node)))
        probes.append(("instance_exists", lambda: inst.instance_exists(node)))
        probes.append(("instance_shutdown", lambda: inst.instance_shutdown(node)))
    lb = ctx.provider.load_balancer()
    if lb is not None:
        svc = service_view(ctx.config.namespace, ctx.name("hy-lb"))
        backends = [node_view(name)]
        probes.append(
            ("ensure_load_balancer", lambda: lb.ensure_load_balancer(cluster, svc, backends))
        )
        probes.append(
            ("ensure_load_balancer_deleted", lambda: lb.ensure_load_balancer_deleted(cluster, svc))
        )
        cleanups.append(lambda: lb.ensure_load_balancer_deleted(cluster, svc))
    routes = ctx.provider.routes()
    if routes is not None:
        route = Route(target_node=name, destination_cidr="10.250.9.0/24")
        probes.append(("list_routes", lambda: routes.list_routes(cluster)))
        probes.append(("create_route", lambda: routes.create_route(cluster, "hygiene", route)))
        probes.append(("delete_route", lambda: routes.delete_route(cluster, route)))

        async def drop_routes() -> None:
            for listed in await routes.list_routes(cluster):
                if listed.target_node == name:
                    await routes.delete_route(cluster, listed)

        cleanups.append(drop_routes)

    async def cleanup() -> None:
        for step in cleanups:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step(), ctx.config.call_timeout)

    return probes, cleanup


@scenario(CAP, "no-mutation-of-inputs")
async def no_mutation(ctx: Context) -> None:
    """The provider leaves the Nodes, Services, node lists and Routes it is handed unchanged."""
    cluster = ctx.config.cluster_name
    lb = ctx.provider.load_balancer()
    if lb is not None:
        svc = service_view(ctx.config.namespace, ctx.name("hy-mut"))
        nodes = [node_view(ctx.name("hy-a")), node_view(ctx.name("hy-b"))]
        before = (svc.to_dict(), [n.to_dict() for n in nodes], list(nodes))
        try:
            await ctx.call("ensure_load_balancer", lb.ensure_load_balancer(cluster, svc, nodes))
            await ctx.call("update_load_balancer", lb.update_load_balancer(cluster, svc, nodes))
        except errors.CCMError:
            pass
        except TypeError as exc:
            raise RuleViolation(
                "no-mutation", f"the load balancer tried to mutate its input: {exc}"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await lb.ensure_load_balancer_deleted(cluster, svc)
        if (svc.to_dict(), [n.to_dict() for n in nodes], list(nodes)) != before:
            raise RuleViolation(
                "no-mutation",
                "the load balancer changed the Service or the node list it was handed",
            )
    inst = ctx.provider.instances_v2()
    if inst is not None:
        node = node_view(ctx.name("hy-n"))
        before_node = node.to_dict()
        with contextlib.suppress(errors.CCMError):
            await ctx.call("instance_metadata", inst.instance_metadata(node))
        if node.to_dict() != before_node:
            raise RuleViolation("no-mutation", "instance_metadata changed the Node it was handed")


@scenario(CAP, "cancellation-and-timeouts")
async def cancellation(ctx: Context) -> None:
    """A cancelled call ends promptly with CancelledError (never swallowed); a call under a short
    timeout ends promptly too."""
    probes, cleanup = await _probes(ctx)
    try:
        await _cancel_each(probes)
    finally:
        await cleanup()


async def _cancel_each(probes: list[Probe]) -> None:
    for label, factory in probes:
        task = asyncio.ensure_future(factory())
        await asyncio.sleep(0)
        delivered = task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            raise RuleViolation(
                "honours-cancellation", f"{label} kept running 5s after being cancelled"
            )
        if delivered and not task.cancelled():
            exc = task.exception()
            if exc is None:
                raise RuleViolation(
                    "honours-cancellation", f"{label} swallowed the cancellation and returned"
                )
        elif not task.cancelled():
            task.exception()
        try:
            async with asyncio.timeout(5):
                async with asyncio.timeout(0.001):
                    await factory()
        except TimeoutError:
            pass
        except errors.CCMError:
            pass


@scenario(CAP, "errors-are-ccm-errors")
async def error_types(ctx: Context) -> None:
    """Every exception the provider raised during the run (to the controllers and to the
    scenarios) is a ``ccm.errors`` type."""
    probes, cleanup = await _probes(ctx)
    try:
        for label, factory in probes:
            try:
                await ctx.call(label, factory())
            except errors.CCMError:
                pass
            except RuleViolation:
                raise
            except Exception as exc:
                raise RuleViolation(
                    "errors-are-ccm-errors",
                    f"{label} raised {type(exc).__name__}: {exc} (not a ccm.errors type)",
                ) from None
    finally:
        await cleanup()
    if ctx.observer.foreign_errors:
        raise RuleViolation(
            "errors-are-ccm-errors",
            f"the controllers got non-ccm.errors exceptions: {ctx.observer.foreign_errors[:3]}",
        )


@scenario(CAP, "does-not-block-the-event-loop")
async def does_not_block(ctx: Context) -> None:
    """No provider call holds the event loop (the one the controllers share) for longer than
    ``loop_hold_threshold`` (0.1s) in one step: neither the calls the controllers made during the
    run nor the scenarios' own, nor one call of each offered method made here. A synchronous
    ``time.sleep``, SDK call or long computation inside an ``async def`` fails it; the wait for a
    CPU on a loaded machine is not counted (see :mod:`ccm.testing.conformance.observe`)."""
    probes, cleanup = await _probes(ctx)
    try:
        for label, factory in probes:
            with contextlib.suppress(errors.CCMError):
                await ctx.call(label, factory())
        lb = ctx.provider.load_balancer()
        if lb is not None:
            lb.get_load_balancer_name(ctx.config.cluster_name, service_view("default", "hy"))
    finally:
        await cleanup()
    holds = sorted(ctx.observer.holds, key=lambda h: -h.held)
    if holds:
        raise RuleViolation(BLOCKING_RULE, describe_holds(holds, ctx.observer.loop_hold_threshold))
