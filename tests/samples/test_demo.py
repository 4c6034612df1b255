"""``make demo`` (the README's first command) runs the whole guided tour and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_tells_the_whole_story_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.demo"],
        cwd=Path(__file__).resolve().parents[2],  # devtools/ is not installed: from the checkout
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for step in range(1, 8):
        assert f"\n[{step}] " in out
    assert "private-cloud://m-" in out  # Nodes initialized from the cloud's inventory
    assert "The route controller created one cloud route per pod CIDR" in out
    assert "demo-web  LoadBalancer  192.0.2.1" in out
    assert (
        "DeletingNode: Deleting node gpu-d because it does not exist in the cloud provider" in out
    )
    assert "192.0.2.1 is back in the pool" in out
    assert "ccm stopped (exit code 0)" in out
    assert out.rstrip().endswith("nothing left running")
