"""The short chaos run of ``make test``: three real replicas, a churning workload and the fault
kinds of :data:`chaos.plan.SHORT_RUN_FAULTS`, checked by the invariant checker (``make chaos`` is
the long run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos import plan as planmod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
# 70 s of chaos with 3-4 s faults 2-3 s apart: every fault kind once (seed 1).
SHORT_RUN = ["--seed", "1", "--duration", "70", "--fault-duration", "3,4", "--fault-gap", "2,3"]


def test_short_chaos_run_keeps_every_invariant_and_converges(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    result = subprocess.run(
        [sys.executable, "-m", "chaos", *SHORT_RUN, "--faults", "short", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )
    output = result.stdout + result.stderr[-6000:]
    [doc_path] = tmp_path.glob("*-seed1.json")
    doc = json.loads(doc_path.read_text())
    assert doc["converged"], output
    assert doc["counts"], output
    assert {name: n for name, n in doc["counts"].items() if n} == {}, output
    assert result.returncode == 0, output
    injected = doc["info"]["faults injected"]
    for kind in planmod.SHORT_RUN_FAULTS:
        assert f"{kind} x1" in injected, injected
    assert doc["info"]["faults skipped (no leader at the time)"] == "0", output
    assert int(doc["info"]["Node deletions by ccm"]) > 0, output
    assert int(doc["info"]["leader changes (audit log)"]) > 0, output
    assert [path.suffix for path in sorted(tmp_path.iterdir())] == [".json", ".md"]
