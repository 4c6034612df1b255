"""``python -m bench.profile`` turns py-spy's collapsed stacks into a per-function summary and an
SVG flame graph (the bench package lives beside ``ccm``, not in it: run from the repository)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STACKS = """\
main (/x/lib/python3.11/site-packages/ccm/app/main.py:10);run (/x/ccm/kube/informer.py:20) 3
main (/x/lib/python3.11/site-packages/ccm/app/main.py:11);run (/x/ccm/kube/informer.py:25) 1
main (/x/lib/python3.11/site-packages/ccm/app/main.py:10);send (/usr/lib/python3.11/ssl.py:5) 6
not a stack line
"""


def _run(tmp_path: Path) -> tuple[str, str]:
    stacks = tmp_path / "s.txt"
    stacks.write_text(STACKS)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "bench.profile", str(stacks), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return (out / "s-top.txt").read_text(), (out / "s.svg").read_text()


def test_summary_groups_frames_per_function_and_ranks_own_and_total(tmp_path: Path) -> None:
    top, _ = _run(tmp_path)
    lines = top.splitlines()
    assert lines[0] == "10 samples"  # the malformed line is skipped
    # line numbers dropped (main:10 and main:11 are one function), paths cut to the package
    assert lines[3].split() == ["60.0", "60.0", "send", "(ssl.py)"]
    assert lines[4].split() == ["40.0", "40.0", "run", "(ccm/kube/informer.py)"]
    assert "  100.0  main (ccm/app/main.py)" in lines


def test_flame_graph_is_svg_with_one_box_per_frame(tmp_path: Path) -> None:
    _, svg = _run(tmp_path)
    root = ET.fromstring(svg)
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert len(titles) == 3
    assert "main (ccm/app/main.py) — 10 samples, 100.0 %" in titles
