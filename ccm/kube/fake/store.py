"""What the fake apiserver remembers: objects by resource, resourceVersions, the event history, the
open watches; and the records of the requests it received."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, NamedTuple

import orjson

from ccm import clock, errors
from ccm.kube import client as kclient
from ccm.kube.fake.selectors import match_field_selector, match_label_selector
from ccm.kube.fake.status import Obj, Reply, clone, conflict, error_status

__all__ = ["Action", "FakeRequest", "Fault", "LogEntry", "Reactor", "Store", "Watcher"]

STATUS_SUBRESOURCE = frozenset({"nodes", "services", "namespaces", "pods"})


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
class Fault:
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


@dataclasses.dataclass(slots=True)
class LogEntry:
    rv: int
    resource: kclient.Resource
    type: str
    obj: Obj
    old: Obj | None


class Watcher:
    def __init__(
        self,
        server: Store,
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

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return match_label_selector(self.label_selector, meta.get("labels")) and (
            match_field_selector(self.field_selector, obj)
        )

    def offer(self, entry: LogEntry) -> None:
        if entry.resource != self.resource:
            return
        new_in = self.matches(entry.obj)
        old_in = self.matches(entry.old) if entry.old is not None else False
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


class WatchResponse(kclient.HttpResponse):
    def __init__(self, watcher: Watcher, timeout: float) -> None:
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


class Store:
    """The storage half of :class:`ccm.kube.fake.server.FakeApiServer`."""

    def __init__(self, *, max_history: int) -> None:
        self._resources: dict[tuple[str, str, str], kclient.Resource] = {}
        self._status_sub: set[kclient.Resource] = set()
        self._objects: dict[kclient.Resource, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._log: list[LogEntry] = []
        self._compacted = 0
        self._max_history = max_history
        self._watchers: set[Watcher] = set()

    def register(self, res: kclient.Resource, *, status_subresource: bool | None = None) -> None:
        """Serve another resource (the defaults are ccm.kube.client's constants)."""
        self._resources[(res.group, res.version, res.plural)] = res
        if status_subresource or (status_subresource is None and res.plural in STATUS_SUBRESOURCE):
            self._status_sub.add(res)

    @property
    def resource_version(self) -> int:
        """The current (latest) resourceVersion."""
        return self._rv

    def put_object(self, res: kclient.Resource, obj: Mapping[str, Any]) -> Obj:
        """Create or overwrite an object as someone else would (kubelet, a user): no action is
        recorded, watchers see ADDED/MODIFIED, status and finalizers are taken as given, a
        namespaced object without a namespace goes to ``default``. Returns a copy."""
        body: Obj = clone(dict(obj))
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
        return clone(stored)

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
        return clone(obj) if obj is not None else None

    def list_objects(self, res: kclient.Resource, namespace: str | None = None) -> list[Obj]:
        items = sorted(self._objects.get(res, {}).items())
        return [clone(o) for (ns, _), o in items if namespace is None or ns == namespace]

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
                w.send({"type": "ERROR", "object": error_status(error)[1]})
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

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, res: kclient.Resource, etype: str, obj: Obj, old: Obj | None) -> None:
        entry = LogEntry(self._rv, res, etype, obj, old)
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
        gone = clone(old)
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
            raise Reply(400, "metadata must be an object")
        rv = new_meta.get("resourceVersion")
        if check_rv and rv and rv != old_meta.get("resourceVersion"):
            raise conflict(res, name)
        if new_meta.get("name", name) != name:
            raise Reply(
                400,
                f"the name of the object ({new_meta.get('name')}) does not match "
                f"the name on the URL ({name})",
            )
        if subresource == "status":
            # As the apiserver's status strategies: spec is reset to the old one, status and
            # metadata changes (labels, annotations, finalizers) are kept. This is how upstream
            # controllers write the load-balancer finalizer through services/status.
            stored = clone(old)
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
                    new["status"] = clone(old["status"])
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
                raise Reply(
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
