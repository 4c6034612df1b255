"""Checks of the LoadBalancer Services: those still without an ingress address, and those stuck
deleting on the load-balancer cleanup finalizer, each with its newest Warning event."""

from __future__ import annotations

from typing import Any

from ccm import wellknown
from ccm.doctor import model
from ccm.doctor.model import Finding, Verdict

__all__ = ["pending_load_balancers", "stuck_finalizers"]

# Warning events are looked up (one LIST each) for the first few Services only: the report shows
# no more than that.
EVENT_LOOKUPS = 5


def _key(svc: dict[str, Any]) -> str:
    meta = svc.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


async def _describe(
    ctx: model.Context, entries: list[tuple[float | None, dict[str, Any]]], what: str
) -> tuple[str, ...]:
    out = []
    for i, (seconds, svc) in enumerate(entries):
        text = f"{_key(svc)} ({what} {model.format_age(seconds)})"
        if i < EVENT_LOOKUPS:
            meta = svc.get("metadata", {})
            event = await ctx.last_warning("Service", meta.get("namespace"), meta.get("name", ""))
            if event:
                text += f" {event}"
        out.append(text)
    return tuple(out)


async def pending_load_balancers(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["lb-pending"]
    services = [
        s
        for s in await ctx.services()
        if s.get("spec", {}).get("type") == "LoadBalancer"
        and not s.get("spec", {}).get("loadBalancerClass")  # another controller's
        and not s.get("metadata", {}).get("deletionTimestamp")
    ]
    pending = [
        (model.age(s.get("metadata", {}).get("creationTimestamp"), ctx.now), s)
        for s in services
        if not (s.get("status", {}).get("loadBalancer") or {}).get("ingress")
    ]
    if not pending:
        return Finding(
            check="lb-pending",
            question=question,
            verdict=Verdict.OK,
            summary=f"{len(services)} LoadBalancer Service(s), all with an ingress address",
        )
    pending.sort(key=lambda p: -(p[0] or 0.0))
    old = [a for a, _ in pending if ctx.scope.overdue(a)]
    return Finding(
        check="lb-pending",
        question=question,
        verdict=Verdict.FAIL if old else Verdict.WARN,
        summary=f"{len(pending)} of {len(services)} LoadBalancer Service(s) pending",
        objects=await _describe(ctx, pending, "pending"),
        fix=(
            "read the SyncLoadBalancerFailed events (kubectl describe svc) and the ccm log; "
            "no event at all means no ccm runs the service controller"
        ),
    )


async def stuck_finalizers(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["lb-finalizer"]
    stuck = [
        (model.age(s["metadata"].get("deletionTimestamp"), ctx.now), s)
        for s in await ctx.services()
        if s.get("metadata", {}).get("deletionTimestamp")
        and wellknown.FINALIZER_LOAD_BALANCER_CLEANUP in (s["metadata"].get("finalizers") or [])
    ]
    if not stuck:
        return Finding(
            check="lb-finalizer",
            question=question,
            verdict=Verdict.OK,
            summary=f"no Service is waiting on {wellknown.FINALIZER_LOAD_BALANCER_CLEANUP}",
        )
    stuck.sort(key=lambda p: -(p[0] or 0.0))
    old = [a for a, _ in stuck if ctx.scope.overdue(a)]
    return Finding(
        check="lb-finalizer",
        question=question,
        verdict=Verdict.FAIL if old else Verdict.WARN,
        summary=f"{len(stuck)} Service(s) deleting, waiting on the ccm to delete the load balancer",
        objects=await _describe(ctx, stuck, "deleting for"),
        fix=(
            "read the DeleteLoadBalancerFailed events and the ccm log; remove the finalizer "
            "by hand only after deleting the cloud load balancer yourself"
        ),
    )
