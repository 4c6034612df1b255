"""The Kubernetes API client of ccm: raw JSON in, plain dicts out.

Every request and response body is read and written with orjson, never through generated models
(their deserialisation blocks the event loop at scale). Ports the parts of client-go's ``rest``
package ccm needs: QPS/burst throttling (``flowcontrol``), ``Retry-After`` retries, error
translation, paged lists, watches, and the ``rest_client_*`` metrics.

Layers::

    KubeClient            paths and verbs
      └── RestClient      throttling, retries, fencing, dry run, errors, counters (ccm.kube.rest)
            └── Transport sends one HTTP request (ccm.kube.transport)
                  ├── H1Transport       HTTP/1.1 + httptools, TLS, credentials (ccm.kube.h1)
                  ├── AiohttpTransport  the same through a proxy (ccm.kube.http)
                  └── FakeApiServer     in-memory apiserver for unit tests (ccm.kube.fake)

:meth:`KubeClient.connect` reads the configuration with :mod:`ccm.kube.kubeconfig` and the
credentials with :mod:`ccm.kube.auth`, and :mod:`ccm.kube.dial` picks the transport.

Errors: an HTTP error status raises the :class:`ccm.errors.ApiError` subclass for its ``Status``
(404 → ``NotFoundError``, 409 → ``ConflictError``/``AlreadyExistsError``, 410 → ``GoneError`` …); an
unreachable apiserver, a timeout or a malformed response raises :class:`ccm.errors.KubeError`; a bad
kubeconfig raises :class:`ccm.errors.ConfigError` (one line: path, field and reason).

The resources (``NODES``, ``SERVICES`` …), the transport types and :func:`api_error_from_body` are
re-exported here, where the controllers import them from.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Literal, overload
from urllib.parse import parse_qsl

import orjson

from ccm.kube import rest, wire
from ccm.kube.resources import (
    CONFIGMAPS,
    ENDPOINTS,
    EVENTS,
    LEASES,
    NAMESPACES,
    NODES,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
    SUBJECTACCESSREVIEWS,
    TOKENREVIEWS,
    Resource,
)
from ccm.kube.transport import (
    BufferedResponse,
    HttpRequest,
    HttpResponse,
    TokenTransport,
    Transport,
)
from ccm.kube.wire import PATCH_CONTENT_TYPES, PatchType, api_error_from_body

__all__ = [
    "CONFIGMAPS",
    "ENDPOINTS",
    "EVENTS",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PATCH_CONTENT_TYPES",
    "SECRETS",
    "SERVICEACCOUNTS",
    "SERVICES",
    "SUBJECTACCESSREVIEWS",
    "TOKENREVIEWS",
    "BufferedResponse",
    "HttpRequest",
    "HttpResponse",
    "KubeClient",
    "PatchType",
    "Resource",
    "TokenTransport",
    "Transport",
    "api_error_from_body",
]

_log = logging.getLogger(__name__)

# Extra client-side time a watch gets beyond its server-side timeoutSeconds.
WATCH_CLIENT_TIMEOUT_SLACK = 30.0


class KubeClient(rest.RestClient):
    """An asyncio Kubernetes API client speaking plain dicts.

    Create it with :meth:`connect` (real apiserver) or use :class:`ccm.kube.fake.FakeKubeClient`
    in unit tests. Every request waits for a token of the client-side QPS/burst limiter (shared by
    the clients :meth:`for_component` derives), carries ``request_timeout``, and retries ``429``/
    ``5xx`` responses that carry ``Retry-After`` (up to 10 times, like client-go).

    Objects returned are fresh dicts the caller owns. Verbs are counted in
    :attr:`requests_total` (this client) and :attr:`all_requests_total` (every client sharing the
    transport), keyed ``get list watch create update patch delete``.
    """

    @staticmethod
    def _namespace_of(res: Resource, namespace: str | None, body: Any) -> str | None:
        if namespace is None and res.namespaced and isinstance(body, Mapping):
            meta = body.get("metadata")
            if isinstance(meta, Mapping) and isinstance(meta.get("namespace"), str):
                return str(meta["namespace"])
        return namespace

    # -- verbs ---------------------------------------------------------------------------------

    async def get(
        self, res: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        obj: dict[str, Any] = await self._json(
            "get", "GET", res.path(namespace=namespace, name=name)
        )
        return obj

    async def list(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """One raw page: ``{"items": [...], "metadata": {"resourceVersion", "continue"?}}``."""
        query = wire.query(
            {
                "labelSelector": label_selector or None,
                "fieldSelector": field_selector or None,
                "limit": limit,
                "continue": continue_token or None,
                "resourceVersion": resource_version,
            }
        )
        page: dict[str, Any] = await self._json(
            "list", "GET", res.path(namespace=namespace), query=query
        )
        return page

    async def list_all(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every item, page by page; returns ``(items, resourceVersion of the list)``.

        Items get ``kind``/``apiVersion`` filled in (list items lack them). ``transform`` is
        applied to each item as its page arrives, so only trimmed objects accumulate. If a
        continue token expires mid-way (410), the list restarts once without paging, like
        client-go's pager.
        """
        return await wire.paged_list(
            self,
            res,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
            transform=transform,
        )

    async def watch(
        self,
        res: Resource,
        *,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield watch events ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": {...}}``.

        Ends when the server closes the watch (after ``timeout_seconds``). An ``ERROR`` event raises
        the ApiError of its Status (:class:`ccm.errors.GoneError` for a too-old resourceVersion); a
        broken connection raises :class:`ccm.errors.KubeError`. Close it when done early:
        ``async with contextlib.aclosing(client.watch(...)) as events:``.
        """
        query = wire.query(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "labelSelector": label_selector or None,
                "fieldSelector": field_selector or None,
                "timeoutSeconds": int(timeout_seconds),
                "allowWatchBookmarks": "true" if allow_bookmarks else None,
            }
        )
        path = res.path(namespace=namespace)
        request = HttpRequest(
            method="GET",
            path=path,
            query=query,
            headers=self._headers(None),
            timeout=float(timeout_seconds) + WATCH_CLIENT_TIMEOUT_SLACK,
            stream=True,
        )
        resp = await self._send("watch", request)
        try:
            async with contextlib.aclosing(wire.watch_events(resp.iter_chunks(), path)) as events:
                async for event in events:
                    yield event
        finally:
            await resp.aclose()

    async def create(
        self,
        res: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """POST ``body``; ``namespace`` defaults to ``body.metadata.namespace``.

        With ``subresource`` and ``name``, POSTs to the subresource (``serviceaccounts/token``).
        """
        namespace = self._namespace_of(res, namespace, body)
        path = res.path(
            namespace=namespace,
            name=name if subresource else None,
            subresource=subresource,
        )
        obj: dict[str, Any] = await self._json(
            "create",
            "POST",
            path,
            body=orjson.dumps(body),
            content_type="application/json",
        )
        return obj

    async def replace(
        self,
        res: Resource,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT ``body`` (with ``metadata.resourceVersion`` set, a conflict raises ConflictError)."""
        namespace = self._namespace_of(res, namespace, body)
        obj: dict[str, Any] = await self._json(
            "update",
            "PUT",
            res.path(namespace=namespace, name=name, subresource=subresource),
            body=orjson.dumps(body),
            content_type="application/json",
        )
        return obj

    @overload
    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: wire.PatchType = "strategic",
        field_manager: str | None = None,
        force: bool | None = None,
        decode: Literal[True] = True,
    ) -> dict[str, Any]: ...

    @overload
    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: wire.PatchType = "strategic",
        field_manager: str | None = None,
        force: bool | None = None,
        decode: Literal[False],
    ) -> None: ...

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: wire.PatchType = "strategic",
        field_manager: str | None = None,
        force: bool | None = None,
        decode: bool = True,
    ) -> dict[str, Any] | None:
        """PATCH: strategic merge (default), JSON merge, JSON patch (a list of ops) or apply.

        Returns the patched object; with ``decode=False``, ``None``, for a caller that does not use
        the result: the apiserver is asked for the object's metadata only
        (``PartialObjectMetadata``, :data:`ccm.kube.wire.METADATA_ONLY`), and that is read but
        not decoded. An error status raises the same error either way (its ``Status`` body is
        still decoded).
        """
        content_type = wire.PATCH_CONTENT_TYPES.get(patch_type)
        if content_type is None:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        query = wire.query({"fieldManager": field_manager, "force": force})
        path = res.path(namespace=namespace, name=name, subresource=subresource)
        raw_body = body if isinstance(body, bytes) else orjson.dumps(body)
        if not decode:
            await self._call(
                "patch",
                "PATCH",
                path,
                query=query,
                body=raw_body,
                content_type=content_type,
                accept=wire.METADATA_ONLY,
            )
            return None
        obj: dict[str, Any] = await self._json(
            "patch", "PATCH", path, query=query, body=raw_body, content_type=content_type
        )
        return obj

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any] | None:
        """DELETE; returns the object when the apiserver returns it (e.g. finalizers pending),
        ``None`` when it returns a success ``Status``."""
        options: dict[str, Any] = {}
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        body = None
        if options:
            body = orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1", **options})
        out = await self._json(
            "delete",
            "DELETE",
            res.path(namespace=namespace, name=name),
            body=body,
            content_type="application/json" if body is not None else None,
        )
        if not isinstance(out, dict) or out.get("kind") == "Status":
            return None
        return out

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """The escape hatch: any method and path; returns decoded JSON, or text if not JSON."""
        method = method.upper()
        raw_body: bytes | None
        if body is None:
            raw_body = None
        elif isinstance(body, bytes):
            raw_body = body
        elif isinstance(body, str):
            raw_body = body.encode()
        else:
            raw_body = orjson.dumps(body)
            content_type = content_type or "application/json"
        raw = await self._call(
            wire.VERBS.get(method, method.lower()),
            method,
            path,
            query=wire.query(query),
            body=raw_body,
            content_type=content_type,
        )
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", errors="replace")

    async def raw(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        request_timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """Any request, answered as it came: ``(HTTP status, body)``. An error status does not
        raise (a transport failure does); throttled, retried on ``Retry-After`` and counted like
        every verb. ``path`` may carry a query string."""
        method = method.upper()
        path, _, query = path.partition("?")
        headers = self._headers(content_type)
        if accept:
            headers["Accept"] = accept
        request = HttpRequest(
            method=method,
            path=path,
            query=parse_qsl(query, keep_blank_values=True),
            headers=headers,
            body=body,
            timeout=self.request_timeout if request_timeout is None else request_timeout,
        )
        verb = wire.VERBS.get(method, method.lower())
        resp = await self._send(verb, request, raise_for_status=False)
        try:
            return resp.status, await resp.read()
        finally:
            await resp.aclose()
