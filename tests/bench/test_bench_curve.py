"""``python -m bench --curve --quick --apf`` proves the cost-curve mode works end to end (issue 20).

Both sides initialise 20 and then 40 Nodes with leader election on, then converge 10 LoadBalancer
Services, on a control plane with API Priority and Fairness left on and the sides running as
ServiceAccount identities. No timing is asserted: only that every point finished, carries its
per-object figures and start-up milestones, and that the table (and plot) were written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_curve_quick_with_apf(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--curve", "--quick", "--apf", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    [doc_path] = tmp_path.glob("*-quick-curve-apf.json")
    doc = json.loads(doc_path.read_text())
    assert doc["apf"] is True
    assert "ccm" in doc["sides"]
    points = {(p["kind"], p["n"], p["side"]): p for p in doc["points"]}
    expected = {
        (kind, n, side)
        for side in doc["sides"]
        for kind, sizes in (("nodes", (20, 40)), ("lb", (10,)))
        for n in sizes
    }
    assert set(points) == expected
    for (kind, _, _), p in points.items():
        assert p["seconds_to_all"] is not None, p
        assert p["cpu_ms_per_object"] > 0, p
        assert p["rss_mib_per_1000"] > 0, p
        assert p["writes_per_object"] > 0, p
        assert p["http_429"] >= 0, p
        if kind == "nodes":
            lease, first = p["startup"]["lease_held_s"], p["startup"]["first_node_s"]
            assert lease is not None and first is not None, p
            assert lease <= first, p  # controllers start only once the Lease is held
    for n in (20, 40):
        assert points[("nodes", n, "ccm")]["lag_p99_le_ms"] is not None
    table = doc_path.with_suffix(".md").read_text()
    assert "| objects | N | side |" in table
    assert "API Priority and Fairness on" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert doc_path.with_suffix(".png").stat().st_size > 0
