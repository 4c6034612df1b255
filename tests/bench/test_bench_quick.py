"""``python -m bench --quick`` proves the benchmark harness works end to end (issue 8).

It starts its own control plane, builds the upstream Go CCM of ``bench/upstream`` into the cache
when needed (a few seconds once Go's caches are warm from the kube-apiserver build; minutes cold),
initialises 20 Nodes with ccm and with upstream, and writes the JSON/Markdown results. No timing is
asserted: the numbers only mean something from ``make bench``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_runs_both_sides(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    [doc_path] = tmp_path.glob("*-quick.json")
    doc = json.loads(doc_path.read_text())
    sides = {r["side"] for r in doc["node_init"]}
    assert sides == set(doc["sides"])
    assert "ccm" in sides
    for run in doc["node_init"]:
        assert run["initialized"] == doc["nodes"], run
        assert run["tainted_after"] == 0, run
        assert run["node_writes_per_node"] > 0, run
        assert run["idle"]["rss_mib"] > 0, run
    ccm_run = next(r for r in doc["node_init"] if r["side"] == "ccm")
    assert ccm_run["event_loop_lag"]["samples"] > 0, ccm_run
    if "upstream" in sides:  # the tight client is a mode of the upstream binary
        raw = doc["raw_patch"]
        assert raw["nodes"] == doc["nodes"]
        assert raw["writes2"]["failed"] == 0 and raw["writes2"]["nodes_per_s"] > 0, raw
    assert "| figure | value | goal |" in doc_path.with_suffix(".md").read_text()
