"""Label and field selectors, as the apiserver matches them on list and watch."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ccm.kube.fake.status import Reply

__all__ = ["match_field_selector", "match_label_selector"]

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\((.*)\)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def match_label_selector(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` match a label selector string (``a=b,c!=d,e in (f,g),!h,i``)."""
    if not selector:
        return True
    labels = labels or {}
    for req in _split_requirements(selector):
        if m := _SET_RE.match(req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def match_field_selector(selector: str | None, obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` matches a field selector (``metadata.name=x,spec.unschedulable!=true``)."""
    if not selector:
        return True
    for req in _split_requirements(selector):
        if "!=" in req:
            path, value = (s.strip() for s in req.split("!=", 1))
            if _field_value(obj, path) == value:
                return False
        elif "=" in req:
            path, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if _field_value(obj, path) != value:
                return False
        else:
            raise Reply(400, f'invalid field selector requirement "{req}"')
    return True
