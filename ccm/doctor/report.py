"""Running the checks and presenting their findings: a plain-text table or JSON, and the exit code
of the worst verdict."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Sequence

from ccm import errors
from ccm.doctor import control, model, nodes, rbac, services
from ccm.doctor.model import Finding, Verdict
from ccm.kube import client as kclient

__all__ = ["CHECKS", "exit_code", "render_json", "render_table", "run_checks"]

# In report order: the ccm first, then what it manages, then its permissions.
CHECKS: dict[str, model.Check] = {
    "leader": control.leader,
    "ccm-pods": control.ccm_pods,
    "taint-without-ccm": control.taint_without_ccm,
    "uninitialized-taint": nodes.uninitialized_taint,
    "kubelet-external": nodes.kubelet_external,
    "node-cloud-data": nodes.cloud_data,
    "routes": nodes.routes,
    "lb-pending": services.pending_load_balancers,
    "lb-finalizer": services.stuck_finalizers,
    "rbac": rbac.rbac,
}

# How many objects the table shows per check before "... and N more".
SHOWN_OBJECTS = 5


async def run_checks(
    client: kclient.KubeClient,
    scope: model.Scope,
    *,
    only: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> list[Finding]:
    """Run the named checks (default: all) in report order. A check the doctor's own user may not
    read for answers ``warn`` with the apiserver's refusal; an unreachable apiserver raises
    :class:`ccm.errors.KubeError`."""
    ctx = model.Context(client=client, scope=scope, now=now or dt.datetime.now(dt.UTC))
    findings = []
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        try:
            findings.append(await check(ctx))
        except errors.ApiError as exc:
            findings.append(
                Finding(
                    check=name,
                    question=model.QUESTIONS[name],
                    verdict=Verdict.WARN,
                    summary=f"could not check: {exc}",
                    fix="run the doctor as a user who may read Nodes, Services, Pods, Leases, "
                    "Events and create SubjectAccessReviews",
                )
            )
    return findings


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when every check is ok, 1 when the worst is a warning, 2 when one failed."""
    return int(max((f.verdict for f in findings), default=Verdict.OK))


def render_json(findings: Sequence[Finding]) -> str:
    worst = max((f.verdict for f in findings), default=Verdict.OK)
    doc = {"verdict": str(worst), "checks": [f.to_json() for f in findings]}
    return json.dumps(doc, indent=2)


def render_table(findings: Sequence[Finding], *, width: int = 100) -> str:
    """One block per check: ``VERDICT  check  summary``, then the objects at fault (first few,
    then a count) and the fix, indented."""
    name_width = max((len(f.check) for f in findings), default=0)
    indent = " " * (6 + name_width + 2)
    lines = []
    for f in findings:
        lines.append(f"{str(f.verdict).upper():<6}{f.check:<{name_width}}  {f.summary}")
        if f.verdict is Verdict.OK:
            continue
        for obj in f.objects[:SHOWN_OBJECTS]:
            lines.extend(
                textwrap.wrap(
                    obj,
                    width,
                    initial_indent=indent + "- ",
                    subsequent_indent=indent + "  ",
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )
        if len(f.objects) > SHOWN_OBJECTS:
            lines.append(f"{indent}  ... and {len(f.objects) - SHOWN_OBJECTS} more")
        if f.fix:
            lines.extend(
                textwrap.wrap(
                    f"fix: {f.fix}",
                    width,
                    initial_indent=indent,
                    subsequent_indent=indent + "     ",
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )
    counts = {v: sum(1 for f in findings if f.verdict is v) for v in Verdict}
    lines.append("")
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)
