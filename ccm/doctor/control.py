"""Checks of the ccm itself: who holds the leader-election Lease and whether it is renewed, the
ccm Pods and their restarts, and Nodes waiting for a ccm that is not running."""

from __future__ import annotations

from typing import Any

from ccm import wellknown
from ccm.doctor import model, nodes
from ccm.doctor.model import Finding, Verdict

__all__ = ["ccm_pods", "leader", "taint_without_ccm"]


def _lease_state(ctx: model.Context, lease: dict[str, Any] | None) -> tuple[bool, str]:
    """(someone leads now, a one-line description of the Lease)."""
    where = f"Lease {ctx.scope.lease_namespace}/{ctx.scope.lease_name}"
    if lease is None:
        return False, f"{where} does not exist: no ccm has ever led with this lock name"
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    if not holder:
        return False, f"{where} has no holder (released)"
    since = model.age(spec.get("renewTime") or spec.get("acquireTime"), ctx.now)
    duration = float(spec.get("leaseDurationSeconds") or 15)
    renewed = f"renewed {model.format_age(since)} ago"
    if since is None or since > duration:
        return False, f"{where} held by {holder} is stale: {renewed}, lease {duration:g}s"
    return True, f"{where} held by {holder}, {renewed}"


async def leader(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["leader"]
    live, summary = _lease_state(ctx, await ctx.lease())
    if live:
        return Finding(check="leader", question=question, verdict=Verdict.OK, summary=summary)
    return Finding(
        check="leader",
        question=question,
        verdict=Verdict.FAIL,
        summary=summary,
        objects=(f"lease/{ctx.scope.lease_name}",),
        fix=(
            f"start the ccm (kubectl -n {ctx.scope.ccm_namespace} get pods) or look at why the "
            "leader stopped renewing (its log); --leader-elect-resource-name must match"
        ),
    )


def _pod_problems(pod: dict[str, Any]) -> tuple[Verdict, str]:
    name = str(pod.get("metadata", {}).get("name", ""))
    status = pod.get("status") or {}
    verdict, notes = Verdict.OK, []
    for cs in status.get("containerStatuses") or []:
        restarts = int(cs.get("restartCount") or 0)
        waiting = (cs.get("state") or {}).get("waiting") or {}
        last = ((cs.get("lastState") or {}).get("terminated") or {}).get("reason")
        if waiting.get("reason") in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"):
            verdict = Verdict.FAIL
            notes.append(str(waiting["reason"]))
        if restarts:
            verdict = max(verdict, Verdict.WARN)
            notes.append(f"{restarts} restart(s)" + (f", last {last}" if last else ""))
    phase = status.get("phase")
    if phase and phase != "Running":
        verdict = max(verdict, Verdict.WARN)
        notes.append(f"phase {phase}")
    return verdict, f"{name} ({', '.join(notes)})" if notes else name


async def ccm_pods(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["ccm-pods"]
    pods = await ctx.pods()
    where = f"{ctx.scope.ccm_pod_selector or 'any label'} in {ctx.scope.ccm_namespace}"
    if not pods:
        return Finding(
            check="ccm-pods",
            question=question,
            verdict=Verdict.WARN,
            summary=f"no Pod matches {where}",
            fix=(
                "fine if the ccm runs outside the cluster; otherwise apply the manifests "
                "(kubectl apply -k manifests/overlays/NAME) or fix --ccm-pod-selector"
            ),
        )
    results = [_pod_problems(p) for p in pods]
    bad = [(v, text) for v, text in results if v is not Verdict.OK]
    if not bad:
        return Finding(
            check="ccm-pods",
            question=question,
            verdict=Verdict.OK,
            summary=f"{len(pods)} Pod(s) running without restarts ({where})",
        )
    return Finding(
        check="ccm-pods",
        question=question,
        verdict=max(v for v, _ in bad),
        summary=f"{len(bad)} of {len(pods)} ccm Pod(s) unhealthy",
        objects=tuple(text for _, text in bad),
        fix=(
            f"kubectl -n {ctx.scope.ccm_namespace} logs --previous POD: a crash names its cause "
            "in the last lines"
        ),
    )


async def taint_without_ccm(ctx: model.Context) -> Finding:
    question = model.QUESTIONS["taint-without-ccm"]
    tainted = [n for n in await ctx.nodes() if nodes.is_tainted(n)]
    live, lease = _lease_state(ctx, await ctx.lease())
    if not tainted or live:
        summary = "no Node is tainted" if not tainted else "a ccm leads; see uninitialized-taint"
        return Finding(
            check="taint-without-ccm", question=question, verdict=Verdict.OK, summary=summary
        )
    return Finding(
        check="taint-without-ccm",
        question=question,
        verdict=Verdict.FAIL,
        summary=f"{len(tainted)} Node(s) tainted {wellknown.TAINT_UNINITIALIZED}; {lease}",
        objects=tuple(str(n.get("metadata", {}).get("name", "")) for n in tainted),
        fix=(
            "deploy and start the ccm: the kubelets run with --cloud-provider=external, so "
            "nothing schedules on these Nodes until a ccm initializes them"
        ),
    )
