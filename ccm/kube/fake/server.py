"""The fake apiserver: parses each request, applies injected faults and reactors, and answers it
from the :class:`~ccm.kube.fake.store.Store` as the apiserver would (see :mod:`ccm.kube.fake`)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Iterable
from typing import Any

import orjson

from ccm import clock, errors
from ccm.kube import client as kclient
from ccm.kube.fake.patches import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from ccm.kube.fake.selectors import match_field_selector, match_label_selector
from ccm.kube.fake.status import (
    REASONS,
    Obj,
    Reply,
    clone,
    conflict,
    error_status,
    json_response,
    not_found,
    qualified,
    status_body,
)
from ccm.kube.fake.store import (
    Action,
    FakeRequest,
    Fault,
    Reactor,
    Store,
    Watcher,
    WatchResponse,
)

__all__ = ["DEFAULT_RESOURCES", "WRITE_VERBS", "FakeApiServer"]

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
_VIRTUAL = frozenset({"tokenreviews", "subjectaccessreviews"})  # create-only, never stored


class FakeApiServer(Store, kclient.Transport):
    """An in-memory apiserver behind the :class:`ccm.kube.client.Transport` interface."""

    def __init__(
        self,
        *,
        resources: Iterable[kclient.Resource] = DEFAULT_RESOURCES,
        max_history: int = 10_000,
    ) -> None:
        super().__init__(max_history=max_history)
        self.host = "https://fake-apiserver.invalid"
        for res in resources:
            self.register(res)
        self._faults: list[Fault] = []
        self._reactors: list[tuple[str, str, Reactor]] = []
        self._names = itertools.count(1)
        self.requests: list[FakeRequest] = []
        self.latency: float = 0.0  # seconds each request takes on the loop clock

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
                error, {"message": f"injected HTTP {error}", "reason": REASONS.get(error, "")}
            )
        self._faults.append(Fault(verb, resource, error, name, subresource, times))

    def clear_errors(self) -> None:
        self._faults.clear()

    def add_reactor(self, verb: str, resource: str, reactor: Reactor) -> None:
        """Answer matching requests with ``reactor`` first (newest reactor first)."""
        self._reactors.insert(0, (verb, resource, reactor))

    async def aclose(self) -> None:
        self.close_watches()

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
                return json_response(400, status_body(400, "request body is not valid JSON"))
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
                        return json_response(201 if req.verb == "create" else 200, answer)
            if res is None:
                return self._non_resource(request, req)
            return self._serve(res, req, request)
        except errors.ApiError as exc:
            code, body = error_status(exc)
            return json_response(code, body)
        except Reply as reply:
            return json_response(reply.code, reply.body)

    def _non_resource(self, request: kclient.HttpRequest, req: FakeRequest) -> kclient.HttpResponse:
        path = request.path.rstrip("/")
        if request.method == "GET" and path in ("/healthz", "/readyz", "/livez"):
            return kclient.BufferedResponse(200, b"ok", {"content-type": "text/plain"})
        if request.method == "GET" and path == "/version":
            return json_response(
                200, {"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake", "platform": ""}
            )
        raise Reply(404, "the server could not find the requested resource")

    def _serve(
        self, res: kclient.Resource, req: FakeRequest, request: kclient.HttpRequest
    ) -> kclient.HttpResponse:
        if res.namespaced and req.name is not None and req.namespace is None:
            raise Reply(404, "the server could not find the requested resource")
        if not res.namespaced and req.namespace is not None:
            raise Reply(404, "the server could not find the requested resource")
        if res.namespaced and req.namespace is None and req.verb == "create":
            raise Reply(405, "the server does not allow this method on the requested resource")
        if req.subresource is not None:
            allowed = (req.subresource == "status" and res in self._status_sub) or (
                res.plural == "serviceaccounts" and req.subresource == "token"
            )
            if not allowed:
                raise Reply(404, "the server could not find the requested resource")
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
            raise Reply(405, f"{req.verb} is not supported by the fake apiserver")
        code, body = handler(res, req)
        return json_response(code, body)

    def _lookup(self, res: kclient.Resource, req: FakeRequest) -> Obj:
        assert req.name is not None
        obj = self._objects.get(res, {}).get((req.namespace or "", req.name))
        if obj is None:
            raise not_found(res, req.name)
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
                raise Reply(400, f"invalid continue token: {exc}") from exc
            if list_rv < self._compacted:
                raise Reply(
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
        watcher = Watcher(
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
                if watcher.matches(obj):
                    watcher.send({"type": "ADDED", "object": obj})
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise Reply(400, f'invalid resourceVersion "{rv_text}"') from exc
            if since < self._compacted:
                watcher.send(
                    {
                        "type": "ERROR",
                        "object": status_body(
                            410,
                            f"too old resource version: {since} ({self._compacted})",
                            reason="Expired",
                        ),
                    }
                )
                watcher.close()
                return WatchResponse(watcher, timeout)
            for entry in self._log:
                if entry.rv > since:
                    watcher.offer(entry)
        self._watchers.add(watcher)
        return WatchResponse(watcher, timeout)

    def _create(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        body = req.body
        if not isinstance(body, dict):
            raise Reply(400, "the body of a create must be a JSON object")
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
            raise Reply(405, "POST is not allowed on a named object")
        if res.plural in _VIRTUAL:
            out = clone(body)
            if res.plural == "tokenreviews":
                out["status"] = {"authenticated": False}
            else:
                out["status"] = {"allowed": True}
            return 201, out
        body = clone(body)
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise Reply(400, "metadata must be an object")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != req.namespace:
            raise Reply(
                400,
                "the namespace of the provided object does not match the namespace sent "
                "on the request",
            )
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise Reply(
                    422,
                    f"{res.kind} is invalid: metadata.name: Required value: name or "
                    "generateName is required",
                )
            name = meta["name"] = f"{prefix}{next(self._names):05x}"
        if (req.namespace or "", name) in self._objects.get(res, {}):
            raise Reply(
                409,
                f'{qualified(res)} "{name}" already exists',
                reason="AlreadyExists",
                name=name,
                kind=res.plural,
            )
        meta.pop("resourceVersion", None)
        return 201, self._create_object(res, body, req.namespace)

    def _update(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        if not isinstance(req.body, dict):
            raise Reply(400, "the body of an update must be a JSON object")
        old = self._lookup(res, req)
        body = clone(req.body)
        return 200, self._store_update(res, old, body, subresource=req.subresource)

    def _patch(self, res: kclient.Resource, req: FakeRequest) -> tuple[int, Any]:
        assert req.name is not None
        patch = req.body
        key = (req.namespace or "", req.name)
        old = self._objects.get(res, {}).get(key)
        if req.patch_type == "apply":
            if not req.query.get("fieldManager"):
                raise Reply(422, "PatchOptions is invalid: fieldManager: Required value")
            if old is None:
                if not isinstance(patch, dict):
                    raise Reply(400, "an apply patch must be a JSON object")
                body = clone(patch)
                body.setdefault("metadata", {})["name"] = req.name
                body["metadata"].pop("resourceVersion", None)
                return 201, self._create_object(res, body, req.namespace)
        if old is None:
            raise not_found(res, req.name)
        if req.patch_type == "json":
            new = apply_json_patch(old, patch)
        elif req.patch_type == "merge":
            new = apply_merge_patch(old, patch)
        elif req.patch_type in ("strategic", "apply"):
            new = apply_strategic_merge_patch(old, patch)
        else:
            raise Reply(415, "unsupported patch content type")
        # A resourceVersion in the patched result is a precondition, as on the apiserver.
        new_rv = (new.get("metadata") or {}).get("resourceVersion")
        if new_rv and new_rv != old["metadata"].get("resourceVersion"):
            raise conflict(res, req.name)
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
            raise Reply(
                409,
                f'Operation cannot be fulfilled on {qualified(res)} "{req.name}": Precondition '
                "failed",
                name=req.name,
                kind=res.plural,
            )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return 200, old
            new = clone(old)
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
