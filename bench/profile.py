"""Reading a py-spy profile of a side: collapsed stacks (``py-spy record --format raw``, one line
``frame;frame;…;frame <samples>`` per distinct stack) into a top-functions summary and an SVG
flame graph.

``python -m bench.profile STACKS.txt [--out DIR]`` writes ``<name>-top.txt`` and ``<name>.svg``
beside ``STACKS.txt`` (or in ``DIR``); ``python -m bench --py-spy`` does it for each ccm run.
Frames are grouped per function (the line number dropped) and paths shortened to the package
(``ccm/kube/informer.py``, ``aiohttp/client.py``), so one function's samples add up.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = ["flame_svg", "load", "summary"]

Stacks = dict[tuple[str, ...], int]

_LINE = re.compile(r":\d+\)$")
_PATH = re.compile(r"\((?:.*/(?:site-packages|lib/python3\.\d+)/|.*/(?=ccm/|bench/))")


def _frame(raw: str) -> str:
    return _PATH.sub("(", _LINE.sub(")", raw.strip()))


def load(path: Path) -> Stacks:
    """The stacks of a py-spy raw file, root first, with their sample counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[tuple(_frame(f) for f in stack.split(";") if f)] += int(count)
    return dict(stacks)


def summary(stacks: Stacks, *, top: int = 40) -> str:
    """Functions by own samples (the leaf of a stack) and by total samples (anywhere on it)."""
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in stacks.items():
        if stack:
            own[stack[-1]] += n
        for frame in set(stack):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "own %  total %  function (own samples: where the CPU is)"]
    for frame, n in own.most_common(top):
        lines.append(f"{100 * n / total:5.1f}  {100 * inclusive[frame] / total:7.1f}  {frame}")
    lines += ["", "total %  function (total samples: what it costs with its callees)"]
    for frame, n in inclusive.most_common(top):
        lines.append(f"{100 * n / total:7.1f}  {frame}")
    return "\n".join(lines) + "\n"


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Node] = {}


def flame_svg(stacks: Stacks, *, title: str, width: int = 1200, row: int = 16) -> str:
    """A static flame graph (root at the bottom; hover a box for its function and share)."""
    root = _Node()
    for stack, n in stacks.items():
        node = root
        node.count += n
        for frame in stack:
            node = node.children.setdefault(frame, _Node())
            node.count += n
    total = root.count or 1
    boxes: list[tuple[int, float, float, str, int]] = []  # depth, x, w, frame, samples

    def walk(node: _Node, depth: int, x: float) -> None:
        for frame, child in sorted(node.children.items()):
            w = width * child.count / total
            if w >= 0.3:
                boxes.append((depth, x, w, frame, child.count))
                walk(child, depth + 1, x)
            x += w

    walk(root, 0, 0.0)
    depth = max((b[0] for b in boxes), default=0) + 1
    height = (depth + 2) * row
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="4" y="{row - 4}">{html.escape(title)} ({total} samples)</text>',
    ]
    for d, x, w, frame, n in boxes:
        y = height - (d + 1) * row
        hue = 10 + (hash(frame.split(" ")[0]) % 50)
        label = html.escape(f"{frame} — {n} samples, {100 * n / total:.1f} %")
        out.append(
            f'<g><title>{label}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
        )
        chars = int(w / 7)
        if chars >= 4:
            name = frame if len(frame) <= chars else frame[: chars - 1] + "…"
            out.append(f'<text x="{x + 2:.1f}" y="{y + row - 4}">{html.escape(name)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(stacks_path: Path, out: Path | None = None, *, title: str | None = None) -> list[Path]:
    """Write ``<stem>-top.txt`` and ``<stem>.svg`` for ``stacks_path``; return their paths."""
    folder = out or stacks_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    stacks = load(stacks_path)
    top = folder / f"{stacks_path.stem}-top.txt"
    top.write_text(summary(stacks))
    svg = folder / f"{stacks_path.stem}.svg"
    svg.write_text(flame_svg(stacks, title=title or stacks_path.stem))
    return [top, svg]


def keep(stacks_path: Path, out: Path) -> list[Path]:
    """Copy a run's stacks into ``out`` and write their summary and flame graph beside them."""
    if not stacks_path.is_file():
        return []
    out.mkdir(parents=True, exist_ok=True)
    kept = out / stacks_path.name
    kept.write_bytes(stacks_path.read_bytes())
    return [kept, *write(kept)]


def keep_apiserver(pprof_path: Path, out: Path) -> list[Path]:
    """Copy a kube-apiserver CPU profile into ``out`` with ``go tool pprof -top`` beside it
    (cumulative and flat), when Go is on PATH."""
    if not pprof_path.is_file():
        return []
    out.mkdir(parents=True, exist_ok=True)
    kept = out / pprof_path.name
    kept.write_bytes(pprof_path.read_bytes())
    go = shutil.which("go")
    if go is None:
        return [kept]
    top = kept.with_suffix(".top.txt")
    parts = []
    for order in ("-cum", "-flat"):
        run = subprocess.run(
            [go, "tool", "pprof", "-top", order, "-nodecount=80", str(kept)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        parts.append(run.stdout if run.returncode == 0 else run.stderr)
    top.write_text("\n".join(parts))
    return [kept, top]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("stacks", type=Path, help="py-spy record --format raw output")
    p.add_argument("--out", type=Path, default=None, help="folder (default: beside the stacks)")
    args = p.parse_args(argv)
    for path in write(args.stacks, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
