"""LoadBalancer scenarios: idempotent ensure, update, get, delete, names, status round-trip."""

from __future__ import annotations

import contextlib
from typing import Any

from ccm import errors
from ccm.kube import client as kclient
from ccm.testing.conformance.context import Context, node_view, service_view
from ccm.testing.conformance.registry import _offered, scenario
from ccm.testing.conformance.results import NotOffered, RuleViolation

CAP = "load-balancer"


async def _backends(ctx: Context, count: int) -> list[Any]:
    driver = ctx.need_driver()
    views = []
    for _ in range(count):
        m = await driver.create_machine(ctx.name("lb-node"))
        views.append(node_view(m.name, m.provider_id, m.addresses))
    return views


_NO_LB_VIEW = "the driver cannot list the cloud's load balancers; the provider's word was taken"


async def _cloud_lbs(ctx: Context, name: str, service_key: str, check: str) -> list[Any] | None:
    """The cloud's load balancers of the Service (read by the driver), or None, recording ``check``
    as unverified, when the driver cannot list them."""
    lbs = await ctx.need_driver().load_balancers()
    if lbs is None:
        ctx.unverified(check, _NO_LB_VIEW)
        return None
    return [lb for lb in lbs if lb.name == name or (lb.service and lb.service == service_key)]


@scenario(CAP, "ensure-is-idempotent")
async def ensure_idempotent(ctx: Context) -> None:
    """Ensuring the same Service twice returns the same status and leaves ONE load balancer."""
    lb = _offered(ctx, CAP)
    nodes = await _backends(ctx, 2)
    svc = service_view(ctx.config.namespace, ctx.name("lb-idem"))
    name = lb.get_load_balancer_name(ctx.config.cluster_name, svc)
    try:
        first = await ctx.call(
            "ensure_load_balancer", lb.ensure_load_balancer(ctx.config.cluster_name, svc, nodes)
        )
        second = await ctx.call(
            "ensure_load_balancer", lb.ensure_load_balancer(ctx.config.cluster_name, svc, nodes)
        )
        if first != second:
            raise RuleViolation(
                "ensure-idempotent", f"a second ensure changed the status: {first} then {second}"
            )
        if not first.ingress:
            raise RuleViolation(
                "ensure-reports-ingress", "ensure_load_balancer returned no ingress"
            )
        held = await _cloud_lbs(ctx, name, svc.key, "one load balancer after two ensures")
        if held is not None and len(held) != 1:
            raise RuleViolation(
                "ensure-idempotent",
                f"ensure_load_balancer is not idempotent: the cloud holds {len(held)} "
                f"load balancers "
                f"for {svc.key} after two ensures ({[h.name for h in held]})",
            )
        status = await ctx.call(
            "get_load_balancer", lb.get_load_balancer(ctx.config.cluster_name, svc)
        )
        if status is None:
            raise RuleViolation(
                "get-reports-ensure", "get_load_balancer says it does not exist right after ensure"
            )
        if status != first:
            raise RuleViolation(
                "get-reports-ensure", f"get_load_balancer returned {status}, ensure made {first}"
            )
    finally:
        with contextlib.suppress(Exception):
            await lb.ensure_load_balancer_deleted(ctx.config.cluster_name, svc)


@scenario(CAP, "update-follows-backends")
async def update_follows(ctx: Context) -> None:
    """update_load_balancer replaces the backends (checked through the driver when it can tell)."""
    lb = _offered(ctx, CAP)
    nodes = await _backends(ctx, 3)
    svc = service_view(ctx.config.namespace, ctx.name("lb-upd"))
    name = lb.get_load_balancer_name(ctx.config.cluster_name, svc)
    try:
        await ctx.call(
            "ensure_load_balancer", lb.ensure_load_balancer(ctx.config.cluster_name, svc, nodes[:2])
        )
        await ctx.call(
            "update_load_balancer", lb.update_load_balancer(ctx.config.cluster_name, svc, nodes[1:])
        )
        held = await _cloud_lbs(ctx, name, svc.key, "backends after update")
        if held is not None and not held:
            raise RuleViolation(
                "update-follows-backends",
                f"the cloud holds no load balancer for {svc.key} after ensure and update",
            )
        if held and held[0].nodes is None:
            ctx.unverified(
                "backends after update", "the driver cannot tell a load balancer's nodes"
            )
        if held and held[0].nodes is not None:
            want = {n.name for n in nodes[1:]}
            if set(held[0].nodes) != want:
                raise RuleViolation(
                    "update-follows-backends",
                    f"after update the cloud's backends are {sorted(held[0].nodes)}, "
                    f"expected {sorted(want)}",
                )
    finally:
        with contextlib.suppress(Exception):
            await lb.ensure_load_balancer_deleted(ctx.config.cluster_name, svc)


