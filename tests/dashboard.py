"""Helpers of the dashboard tests: the PromQL of docs/dashboard/ccm.json and the metric names it
uses, and the names a ``/metrics`` page serves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "dashboard" / "ccm.json"

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan"}
)
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def load(path: Path) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and templating queries."""
    doc: dict[str, Any] = json.loads(path.read_text())
    for panel in doc["panels"]:
        for target in panel.get("targets", ()):
            yield str(target["expr"])
    for var in doc.get("templating", {}).get("list", ()):
        if var.get("type") == "query":
            yield str(var["query"]).removeprefix("label_values(").rsplit(",", 1)[0]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names and
    durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group(0)
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def exposed_names(body: str) -> set[str]:
    """The series names a Prometheus text page serves, including those of families without a
    sample yet (a labelled counter not incremented so far shows only its HELP and TYPE)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum"),
    }
    names: set[str] = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            names.update(name + s for s in suffixes.get(kind, ()))
        elif line and not line.startswith("#"):
            names.add(_IDENT.match(line).group(0))  # type: ignore[union-attr]
    return names
