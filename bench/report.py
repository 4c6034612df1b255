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
        + (", ccm on uvloop" if doc.get("ccm_loop") == "uvloop" else "")
        + (", API Priority and Fairness on" if doc.get("apf") else "")
        + f"; kube-apiserver {doc['apiserver']}.",
        "",
        "| run | side | s to all | Nodes/s | node writes/Node | event writes/Node "
        "| idle RSS MiB | CPU s | apiserver + etcd CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["node_init"]:
        idle = r.get("idle", {})
        lines.append(
            f"| {r['settings_label']} | {r['side']} | {r.get('seconds_to_all')} | "
            f"{r.get('throughput_nodes_per_s')} | {r.get('node_writes_per_node')} | "
            f"{r.get('event_writes_per_node')} | {idle.get('rss_mib')} | {idle.get('cpu_s')} | "
            f"{r.get('control_plane_cpu_s', '—')} |"
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
                f"| {r['side']} /healthz round trip during init ({r['settings_label']}; bounds "
                f"the event-loop lag): p50 {rtt['p50_ms']} ms, p99 | {rtt['p99_ms']} ms "
                f"(max {rtt['max_ms']}) | {'lag p99 < 50 ms' if r['side'] == 'ccm' else '—'} |"
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


def curve_markdown(doc: dict[str, Any]) -> str:
    """The cost curve's table: one row per (kind, N, side), per-object figures."""
    settings = doc["equal_settings"]
    lines = [
        f"Run {doc['started']} on {doc['machine']}; command `{doc['command']}`.",
        f"kube-apiserver {doc.get('apiserver')}, API Priority and Fairness "
        + ("on (defaults; sides as ServiceAccount identities)" if doc["apf"] else "off")
        + (", ccm on uvloop" if doc.get("ccm_loop") == "uvloop" else "")
        + f"; {doc['latency_ms']:g} ms per cloud call, {doc['ensure_ms']:g} ms per ensure; "
        f"both sides at QPS {settings['kube-api-qps']}, burst {settings['kube-api-burst']}, "
        f"{settings['concurrent-node-syncs']} workers; leader election on for the Node runs.",
        "",
        "| objects | N | side | s to all | objects/s | CPU s | CPU ms/object "
        "| CPU ms/object after start-up | idle RSS MiB | RSS MiB/1,000 | writes/object "
        "| Events/object | loop lag p99 | 429s | start → Lease s | start → first Node s "
        "| start-up CPU s | apiserver + etcd CPU ms/object |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in doc["points"]:
        startup = p.get("startup") or {}
        lag = p.get("lag_p99_le_ms")
        lines.append(
            f"| {'Nodes' if p['kind'] == 'nodes' else 'LB Services'} | {p['n']:,} | {p['side']} "
            f"| {p['seconds_to_all']} | {p.get('throughput_per_s') or '—'} | {p['cpu_s']} "
            f"| {p['cpu_ms_per_object']} | {p.get('cpu_ms_per_object_after_startup') or '—'} "
            f"| {p['rss_mib']} | {p['rss_mib_per_1000']} "
            f"| {p['writes_per_object']} | {p['events_per_object']} "
            f"| {'—' if lag is None else f'≤ {lag:g} ms'} | {p['http_429']} "
            f"| {startup.get('lease_held_s', '—')} | {startup.get('first_node_s', '—')} "
            f"| {startup.get('first_node_cpu_s', '—')} "
            f"| {p.get('control_plane_cpu_ms_per_object') or '—'} |"
        )
    for p in doc["points"]:
        if p.get("error"):
            lines.append(f"\n{p['kind']} {p['n']} {p['side']} failed: {p['error']}")
    if doc.get("note"):
        lines += ["", doc["note"]]
    ratios = []
    for p in doc["points"]:
        if p["side"] != "ccm":
            continue
        u = next(
            (
                q
                for q in doc["points"]
                if q["side"] == "upstream" and q["kind"] == p["kind"] and q["n"] == p["n"]
            ),
            None,
        )
        if u and p["cpu_ms_per_object"] and u["cpu_ms_per_object"]:
            ratios.append(
                f"| {'Nodes' if p['kind'] == 'nodes' else 'LB Services'} {p['n']:,} "
                f"| {_ratio(p['cpu_ms_per_object'], u['cpu_ms_per_object'])} "
                f"| {_ratio(p['rss_mib'], u['rss_mib'])} "
                f"| {_ratio(u['seconds_to_all'], p['seconds_to_all'])} |"
            )
    if ratios:
        lines += [
            "",
            "| ccm / upstream | CPU per object (goal ≤ 1.0) | idle RSS (goal ≤ 1.0) "
            "| speed (upstream s / ccm s) |",
            "|---|---|---|---|",
            *ratios,
        ]
    return "\n".join(lines) + "\n"


def curve_plot(doc: dict[str, Any], path: Path) -> bool:
    """Six panels against N (log scale): time to all, CPU per object, RSS per 1,000 objects,
    writes + Events per object, ccm's loop lag p99, start-up milestones."""
    if not doc["points"]:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = (
        ("seconds_to_all", "s to initialise all"),
        ("cpu_ms_per_object", "CPU ms per object"),
        ("rss_mib_per_1000", "idle RSS MiB per 1,000 objects"),
        ("api_per_object", "apiserver writes + Events per object"),
        ("lag_p99_le_ms", "event-loop lag p99 (ms, ccm)"),
        ("startup", "s from process start (Nodes runs)"),
    )
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    colors = {"ccm": "tab:blue", "upstream": "tab:orange"}
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for side in doc["sides"]:
            for kind, style in (("nodes", "-o"), ("lb", "--s")):
                pts = [
                    p
                    for p in doc["points"]
                    if p["side"] == side and p["kind"] == kind and not p.get("error")
                ]
                what = "Nodes" if kind == "nodes" else "LB Services"
                if key == "startup":
                    if kind != "nodes":
                        continue
                    for field, mark in (("lease_held_s", "-^"), ("first_node_s", "-o")):
                        xy = [
                            (p["n"], p["startup"].get(field))
                            for p in pts
                            if p["startup"].get(field) is not None
                        ]
                        if xy:
                            ax.plot(
                                *zip(*xy, strict=True),
                                mark,
                                color=colors.get(side),
                                label=f"{side} {field.removesuffix('_s').replace('_', ' ')}",
                            )
                    continue
                if key == "api_per_object":
                    xy = [
                        (p["n"], (p["writes_per_object"] or 0) + (p["events_per_object"] or 0))
                        for p in pts
                    ]
                else:
                    xy = [(p["n"], p[key]) for p in pts if p.get(key) is not None]
                if xy:
                    ax.plot(
                        *zip(*xy, strict=True),
                        style,
                        color=colors.get(side),
                        label=f"{side} {what}",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("N")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.suptitle(
        "ccm vs upstream cost curve" + (" (API Priority and Fairness on)" if doc["apf"] else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
