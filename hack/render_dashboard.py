"""Render a layout preview of the Grafana dashboard (docs/dashboard/ccm.json) as a PNG.

Not a Grafana screenshot: it draws each panel's place on the 24-column grid, its title, type and
the queries' legends, so the docs can show what the dashboard holds. Needs matplotlib (not a ccm
dependency): ``pip install matplotlib; python hack/render_dashboard.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "docs" / "dashboard" / "ccm.json"
OUT = ROOT / "docs" / "dashboard" / "ccm-layout.png"
ROW_UNIT = 0.6  # height of one grid row, relative to one column's width


def main() -> int:
    doc = json.loads(SRC.read_text())
    panels = doc["panels"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.rcParams["text.parse_math"] = False  # PromQL is full of $ signs
    fig, ax = plt.subplots(figsize=(16, bottom * ROW_UNIT * 16 / 24 + 0.8))
    ax.set_xlim(0, 24)
    ax.set_ylim(bottom * ROW_UNIT, -0.9)
    ax.axis("off")
    fig.patch.set_facecolor("#111217")
    ax.text(
        0,
        -0.45,
        f"{doc['title']} (layout preview, not a Grafana rendering)",
        color="white",
        fontsize=13,
        weight="bold",
        va="center",
    )
    for p in panels:
        pos = p["gridPos"]
        x, y, w, h = pos["x"], pos["y"] * ROW_UNIT, pos["w"], pos["h"] * ROW_UNIT
        if p["type"] == "row":
            ax.text(x + 0.1, y + h / 2, p["title"], color="#ccccdc", fontsize=11, va="center")
            continue
        ax.add_patch(
            FancyBboxPatch(
                (x + 0.08, y + 0.06),
                w - 0.16,
                h - 0.12,
                boxstyle="round,pad=0,rounding_size=0.1",
                facecolor="#181b1f",
                edgecolor="#2c3235",
            )
        )
        ax.text(x + 0.3, y + 0.4, p["title"], color="white", fontsize=9, weight="bold", va="center")
        kind = "stat" if p["type"] == "stat" else "time series"
        ax.text(x + w - 0.3, y + 0.4, kind, color="#8e8e8e", fontsize=7, ha="right", va="center")
        legends = [t.get("legendFormat", "") for t in p.get("targets", [])]
        metric = p["targets"][0]["expr"] if p.get("targets") else ""
        lines = [", ".join(legends)[:60], metric[: int(w * 5.2)]]
        for i, line in enumerate(lines):
            ax.text(
                x + 0.3,
                y + 0.95 + i * 0.45,
                line,
                color="#73bf69" if i == 0 else "#6e9fff",
                fontsize=6.5,
                va="center",
                family="monospace",
            )
    fig.savefig(OUT, dpi=110, bbox_inches="tight", facecolor=fig.get_facecolor())
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
