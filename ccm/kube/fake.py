"""An in-memory Kubernetes apiserver and the :class:`FakeKubeClient` built on it, for unit tests.

Ports the role of client-go's ``kubernetes/fake`` clientset (recorded actions, injectable errors,
reactors, a working watch) but keeps the real request path: :class:`FakeKubeClient` *is* a
:class:`ccm.kube.client.KubeClient` whose transport is :class:`FakeApiServer`, so paths, query
parameters, JSON encoding, error translation (a ``Status`` body → :class:`ccm.errors.NotFoundError`
…) and watch decoding are the production code. Objects cross the boundary as JSON: nothing a test or
a controller does to a returned dict can change the stored object.

Use it with the real :class:`ccm.kube.informer.Informer`::

    kube = FakeKubeClient()
    kube.put_object(client.NODES, {"metadata": {"name": "n1"}})   # seed; no action recorded
    nodes = informer.Informer(kube, client.NODES)
    ...                                                          # run the controller
    assert ("patch", "nodes", "n1", "status") in kube.actions
    kube.inject_error("patch", "nodes", 409, times=1)            # next patch of a node conflicts
    kube.get_object(client.NODES, "n1")                          # the stored object (a copy)

``actions`` holds ``Action(verb, resource, name, subresource)`` tuples with Kubernetes verbs:
``get list watch create update patch delete`` (``replace()`` is ``update``). ``requests`` holds the
full :class:`FakeRequest` (namespace, decoded body, patch type, query, User-Agent).

What it does like the apiserver: resourceVersion from one global counter (a no-op write keeps it);
uid, creationTimestamp, generation; 404 NotFound, 409 AlreadyExists, 409 Conflict on a stale
``metadata.resourceVersion`` (update, and patches that carry one); the ``status`` subresource of
nodes, services and namespaces (main writes keep the old status, status writes change only
status); finalizers (delete sets ``deletionTimestamp``; removing the last finalizer deletes; no new
finalizers while deleting); label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
``!key``) and field selectors (``=``, ``==``, ``!=`` on any dotted path) for list and watch; paged
lists (``limit``/``continue``; an expired token gives 410); watch from a resourceVersion with the
history of events, 410 Expired for one older than :meth:`FakeApiServer.compact`, ``""``/``"0"`` for
synthetic ADDED events, bookmarks on :meth:`FakeApiServer.send_bookmarks`, server-side
``timeoutSeconds`` on the loop clock; ``serviceaccounts/token``, TokenReview (not authenticated)
and SubjectAccessReview (allowed) answered by default reactors; ``/healthz``, ``/readyz``,
``/livez``, ``/version``.

Limits (by design): no admission, defaulting or validation beyond the above (objects may be
created in namespaces that do not exist; create keeps a given status); lists ignore
``resourceVersion`` and pages are not a snapshot; strategic merge patch knows the merge keys
controllers use — ``metadata.finalizers`` (set), ``metadata.ownerReferences`` (uid),
``spec.podCIDRs`` (set), ``spec.ports`` (port), ``spec.containers`` (name), ``status.addresses``
and ``status.conditions`` (type) — every other list is replaced, as for ``spec.taints`` upstream;
it honours ``null``, ``$patch: replace|delete``, ``$retainKeys`` and
``$deleteFromPrimitiveList`` and ignores ``$setElementOrder``; server-side apply is approximated
by a strategic merge of the applied object (creating it if absent), without field ownership;
JSON patch supports add, remove, replace, move, copy and test.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

import orjson

from ccm import clock, errors
from ccm.kube import client as kclient

__all__ = [
    "Action",
    "FakeApiServer",
    "FakeKubeClient",
    "FakeRequest",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "match_field_selector",
    "match_label_selector",
]

Obj = dict[str, Any]
_T = TypeVar("_T")

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

DEFAULT_RESOURCES: tuple[kclient.Resource, ...] = (
    kclient.NODES,
    kclient.SERVICES,
    kclient.EVENTS,
    kclient.NAMESPACES,
    kclient.CONFIGMAPS,
    kclient.SECRETS,
    kclient.SERVICEACCOUNTS,
    kclient.ENDPOINTS,
    kclient.LEASES,
    kclient.TOKENREVIEWS,
    kclient.SUBJECTACCESSREVIEWS,
)
_STATUS_SUBRESOURCE = frozenset({"nodes", "services", "namespaces", "pods"})
_VIRTUAL = frozenset({"tokenreviews", "subjectaccessreviews"})  # create-only, never stored

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _clone(obj: _T) -> _T:
    """A deep copy (through JSON, which is what the apiserver stores anyway)."""
    copied: _T = orjson.loads(orjson.dumps(obj))
    return copied


def _status(code: int, message: str, reason: str | None = None, **details: Any) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason if reason is not None else _REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class _Reply(Exception):  # internal control flow: "answer with this Status"
    def __init__(self, code: int, message: str, reason: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.body = _status(code, message, reason, **details)


def _qualified(res: kclient.Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _not_found(res: kclient.Resource, name: str) -> _Reply:
    return _Reply(404, f'{_qualified(res)} "{name}" not found', name=name, kind=res.plural)


def _conflict(res: kclient.Resource, name: str) -> _Reply:
    return _Reply(
        409,
        f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        name=name,
        kind=res.plural,
    )


# -- selectors ---------------------------------------------------------------------------------

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
            raise _Reply(400, f'invalid field selector requirement "{req}"')
    return True


# -- patches -----------------------------------------------------------------------------------

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
        out.extend(_clone(p) for p in patch if p not in out)
        return out
    out = _clone(current)
    for item in patch:
        if not isinstance(item, dict):
            raise _Reply(422, f"strategic merge patch: {'.'.join(path)} items must be objects")
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
        return _clone(patch)
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
            result[key] = _strip_directives(_clone(value))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def apply_strategic_merge_patch(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> Obj:
    """A strategic merge patch applied to a copy of ``obj`` (see the module docstring's limits)."""
    if not isinstance(patch, Mapping):
        raise _Reply(400, "strategic merge patch must be a JSON object")
    result = _smp(_clone(obj), dict(patch), ())
    if result is _DELETE or not isinstance(result, dict):
        raise _Reply(422, "strategic merge patch deleted the whole object")
    return result


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return _clone(patch)
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
        raise _Reply(400, "merge patch must be a JSON object")
    result = _merge(_clone(obj), dict(patch))
    assert isinstance(result, dict)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _Reply(422, f'json patch: invalid pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise _Reply(422, f'json patch: path "{path}" does not exist')
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
            raise _Reply(422, f'json patch: invalid index in "{path}"')
    else:
        raise _Reply(422, f'json patch: cannot add at "{path}"')
    return doc


def _json_remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        raise _Reply(422, "json patch: cannot remove the whole document")
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _Reply(422, f'json patch: path "{path}" does not exist')


def apply_json_patch(obj: Mapping[str, Any], ops: list[Any]) -> Obj:
    """An RFC 6902 JSON patch applied to a copy of ``obj``."""
    if not isinstance(ops, list):
        raise _Reply(400, "json patch must be a JSON array")
    doc: Any = _clone(obj)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _Reply(422, f"json patch: invalid operation {op!r}")
        kind, path = op["op"], str(op["path"])
        parts = _pointer(path)
        if kind == "add":
            doc = _json_add(doc, parts, _clone(op.get("value")), path)
        elif kind == "remove":
            _json_remove(doc, parts, path)
        elif kind == "replace":
            if parts:
                _json_remove(doc, parts, path)
            doc = _json_add(doc, parts, _clone(op.get("value")), path)
        elif kind in ("move", "copy"):
            from_path = str(op.get("from", ""))
            from_parts = _pointer(from_path)
            if kind == "move":
                value = _json_remove(doc, from_parts, from_path)
            else:
                value = _clone(_resolve(doc, from_parts, from_path))
            doc = _json_add(doc, parts, value, path)
        elif kind == "test":
            if _resolve(doc, parts, path) != op.get("value"):
                raise _Reply(422, f'json patch: test failed at "{path}"')
        else:
            raise _Reply(422, f'json patch: unknown op "{kind}"')
    if not isinstance(doc, dict):
        raise _Reply(422, "json patch: the result is not an object")
    return doc


# -- requests, actions, faults -----------------------------------------------------------------


class Action(NamedTuple):
    """One recorded API call: ``("patch", "nodes", "n1", "status")``."""

    verb: str
    resource: str
    name: str | None = None
    subresource: str | None = None


@dataclasses.dataclass(slots=True)
class FakeRequest:
    """Everything about one request the fake received."""

    verb: str
    resource: str  # plural ("" for non-resource paths)
    name: str | None
    subresource: str | None
    namespace: str | None
    group: str
    method: str
    path: str
    query: dict[str, str]
    body: Any  # decoded JSON (or None)
    patch_type: str | None
    user_agent: str
    authorization: str = ""  # the Authorization header, when the client sent one

    @property
    def action(self) -> Action:
        """The recorded action; a create names the object it creates (from its body)."""
        name = self.name
        if name is None and self.verb == "create" and isinstance(self.body, dict):
            meta = self.body.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
        return Action(self.verb, self.resource, name or None, self.subresource)


# A reactor answers a request itself: return a dict (the response body), or None to fall through.
# Raising an ApiError answers with its Status; raising KubeError simulates a transport failure.
Reactor = Callable[[FakeRequest], Obj | None]


@dataclasses.dataclass(slots=True)
class _Fault:
    verb: str
    resource: str
    error: errors.KubeError
    name: str | None
    subresource: str | None
    times: int | None

    def matches(self, req: FakeRequest) -> bool:
        return (
            self.verb in ("*", req.verb)
            and self.resource in ("*", req.resource)
            and (self.name is None or self.name == req.action.name)
            and (self.subresource is None or self.subresource == (req.subresource or ""))
        )


def _error_status(error: errors.ApiError) -> tuple[int, Obj]:
    code = error.status_code or 500
    body = dict(error.body) if error.body else {}
    body.setdefault("kind", "Status")
    body.setdefault("apiVersion", "v1")
    body.setdefault("status", "Failure")
    body.setdefault("message", error.message or f"injected HTTP {code}")
    body.setdefault("reason", error.reason or _REASONS.get(code, ""))
    body.setdefault("code", code)
    return code, body


@dataclasses.dataclass(slots=True)
class _LogEntry:
    rv: int
    resource: kclient.Resource
    type: str
    obj: Obj
    old: Obj | None


class _Watcher:
    def __init__(
        self,
        server: FakeApiServer,
        res: kclient.Resource,
        *,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        bookmarks: bool,
    ) -> None:
        self.server = server
        self.resource = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.bookmarks = bookmarks
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def _matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return match_label_selector(self.label_selector, meta.get("labels")) and (
            match_field_selector(self.field_selector, obj)
        )

    def offer(self, entry: _LogEntry) -> None:
        if entry.resource != self.resource:
            return
        new_in = self._matches(entry.obj)
        old_in = self._matches(entry.old) if entry.old is not None else False
        etype = entry.type
        if etype == "DELETED":
            if not (new_in or old_in):
                return
        elif new_in and not old_in:
            etype = "ADDED"
        elif old_in and not new_in:
            etype = "DELETED"
        elif not new_in:
            return
        self.send({"type": etype, "object": entry.obj})

    def send(self, event: Mapping[str, Any]) -> None:
        self.queue.put_nowait(orjson.dumps(event) + b"\n")

    def close(self) -> None:
        self.queue.put_nowait(None)


class _WatchResponse(kclient.HttpResponse):
    def __init__(self, watcher: _Watcher, timeout: float) -> None:
        self.status = 200
        self.headers = {"content-type": "application/json"}
        self._watcher = watcher
        self._timeout = timeout

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        deadline = clock.monotonic() + self._timeout
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    chunk = await self._watcher.queue.get()
            except TimeoutError:
                return
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        self._watcher.server._watchers.discard(self._watcher)


def _json_response(code: int, body: Any) -> kclient.BufferedResponse:
    return kclient.BufferedResponse(code, orjson.dumps(body), {"content-type": "application/json"})


class FakeApiServer(kclient.Transport):
    """An in-memory apiserver behind the :class:`ccm.kube.client.Transport` interface."""

    def __init__(
        self,
        *,
        resources: Iterable[kclient.Resource] = DEFAULT_RESOURCES,
        max_history: int = 10_000,
    ) -> None:
        self.host = "https://fake-apiserver.invalid"
        self._resources: dict[tuple[str, str, str], kclient.Resource] = {}
        self._status_sub: set[kclient.Resource] = set()
        for res in resources:
            self.register(res)
        self._objects: dict[kclient.Resource, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._log: list[_LogEntry] = []
        self._compacted = 0
        self._max_history = max_history
        self._watchers: set[_Watcher] = set()
        self._faults: list[_Fault] = []
        self._reactors: list[tuple[str, str, Reactor]] = []
        self._names = itertools.count(1)
        self.requests: list[FakeRequest] = []
        self.latency: float = 0.0  # seconds each request takes on the loop clock

    # -- set-up and inspection ------------------------------------------------------------------

    def register(self, res: kclient.Resource, *, status_subresource: bool | None = None) -> None:
        """Serve another resource (the defaults are ccm.kube.client's constants)."""
        self._resources[(res.group, res.version, res.plural)] = res
        if status_subresource or (status_subresource is None and res.plural in _STATUS_SUBRESOURCE):
            self._status_sub.add(res)

    @property
    def resource_version(self) -> int:
        """The current (latest) resourceVersion."""
        return self._rv

    @property
    def actions(self) -> list[Action]:
        return [r.action for r in self.requests]

    def clear_actions(self) -> None:
        self.requests.clear()

    def inject_error(
        self,
        verb: str,
        resource: str,
        error: errors.KubeError | int,
        *,
        name: str | None = None,
        subresource: str | None = None,
        times: int | None = None,
    ) -> None:
        """Fail matching requests: ``error`` is an HTTP status, an ApiError (answered as its
        Status), or another KubeError (raised as a transport failure). ``verb``/``resource`` may
        be ``"*"``; ``subresource=""`` matches only the main resource; ``times=None``: forever."""
        if isinstance(error, int):
            error = errors.api_error_for_status(
                error, {"message": f"injected HTTP {error}", "reason": _REASONS.get(error, "")}
            )
        self._faults.append(_Fault(verb, resource, error, name, subresource, times))

    def clear_errors(self) -> None:
        self._faults.clear()

    def add_reactor(self, verb: str, resource: str, reactor: Reactor) -> None:
        """Answer matching requests with ``reactor`` first (newest reactor first)."""
        self._reactors.insert(0, (verb, resource, reactor))

    def put_object(self, res: kclient.Resource, obj: Mapping[str, Any]) -> Obj:
        """Create or overwrite an object as someone else would (kubelet, a user): no action is
        recorded, watchers see ADDED/MODIFIED, status and finalizers are taken as given, a
        namespaced object without a namespace goes to ``default``. Returns a copy."""
        body: Obj = _clone(dict(obj))
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ValueError("put_object needs metadata.name")
        ns = meta.get("namespace") if res.namespaced else None
        if res.namespaced and not ns:
            ns = meta["namespace"] = "default"
        old = self._objects.get(res, {}).get((ns or "", name))
        if old is None:
            stored = self._create_object(res, body, ns)
        else:
            meta.pop("resourceVersion", None)
            stored = self._store_update(res, old, body, check_rv=False, full=True)
        return _clone(stored)

    def remove_object(self, res: kclient.Resource, name: str, namespace: str | None = None) -> bool:
        """Delete an object at once (ignoring finalizers), as someone else would."""
        old = self._objects.get(res, {}).get((namespace or "", name))
        if old is None:
            return False
        self._remove(res, old)
        return True

    def get_object(
        self, res: kclient.Resource, name: str, namespace: str | None = None
    ) -> Obj | None:
        obj = self._objects.get(res, {}).get((namespace or "", name))
        return _clone(obj) if obj is not None else None

    def list_objects(self, res: kclient.Resource, namespace: str | None = None) -> list[Obj]:
        items = sorted(self._objects.get(res, {}).items())
        return [_clone(o) for (ns, _), o in items if namespace is None or ns == namespace]

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: watches from, and continue tokens
        of, resourceVersions older than the current one get 410 Gone."""
        self._compacted = self._rv
        self._log.clear()

    def close_watches(self, error: errors.ApiError | None = None) -> int:
        """End every open watch (as a server timeout would), or send ``error`` as an ERROR event
        first. Returns how many watches were closed."""
        watchers = list(self._watchers)
        for w in watchers:
            if error is not None:
                w.send({"type": "ERROR", "object": _error_status(error)[1]})
            w.close()
        self._watchers.clear()
        return len(watchers)

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to watches that allow them."""
        for w in self._watchers:
            if w.bookmarks:
                w.send(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": w.resource.kind,
                            "apiVersion": w.resource.api_version,
                            "metadata": {"resourceVersion": str(self._rv)},
                        },
                    }
                )

    @property
    def watch_count(self) -> int:
        """Watches open right now."""
        return len(self._watchers)

    async def aclose(self) -> None:
        self.close_watches()

    # -- storage ---------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, res: kclient.Resource, etype: str, obj: Obj, old: Obj | None) -> None:
        entry = _LogEntry(self._rv, res, etype, obj, old)
        self._log.append(entry)
        if len(self._log) > self._max_history:
            dropped = self._log[: len(self._log) - self._max_history]
            del self._log[: len(dropped)]
            self._compacted = dropped[-1].rv
        for w in list(self._watchers):
            w.offer(entry)

    def _create_object(self, res: kclient.Resource, body: Obj, ns: str | None) -> Obj:
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        body["kind"] = res.kind
        body["apiVersion"] = res.api_version
        meta = body["metadata"]
        if res.namespaced:
            meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = clock.now_rfc3339()
        meta["generation"] = 1
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(key, None)
        meta["resourceVersion"] = str(self._next_rv())
        self._objects.setdefault(res, {})[(ns or "", meta["name"])] = body
        self._record(res, "ADDED", body, None)
        return body

    def _remove(self, res: kclient.Resource, old: Obj) -> Obj:
        meta = old["metadata"]
        del self._objects[res][(meta.get("namespace") or "", meta["name"])]
        gone = _clone(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._record(res, "DELETED", gone, old)
        return gone

    def _store_update(
        self,
        res: kclient.Resource,
        old: Obj,
        new: Obj,
        *,
        check_rv: bool = True,
        subresource: str | None = None,
        full: bool = False,
    ) -> Obj:
        """Validate and store ``new`` as the next version of ``old``; returns what is stored.

        ``full``: replace status and deletion state too (put_object, not an API write).
        """
        old_meta = old["metadata"]
        name = old_meta["name"]
        new_meta = new.setdefault("metadata", {})
        if not isinstance(new_meta, dict):
            raise _Reply(400, "metadata must be an object")
        rv = new_meta.get("resourceVersion")
        if check_rv and rv and rv != old_meta.get("resourceVersion"):
            raise _conflict(res, name)
        if new_meta.get("name", name) != name:
            raise _Reply(
                400,
                f"the name of the object ({new_meta.get('name')}) does not match "
                f"the name on the URL ({name})",
            )
        if subresource == "status":
            # As the apiserver's status strategies: spec is reset to the old one, status and
            # metadata changes (labels, annotations, finalizers) are kept. This is how upstream
            # controllers write the load-balancer finalizer through services/status.
            stored = _clone(old)
            if "status" in new:
                stored["status"] = new["status"]
            else:
                stored.pop("status", None)
            for key in ("labels", "annotations", "finalizers", "ownerReferences"):
                if key in new_meta:
                    stored["metadata"][key] = new_meta[key]
                else:
                    stored["metadata"].pop(key, None)
            new = stored
            new_meta = new["metadata"]
        elif full:
            for key in ("uid", "creationTimestamp", "namespace"):
                if key in old_meta:
                    new_meta[key] = old_meta[key]
            new_meta["name"] = name
        else:
            if res in self._status_sub:
                if "status" in old:
                    new["status"] = _clone(old["status"])
                else:
                    new.pop("status", None)
            for key in (
                "uid",
                "creationTimestamp",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if key in old_meta:
                    new_meta[key] = old_meta[key]
                else:
                    new_meta.pop(key, None)
            new_meta["name"] = name
            if new.get("spec") != old.get("spec"):
                new_meta["generation"] = int(old_meta.get("generation") or 0) + 1
        new["kind"] = res.kind
        new["apiVersion"] = res.api_version
        new_meta["resourceVersion"] = old_meta.get("resourceVersion")
        new_meta.pop("managedFields", None)
        if old_meta.get("deletionTimestamp") and not full:
            added = set(new_meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
            if added:
                raise _Reply(
                    422,
                    f'{res.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new '
                    "finalizers can be added if the object is being deleted",
                )
        if new == old:
            return old  # a no-op write keeps the resourceVersion and sends no event
        if old_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            self._objects[res][(old_meta.get("namespace") or "", name)] = new
            return self._remove(res, new)
        new_meta["resourceVersion"] = str(self._next_rv())
        self._objects[res][(old_meta.get("namespace") or "", name)] = new
        self._record(res, "MODIFIED", new, old)
        return new

    # -- the HTTP side ---------------------------------------------------------------------------

    def _parse(
        self, method: str, path: str, query: dict[str, str]
    ) -> tuple[kclient.Resource | None, FakeRequest]:
        from urllib.parse import unquote

        segs = [unquote(s) for s in path.strip("/").split("/")]
        group = version = ""
        rest: list[str] | None = None
        if len(segs) >= 2 and segs[0] == "api":
            version, rest = segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        ns: str | None = None
        plural = ""
        name: str | None = None
        sub: str | None = None
        res: kclient.Resource | None = None
        if rest:
            if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
                ns, rest = rest[1], rest[2:]
            plural = rest[0]
            name = rest[1] if len(rest) > 1 else None
            sub = "/".join(rest[2:]) if len(rest) > 2 else None
            res = self._resources.get((group, version, plural))
        if name is None and method == "GET":
            verb = "watch" if query.get("watch") in ("true", "1") else "list"
        elif name is None and method == "DELETE":
            verb = "deletecollection"
        else:
            verb = {
                "GET": "get",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }.get(method, method.lower())
        req = FakeRequest(
            verb=verb,
            resource=plural,
            name=name,
            subresource=sub,
            namespace=ns,
            group=group,
            method=method,
            path=path,
            query=query,
            body=None,
            patch_type=None,
            user_agent="",
        )
        return res, req

    async def send(self, request: kclient.HttpRequest) -> kclient.HttpResponse:
        await asyncio.sleep(self.latency)  # a real request always yields to the loop
        query = dict(request.query)
        res, req = self._parse(request.method, request.path, query)
        req.user_agent = request.headers.get("User-Agent", "")
        req.authorization = request.headers.get("Authorization", "")
        content_type = request.headers.get("Content-Type", "")
        if request.body:
            try:
                req.body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                return _json_response(400, _status(400, "request body is not valid JSON"))
        for kind, ctype in kclient.PATCH_CONTENT_TYPES.items():
            if request.method == "PATCH" and content_type == ctype:
                req.patch_type = kind
        self.requests.append(req)
        try:
            for fault in list(self._faults):
                if fault.matches(req):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    raise fault.error
            for verb, plural, reactor in self._reactors:
                if verb in ("*", req.verb) and plural in ("*", req.resource):
                    answer = reactor(req)
                    if answer is not None:
                        return _json_response(201 if req.verb == "create" else 200, answer)
            if res is None:
                return self._non_resource(request, req)
            return self._serve(res, req, request)
        except errors.ApiError as exc:
            code, body = _error_status(exc)
            return _json_response(code, body)
        except _Reply as reply:
            return _json_response(reply.code, reply.body)

    def _non_resource(self, request: kclient.HttpRequest, req: FakeRequest) -> kclient.HttpResponse:
        path = request.path.rstrip("/")
        if request.method == "GET" and path in ("/healthz", "/readyz", "/livez"):
            return kclient.BufferedResponse(200, b"ok", {"content-type": "text/plain"})
        if request.method == "GET" and path == "/version":
            return _json_response(
                200, {"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake", "platform": ""}
            )
        raise _Reply(404, "the server could not find the requested resource")

    def _serve(
        self, res: kclient.Resource, req: FakeRequest, request: kclient.HttpRequest
    ) -> kclient.HttpResponse:
        if res.namespaced and req.name is not None and req.namespace is None:
            raise _Reply(404, "the server could not find the requested resource")
        if not res.namespaced and req.namespace is not None:
            raise _Reply(404, "the server could not find the requested resource")
        if res.namespaced and req.namespace is None and req.verb == "create":
            raise _Reply(405, "the server does not allow this method on the requested resource")
        if req.subresource is not None:
            allowed = (req.subresource == "status" and res in self._status_sub) or (
                res.plural == "serviceaccounts" and req.subresource == "token"
            )
            if not allowed:
                raise _Reply(404, "the server could not find the requested resource")
        handler = {
            "get": self._get,
            "list": self._list,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
        }.get(req.verb)
        if req.verb == "watch":
            return self._watch(res, req)
        if handler is None:
            raise _Reply(405, f"{req.verb} is not supported by the fake apiserver")
        code, body = handler(res, req)
        return _json_response(code, body)

    def _lookup(self, res: kclient.Resource, req: FakeRequest) -> Obj:
        assert req.name is not None
        obj = self._objects.get(res, {}).get((req.namespace or "", req.name))
        if obj is None:
            raise _not_found(res, req.name)
        return obj

    def _get(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        return 200, self._lookup(res, req)

    def _list(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        q = req.query
        items = [
            (key, obj)
            for key, obj in sorted(self._objects.get(res, {}).items())
            if (req.namespace is None or key[0] == req.namespace)
            and match_label_selector(q.get("labelSelector"), obj["metadata"].get("labels"))
            and match_field_selector(q.get("fieldSelector"), obj)
        ]
        list_rv = self._rv
        token = q.get("continue")
        if token:
            try:
                state = orjson.loads(base64.urlsafe_b64decode(token.encode()))
                list_rv, after = int(state["rv"]), tuple(state["after"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _Reply(400, f"invalid continue token: {exc}") from exc
            if list_rv < self._compacted:
                raise _Reply(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                    reason="Expired",
                )
            items = [(k, o) for k, o in items if k > after]
        meta: Obj = {"resourceVersion": str(list_rv)}
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last_key = items[limit - 1][0]
            meta["continue"] = base64.urlsafe_b64encode(
                orjson.dumps({"rv": list_rv, "after": list(last_key)})
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        body = {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": [
                {k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for _, o in items
            ],
        }
        return 200, body

    def _watch(self, res: kclient.Resource, req: FakeRequest) -> kclient.HttpResponse:
        q = req.query
        watcher = _Watcher(
            self,
            res,
            namespace=req.namespace,
            label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"),
            bookmarks=q.get("allowWatchBookmarks") == "true",
        )
        timeout = float(q.get("timeoutSeconds") or 1800)
        match_field_selector(watcher.field_selector, {})  # a bad selector fails the request
        rv_text = q.get("resourceVersion") or ""
        if rv_text in ("", "0"):
            for _, obj in sorted(self._objects.get(res, {}).items()):
                if watcher._matches(obj):
                    watcher.send({"type": "ADDED", "object": obj})
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise _Reply(400, f'invalid resourceVersion "{rv_text}"') from exc
            if since < self._compacted:
                watcher.send(
                    {
                        "type": "ERROR",
                        "object": _status(
                            410,
                            f"too old resource version: {since} ({self._compacted})",
                            reason="Expired",
                        ),
                    }
                )
                watcher.close()
                return _WatchResponse(watcher, timeout)
            for entry in self._log:
                if entry.rv > since:
                    watcher.offer(entry)
        self._watchers.add(watcher)
        return _WatchResponse(watcher, timeout)

    def _create(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        body = req.body
        if not isinstance(body, dict):
            raise _Reply(400, "the body of a create must be a JSON object")
        if req.subresource == "token":
            sa = self._lookup(res, req)
            exp = int(((body.get("spec") or {}).get("expirationSeconds")) or 3600)
            return 201, {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa["metadata"]["name"], "namespace": req.namespace},
                "spec": body.get("spec") or {},
                "status": {
                    "token": f"fake-token-{req.namespace}-{sa['metadata']['name']}",
                    "expirationTimestamp": clock.now_rfc3339(),
                    "expirationSeconds": exp,
                },
            }
        if req.name is not None:
            raise _Reply(405, "POST is not allowed on a named object")
        if res.plural in _VIRTUAL:
            out = _clone(body)
            if res.plural == "tokenreviews":
                out["status"] = {"authenticated": False}
            else:
                out["status"] = {"allowed": True}
            return 201, out
        body = _clone(body)
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Reply(400, "metadata must be an object")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != req.namespace:
            raise _Reply(
                400,
                "the namespace of the provided object does not match the namespace sent "
                "on the request",
            )
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise _Reply(
                    422,
                    f"{res.kind} is invalid: metadata.name: Required value: name or "
                    "generateName is required",
                )
            name = meta["name"] = f"{prefix}{next(self._names):05x}"
        if (req.namespace or "", name) in self._objects.get(res, {}):
            raise _Reply(
                409,
                f'{_qualified(res)} "{name}" already exists',
                reason="AlreadyExists",
                name=name,
                kind=res.plural,
            )
        meta.pop("resourceVersion", None)
        return 201, self._create_object(res, body, req.namespace)

    def _update(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        if not isinstance(req.body, dict):
            raise _Reply(400, "the body of an update must be a JSON object")
        old = self._lookup(res, req)
        body = _clone(req.body)
        return 200, self._store_update(res, old, body, subresource=req.subresource)

    def _patch(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        assert req.name is not None
        patch = req.body
        key = (req.namespace or "", req.name)
        old = self._objects.get(res, {}).get(key)
        if req.patch_type == "apply":
            if not req.query.get("fieldManager"):
                raise _Reply(422, "PatchOptions is invalid: fieldManager: Required value")
            if old is None:
                if not isinstance(patch, dict):
                    raise _Reply(400, "an apply patch must be a JSON object")
                body = _clone(patch)
                body.setdefault("metadata", {})["name"] = req.name
                body["metadata"].pop("resourceVersion", None)
                return 201, self._create_object(res, body, req.namespace)
        if old is None:
            raise _not_found(res, req.name)
        if req.patch_type == "json":
            new = apply_json_patch(old, patch)
        elif req.patch_type == "merge":
            new = apply_merge_patch(old, patch)
        elif req.patch_type in ("strategic", "apply"):
            new = apply_strategic_merge_patch(old, patch)
        else:
            raise _Reply(415, "unsupported patch content type")
        # A resourceVersion in the patched result is a precondition, as on the apiserver.
        new_rv = (new.get("metadata") or {}).get("resourceVersion")
        if new_rv and new_rv != old["metadata"].get("resourceVersion"):
            raise _conflict(res, req.name)
        return 200, self._store_update(res, old, new, subresource=req.subresource)

    def _delete(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        assert req.name is not None
        old = self._lookup(res, req)
        meta = old["metadata"]
        options = req.body if isinstance(req.body, dict) else {}
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != meta.get("uid")) or (
            pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion")
        ):
            raise _Reply(
                409,
                f'Operation cannot be fulfilled on {_qualified(res)} "{req.name}": Precondition '
                "failed",
                name=req.name,
                kind=res.plural,
            )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return 200, old
            new = _clone(old)
            new["metadata"]["deletionTimestamp"] = clock.now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            self._objects[res][(req.namespace or "", req.name)] = new
            self._record(res, "MODIFIED", new, old)
            return 200, new
        self._remove(res, old)
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": req.name, "kind": res.plural, "uid": meta.get("uid")},
        }


class FakeKubeClient(kclient.KubeClient):
    """A :class:`ccm.kube.client.KubeClient` over an in-memory :class:`FakeApiServer`.

    No client-side throttling unless ``qps`` is given. :meth:`for_component` clients share the
    server (and so the recorded actions; ``requests[i].user_agent`` tells them apart).
    """

    def __init__(
        self,
        *,
        server: FakeApiServer | None = None,
        qps: float = 0.0,
        burst: int = 1,
        user_agent: str = "ccm",
        request_timeout: float = 30.0,
    ) -> None:
        self.server = server if server is not None else FakeApiServer()
        super().__init__(
            self.server,
            qps=qps,
            burst=burst,
            user_agent=user_agent,
            request_timeout=request_timeout,
        )

    # Conveniences, all delegating to the server.

    @property
    def actions(self) -> list[Action]:
        """``Action(verb, resource, name, subresource)`` of every request so far."""
        return self.server.actions

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def writes(self) -> list[Action]:
        """The actions that change something (create, update, patch, delete)."""
        return [a for a in self.server.actions if a.verb in WRITE_VERBS]

    def clear_actions(self) -> None:
        self.server.clear_actions()

    def inject_error(
        self,
        verb: str,
        resource: str,
        error: errors.KubeError | int,
        *,
        name: str | None = None,
        subresource: str | None = None,
        times: int | None = None,
    ) -> None:
        self.server.inject_error(
            verb, resource, error, name=name, subresource=subresource, times=times
        )

    def clear_errors(self) -> None:
        self.server.clear_errors()

    def add_reactor(self, verb: str, resource: str, reactor: Reactor) -> None:
        self.server.add_reactor(verb, resource, reactor)

    def put_object(self, res: kclient.Resource, obj: Mapping[str, Any]) -> Obj:
        return self.server.put_object(res, obj)

    def remove_object(self, res: kclient.Resource, name: str, namespace: str | None = None) -> bool:
        return self.server.remove_object(res, name, namespace)

    def get_object(
        self, res: kclient.Resource, name: str, namespace: str | None = None
    ) -> Obj | None:
        return self.server.get_object(res, name, namespace)

    def list_objects(self, res: kclient.Resource, namespace: str | None = None) -> list[Obj]:
        return self.server.list_objects(res, namespace)
