"""The bench's report: the Markdown table of one run and its plot (matplotlib, when installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Run {doc['started']} on {doc['machine']}; command `{doc['command']}`.",
        f"{doc['nodes']} Nodes, {doc['services']} Services cached, cloud latency "
        f"{doc['latency_ms']} ms per call"
        + (f", cloud API limited to {doc['cloud_qps']:g} calls/s" if doc.get("cloud_qps") else "")
        + f"; kube-apiserver {doc['apiserver']}.",
        "",
        "| run | side | s to all | Nodes/s | node writes/Node | event writes/Node "
        "| idle RSS MiB | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["node_init"]:
        idle = r.get("idle", {})
        lines.append(
            f"| {r['settings_label']} | {r['side']} | {r.get('seconds_to_all')} | "
            f"{r.get('throughput_nodes_per_s')} | {r.get('node_writes_per_node')} | "
            f"{r.get('event_writes_per_node')} | {idle.get('rss_mib')} | {idle.get('cpu_s')} |"
        )
    by = {(r["settings_label"], r["side"]): r for r in doc["node_init"]}
    lines += ["", "| figure | value | goal |", "|---|---|---|"]
    limited = bool(doc.get("cloud_qps"))  # the goals are set for an unlimited cloud API
    goals = (("equal", "≥ 1.0"), ("defaults", "—" if limited else "≥ 5"), ("batch", "—"))
    for label, goal in goals:
        c = by.get((label, "ccm"))
        u = by.get(("defaults" if label == "batch" else label, "upstream"))
        if c and u:
            lines.append(
                "| init throughput ccm/upstream, "
                + (
                    "ccm defaults with InstancesBatch / upstream defaults"
                    if label == "batch"
                    else f"{label} settings"
                )
                + " | "
                f"{_ratio(c.get('throughput_nodes_per_s'), u.get('throughput_nodes_per_s'))} | "
                f"{goal} |"
            )
    raw = doc.get("raw_patch")
    best = max(
        (r.get("throughput_nodes_per_s") or 0 for r in doc["node_init"] if r["side"] == "ccm"),
        default=0,
    )
    if raw:
        lines.append(
            f"| ccm rate / tight-client rate (Go, {raw['workers']} workers, the same 2 patches "
            f"per Node: {raw['nodes_per_s']} Nodes/s; 1 patch: "
            f"{raw['writes1']['nodes_per_s']}/s) | {_ratio(best, raw['nodes_per_s'])} | ≥ 0.8 |"
        )
    for label in ("equal", "defaults"):
        c = by.get((label, "ccm"))
        if c:
            total = (c.get("node_writes_per_node") or 0) + (c.get("event_writes_per_node") or 0)
            lines.append(
                f"| ccm apiserver writes per Node, {label} (Nodes + Events) | "
                f"{c.get('node_writes_per_node')} + {c.get('event_writes_per_node')} = "
                f"{total:.2f} | ≤ 2 |"
            )
    for label in ("equal", "defaults"):
        c, u = by.get((label, "ccm")), by.get((label, "upstream"))
        if c and u and c.get("idle") and u.get("idle"):
            crss, ursss = c["idle"]["rss_mib"], u["idle"]["rss_mib"]
            lines.append(
                f"| idle RSS ccm/upstream, {label} ({crss} / {ursss} MiB) | "
                f"{_ratio(crss, ursss)} | ≤ 1.0 |"
            )
    for h in doc.get("handover", []):
        lines.append(
            f"| leader SIGTERM → standby holds the Lease, {h['side']} | {h.get('seconds')} s "
            f"{h.get('note', '') or h.get('error', '')} | < 2 s |"
        )
    for r in doc["node_init"]:
        rtt = r.get("healthz_rtt")
        if rtt:
            lines.append(
                f"| ccm /healthz round trip during init ({r['settings_label']}; bounds the "
                f"event-loop lag): p50 {rtt['p50_ms']} ms, p99 | {rtt['p99_ms']} ms "
                f"(max {rtt['max_ms']}) | lag p99 < 50 ms |"
            )
    for r in doc["node_init"]:
        lag = r.get("event_loop_lag")
        if lag and "samples" in lag:
            lines.append(
                f"| ccm event-loop lag during init ({r['settings_label']}; "
                f"`ccm_event_loop_lag_seconds`, {lag['samples']} samples, {lag['over_50ms']} "
                f"over 50 ms): p50 ≤ {lag['p50_le_ms']:g} ms, p99 | ≤ {lag['p99_le_ms']:g} ms "
                f"| < 50 ms |"
            )
    lbs = {r["side"]: r for r in doc.get("lb", [])}
    if lbs:
        c, u = lbs.get("ccm", {}), lbs.get("upstream", {})
        lines.append(
            f"| LB convergence, {doc['lb'][0]['services']} Services, defaults, upstream/ccm "
            f"({u.get('seconds_to_all')} s / {c.get('seconds_to_all')} s) | "
            f"{_ratio(u.get('seconds_to_all'), c.get('seconds_to_all'))} | ≥ 10 |"
        )
    else:
        lines.append("| LB convergence | not measured | ≥ 10 |")
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> bool:
    if not any(r["curve"] for r in doc["node_init"]):
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in doc["node_init"]:
        if r["curve"]:
            t, n = zip(*r["curve"], strict=True)
            ax.plot(t, n, label=f"{r['side']} ({r['settings_label']})")
    ax.set_xlabel("seconds since the CCM process started")
    ax.set_ylabel("Nodes initialised")
    ax.set_title(f"{doc['nodes']} tainted Nodes, {doc['latency_ms']} ms per cloud call")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
