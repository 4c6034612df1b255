"""Checks of the Nodes: the uninitialized taint, how the kubelets registered, the cloud data the
cloud-node controller copies (providerID, zone and region labels) and the routes
(NetworkUnavailable). Ports nothing: these are the questions upstream's troubleshooting answers by
hand with ``kubectl get nodes``."""

from __future__ import annotations

from typing import Any

from ccm import wellknown
from ccm.doctor import model
from ccm.doctor.model import Finding, Verdict

__all__ = ["cloud_data", "kubelet_external", "routes", "uninitialized_taint"]


def _name(node: dict[str, Any]) -> str:
    return str(node.get("metadata", {}).get("name", ""))


def is_tainted(node: dict[str, Any]) -> bool:
    taints = node.get("spec", {}).get("taints") or []
    return any(t.get("key") == wellknown.TAINT_UNINITIALIZED for t in taints)


def _condition(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _node_age(ctx: model.Context, node: dict[str, Any]) -> float | None:
    return model.age(node.get("metadata", {}).get("creationTimestamp"), ctx.now)


async def uninitialized_taint(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["uninitialized-taint"]
    nodes = await ctx.nodes()
    tainted = [n for n in nodes if is_tainted(n)]
    if not tainted:
        return Finding(
            check="uninitialized-taint",
            question=question,
            verdict=Verdict.OK,
            summary=f"{len(nodes)} Node(s), none tainted {wellknown.TAINT_UNINITIALIZED}",
        )
    ages = [_node_age(ctx, n) for n in tainted]
    tainted_ages = sorted(zip(ages, tainted, strict=True), key=lambda p: -(p[0] or 0.0))
    old = [a for a in ages if ctx.scope.overdue(a)]
    objects = tuple(f"{_name(n)} (tainted since {model.format_age(a)})" for a, n in tainted_ages)
    return Finding(
        check="uninitialized-taint",
        question=question,
        verdict=Verdict.FAIL if old else Verdict.WARN,
        summary=(
            f"{len(tainted)} of {len(nodes)} Node(s) uninitialized, "
            f"{len(old)} past the {model.format_age(ctx.scope.grace)} grace"
        ),
        objects=objects,
        fix=(
            "see the leader and ccm-pods checks, then the ccm log and the FailedToInitializeNode "
            "events of the Node (kubectl describe node NAME)"
        ),
    )


async def kubelet_external(ctx: model.Context) -> Finding:
    """A kubelet started with ``--cloud-provider=external`` registers its Node with the
    uninitialized taint; the ccm sets the providerID before it removes the taint. A Node with
    neither was registered by a kubelet without that flag (or had its taint removed by hand)."""
    question = model.QUESTIONS["kubelet-external"]
    nodes = await ctx.nodes()
    suspects = [n for n in nodes if not is_tainted(n) and not n.get("spec", {}).get("providerID")]
    if not suspects:
        return Finding(
            check="kubelet-external",
            question=question,
            verdict=Verdict.OK,
            summary=f"every initialized Node of {len(nodes)} has a providerID",
        )
    objects = []
    for n in suspects:
        annotations = n.get("metadata", {}).get("annotations") or {}
        hint = (
            f"{wellknown.ANNOTATION_PROVIDED_NODE_IP} set, taint removed by hand?"
            if wellknown.ANNOTATION_PROVIDED_NODE_IP in annotations
            else "no taint, no providerID"
        )
        objects.append(f"{_name(n)} ({hint})")
    return Finding(
        check="kubelet-external",
        question=question,
        verdict=Verdict.FAIL,
        summary=f"{len(suspects)} Node(s) never initialized by a cloud controller manager",
        objects=tuple(objects),
        fix=(
            "start the kubelet with --cloud-provider=external (kubeadm: "
            "nodeRegistration.kubeletExtraArgs), then re-register the Node "
            "(delete it, restart the kubelet)"
        ),
    )


async def cloud_data(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["node-cloud-data"]
    nodes = [n for n in await ctx.nodes() if n.get("spec", {}).get("providerID")]
    missing = []
    for n in nodes:
        labels = n.get("metadata", {}).get("labels") or {}
        absent = [
            short
            for short, key in (("zone", wellknown.LABEL_ZONE), ("region", wellknown.LABEL_REGION))
            if not labels.get(key)
        ]
        if absent:
            missing.append(f"{_name(n)} (no {' or '.join(absent)})")
    if not missing:
        return Finding(
            check="node-cloud-data",
            question=question,
            verdict=Verdict.OK,
            summary=f"{len(nodes)} Node(s) with a providerID, all with zone and region labels",
        )
    return Finding(
        check="node-cloud-data",
        question=question,
        verdict=Verdict.WARN,
        summary=f"{len(missing)} of {len(nodes)} Node(s) with a providerID lack topology labels",
        objects=tuple(missing),
        fix=(
            "expected if the provider reports no zones; otherwise check its InstanceMetadata "
            "(zone, region) and the ccm log for the Node"
        ),
    )


async def routes(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["routes"]
    nodes = await ctx.nodes()
    down: list[tuple[float | None, dict[str, Any], dict[str, Any]]] = []
    managed = 0
    for n in nodes:
        cond = _condition(n, wellknown.CONDITION_NETWORK_UNAVAILABLE)
        if cond is None:
            continue
        managed += 1
        if cond.get("status") == "True":
            down.append((model.age(cond.get("lastTransitionTime"), ctx.now), n, cond))
    if not down:
        summary = (
            f"{managed} Node(s) with routes, none NetworkUnavailable"
            if managed
            else "no Node carries a NetworkUnavailable condition (routes not managed here)"
        )
        return Finding(check="routes", question=question, verdict=Verdict.OK, summary=summary)
    old = [a for a, _, _ in down if ctx.scope.overdue(a)]
    objects = tuple(
        f"{_name(n)} ({c.get('reason') or 'no reason'}, since {model.format_age(a)})"
        for a, n, c in down
    )
    return Finding(
        check="routes",
        question=question,
        verdict=Verdict.FAIL if old else Verdict.WARN,
        summary=f"{len(down)} of {len(nodes)} Node(s) NetworkUnavailable",
        objects=objects,
        fix=(
            "check --cluster-cidr/--allocate-node-cidrs and Node spec.podCIDR, the provider's "
            "Routes support and the FailedToCreateRoute events"
        ),
    )