@scenario(CAP, "delete-is-idempotent")
async def delete_idempotent(ctx: Context) -> None:
    """ensure_load_balancer_deleted twice succeeds, get answers None, nothing is left."""
    lb = _offered(ctx, CAP)
    nodes = await _backends(ctx, 1)
    svc = service_view(ctx.config.namespace, ctx.name("lb-del"))
    name = lb.get_load_balancer_name(ctx.config.cluster_name, svc)
    await ctx.call(
        "ensure_load_balancer", lb.ensure_load_balancer(ctx.config.cluster_name, svc, nodes)
    )
    for attempt in (1, 2):
        try:
            await ctx.call(
                "ensure_load_balancer_deleted",
                lb.ensure_load_balancer_deleted(ctx.config.cluster_name, svc),
            )
        except errors.CCMError as exc:
            raise RuleViolation("delete-idempotent", f"delete #{attempt} raised {exc!r}") from None
    status = await ctx.call("get_load_balancer", lb.get_load_balancer(ctx.config.cluster_name, svc))
    if status is not None:
        raise RuleViolation(
            "delete-leaves-nothing", "get_load_balancer still answers a status after delete"
        )
    held = await _cloud_lbs(ctx, name, svc.key, "no load balancer left after delete")
    if held:
        raise RuleViolation(
            "delete-leaves-nothing",
            f"leaked load balancer: the cloud still holds {[h.name for h in held]} "
            f"for {svc.key} after delete",
        )


@scenario(CAP, "names-within-limits")
async def names_within_limits(ctx: Context) -> None:
    """get_load_balancer_name is stable, distinct per Service, and within the cloud's length."""
    lb = _offered(ctx, CAP)
    limit = ctx.driver.max_load_balancer_name_length if ctx.driver is not None else 32
    long_ns = "n" * 63
    a = service_view(long_ns, "s" * 63)
    b = service_view(long_ns, "s" * 62 + "t")
    for svc in (a, b):
        name = lb.get_load_balancer_name(ctx.config.cluster_name, svc)
        if not name or len(name) > limit:
            raise RuleViolation(
                "lb-name-length",
                f"get_load_balancer_name returned {name!r} ({len(name)} > {limit} characters)",
            )
        if lb.get_load_balancer_name(ctx.config.cluster_name, svc) != name:
            raise RuleViolation("lb-name-stable", "get_load_balancer_name is not stable")
    if lb.get_load_balancer_name(ctx.config.cluster_name, a) == lb.get_load_balancer_name(
        ctx.config.cluster_name, b
    ):
        raise RuleViolation("lb-name-unique", "two Services got the same load-balancer name")


@scenario(CAP, "status-round-trips")
async def status_round_trip(ctx: Context) -> None:
    """Through the service controller: a LoadBalancer Service gets the provider's status in
    status.loadBalancer; deleting the Service deletes the load balancer in the cloud."""
    lb = _offered(ctx, CAP)
    name = ctx.name("lb-svc")
    ns = ctx.config.namespace
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
        },
    }
    ctx.services.add((ns, name))
    created = await ctx.client.create(kclient.SERVICES, body, namespace=ns)

    async def has_ingress() -> Any:
        svc = await ctx.client.get(kclient.SERVICES, name, namespace=ns)
        return (svc.get("status", {}).get("loadBalancer") or {}).get("ingress")

    ingress = await ctx.wait_for(
        has_ingress, "status-round-trips", f"Service {ns}/{name} never got status.loadBalancer"
    )
    svc_now = await ctx.client.get(kclient.SERVICES, name, namespace=ns)
    from ccm.cloudprovider import Service

    status = await ctx.call(
        "get_load_balancer", lb.get_load_balancer(ctx.config.cluster_name, Service(svc_now))
    )
    if status is None:
        raise RuleViolation(
            "get-reports-ensure",
            f"get_load_balancer does not know the load balancer of {ns}/{name}",
        )
    want = status.to_dict().get("ingress", [])
    got = [
        # the apiserver defaults ipMode to VIP when the provider leaves it out
        {
            k: v
            for k, v in i.items()
            if k != "ipMode" or "ipMode" in (want[n] if n < len(want) else {})
        }
        for n, i in enumerate(ingress)
    ]
    if got != want:
        raise RuleViolation(
            "status-round-trips", f"Service status {ingress} differs from the provider's {want}"
        )
    lb_name = lb.get_load_balancer_name(ctx.config.cluster_name, Service(created))
    while_up = await _cloud_lbs(
        ctx, lb_name, f"{ns}/{name}", "the cloud holds the Service's load balancer"
    )
    if while_up is not None and not while_up:
        raise RuleViolation(
            "status-round-trips",
            f"Service {ns}/{name} shows ingress {ingress} but the cloud holds no load balancer "
            "for it",
        )
    await ctx.client.delete(kclient.SERVICES, name, namespace=ns)

    async def svc_gone() -> bool:
        try:
            await ctx.client.get(kclient.SERVICES, name, namespace=ns)
        except errors.NotFoundError:
            return True
        return False

    await ctx.wait_for(
        svc_gone, "delete-leaves-nothing", f"Service {ns}/{name} was never finalized"
    )
    ctx.services.discard((ns, name))
    held = await _cloud_lbs(
        ctx, lb_name, f"{ns}/{name}", "no load balancer left after the Service was deleted"
    )
    if held:
        raise RuleViolation(
            "delete-leaves-nothing",
            f"leaked load balancer {[h.name for h in held]} after the Service was deleted",
        )


__all__ = ["NotOffered"]
