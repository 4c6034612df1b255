"""The patch algorithms of the apiserver: strategic merge, JSON merge (RFC 7386), JSON patch
(RFC 6902). An invalid patch raises :class:`ccm.kube.fake.status.Reply` with the apiserver's answer
(400 or 422)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccm.kube.fake.status import Obj, Reply, clone

__all__ = [
    "STRATEGIC_MERGE_KEYS",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
]

# Lists merged instead of replaced by a strategic merge patch: path -> merge key (None: set union).
STRATEGIC_MERGE_KEYS: dict[tuple[str, ...], str | None] = {
    ("metadata", "finalizers"): None,
    ("metadata", "ownerReferences"): "uid",
    ("spec", "podCIDRs"): None,
    ("spec", "ports"): "port",
    ("spec", "containers"): "name",
    ("status", "addresses"): "type",
    ("status", "conditions"): "type",
}

_DELETE = object()


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _smp_list(current: list[Any], patch: list[Any], key: str | None, path: tuple[str, ...]) -> Any:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [
            _strip_directives(p)
            for p in patch
            if not (isinstance(p, dict) and p.get("$patch") == "replace")
        ]
    if key is None:
        out = list(current)
        out.extend(clone(p) for p in patch if p not in out)
        return out
    out = clone(current)
    for item in patch:
        if not isinstance(item, dict):
            raise Reply(422, f"strategic merge patch: {'.'.join(path)} items must be objects")
        index = next(
            (
                i
                for i, el in enumerate(out)
                if isinstance(el, dict) and el.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            out = [el for el in out if not (isinstance(el, dict) and el.get(key) == item.get(key))]
        elif index is None:
            out.append(_strip_directives(item))
        else:
            out[index] = _smp(out[index], item, path)
    return out


def _smp(target: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "delete":
        return _DELETE
    if patch.get("$patch") == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field_name = key.split("/", 1)[1]
            if isinstance(result.get(field_name), list) and isinstance(value, list):
                result[field_name] = [v for v in result[field_name] if v not in value]
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = (*path, key)
        current = result.get(key)
        if isinstance(value, dict):
            merged = _smp(current, value, sub)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in STRATEGIC_MERGE_KEYS and isinstance(current, list):
            result[key] = _smp_list(current, value, STRATEGIC_MERGE_KEYS[sub], sub)
        else:
            result[key] = _strip_directives(clone(value))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def apply_strategic_merge_patch(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> Obj:
    """A strategic merge patch applied to a copy of ``obj`` (see the module docstring's limits)."""
    if not isinstance(patch, Mapping):
        raise Reply(400, "strategic merge patch must be a JSON object")
    result = _smp(clone(obj), dict(patch), ())
    if result is _DELETE or not isinstance(result, dict):
        raise Reply(422, "strategic merge patch deleted the whole object")
    return result


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def apply_merge_patch(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> Obj:
    """An RFC 7386 JSON merge patch applied to a copy of ``obj``."""
    if not isinstance(patch, Mapping):
        raise Reply(400, "merge patch must be a JSON object")
    result = _merge(clone(obj), dict(patch))
    assert isinstance(result, dict)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise Reply(422, f'json patch: invalid pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise Reply(422, f'json patch: path "{path}" does not exist')
    return cur


def _json_add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise Reply(422, f'json patch: invalid index in "{path}"')
    else:
        raise Reply(422, f'json patch: cannot add at "{path}"')
    return doc


def _json_remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        raise Reply(422, "json patch: cannot remove the whole document")
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise Reply(422, f'json patch: path "{path}" does not exist')


def apply_json_patch(obj: Mapping[str, Any], ops: list[Any]) -> Obj:
    """An RFC 6902 JSON patch applied to a copy of ``obj``."""
    if not isinstance(ops, list):
        raise Reply(400, "json patch must be a JSON array")
    doc: Any = clone(obj)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise Reply(422, f"json patch: invalid operation {op!r}")
        kind, path = op["op"], str(op["path"])
        parts = _pointer(path)
        if kind == "add":
            doc = _json_add(doc, parts, clone(op.get("value")), path)
        elif kind == "remove":
            _json_remove(doc, parts, path)
        elif kind == "replace":
            if parts:
                _json_remove(doc, parts, path)
            doc = _json_add(doc, parts, clone(op.get("value")), path)
        elif kind in ("move", "copy"):
            from_path = str(op.get("from", ""))
            from_parts = _pointer(from_path)
            if kind == "move":
                value = _json_remove(doc, from_parts, from_path)
            else:
                value = clone(_resolve(doc, from_parts, from_path))
            doc = _json_add(doc, parts, value, path)
        elif kind == "test":
            if _resolve(doc, parts, path) != op.get("value"):
                raise Reply(422, f'json patch: test failed at "{path}"')
        else:
            raise Reply(422, f'json patch: unknown op "{kind}"')
    if not isinstance(doc, dict):
        raise Reply(422, "json patch: the result is not an object")
    return doc
