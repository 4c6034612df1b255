"""The Kubernetes API client of ccm: raw JSON in, plain dicts out.

Every request and response body is read and written with orjson, never through generated models
(their deserialisation blocks the event loop at scale). Ports the parts of client-go's ``rest``
package ccm needs: QPS/burst throttling (``flowcontrol``), ``Retry-After`` retries, error
translation, paged lists, watches, and the ``rest_client_*`` metrics.

Layers::

    KubeClient          paths, verbs, throttling, retries, error translation, counters
      └── Transport     sends one HTTP request (ccm.kube.transport)
            ├── AiohttpTransport   aiohttp, TLS and credentials (ccm.kube.http; KubeClient.connect)
            └── FakeApiServer      in-memory apiserver for unit tests (ccm.kube.fakeserver)

:meth:`KubeClient.connect` reads the configuration with :mod:`ccm.kube.kubeconfig` and the
credentials with :mod:`ccm.kube.auth`.

Errors: an HTTP error status raises the :class:`ccm.errors.ApiError` subclass for its ``Status``
(404 → ``NotFoundError``, 409 → ``ConflictError``/``AlreadyExistsError``, 410 → ``GoneError`` …); an
unreachable apiserver, a timeout or a malformed response raises :class:`ccm.errors.KubeError`; a bad
kubeconfig raises :class:`ccm.errors.ConfigError` (one line: path, field and reason).

The resources (``NODES``, ``SERVICES`` …), the transport types and :func:`api_error_from_body` are
re-exported here, where the controllers import them from.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import copy
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Self
from urllib.parse import urlsplit

import orjson

from ccm import clock, errors, fencing, metrics
from ccm.kube import http, ratelimit, wire
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

# client-go's rest.Request retries 429s and 5xx responses carrying Retry-After up to 10 times.
MAX_RETRY_AFTER_RETRIES = 10
# Extra client-side time a watch gets beyond its server-side timeoutSeconds.
WATCH_CLIENT_TIMEOUT_SLACK = 30.0


class KubeClient:
    """An asyncio Kubernetes API client speaking plain dicts.

    Create it with :meth:`connect` (real apiserver) or use :class:`ccm.kube.fake.FakeKubeClient`
    in unit tests. Every request waits for a token of the client-side QPS/burst limiter (shared by
    the clients :meth:`for_component` derives), carries ``request_timeout``, and retries ``429``/
    ``5xx`` responses that carry ``Retry-After`` (up to 10 times, like client-go).

    Objects returned are fresh dicts the caller owns. Verbs are counted in
    :attr:`requests_total` (this client) and :attr:`all_requests_total` (every client sharing the
    transport), keyed ``get list watch create update patch delete``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        qps: float = 20.0,
        burst: int = 30,
        user_agent: str = "ccm",
        request_timeout: float = 30.0,
        limiter: ratelimit.TokenBucket | None = None,
    ) -> None:
        self._transport = transport
        self._limiter = limiter if limiter is not None else ratelimit.TokenBucket(qps, burst)
        self._base_user_agent = user_agent
        self.user_agent = user_agent
        self.request_timeout = float(request_timeout)
        self._owns_transport = True
        self.requests_total: collections.Counter[str] = collections.Counter()
        self.all_requests_total: collections.Counter[str] = collections.Counter()
        self._metric_host = urlsplit(transport.host).netloc or transport.host

    @classmethod
    async def connect(
        cls,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        master: str | None = None,
        qps: float = 20.0,
        burst: int = 30,
        user_agent: str = "ccm",
        request_timeout: float = 30.0,
    ) -> Self:
        """Connect using a kubeconfig, or the in-cluster service account.

        ``kubeconfig=None``: in-cluster configuration when ``KUBERNETES_SERVICE_HOST`` is set,
        else ``$KUBECONFIG`` (a path list) or ``~/.kube/config``. ``master`` overrides the server
        URL (upstream ``--master``). Nothing is sent until the first request. Raises
        :class:`ccm.errors.ConfigError` for a missing, unreadable or malformed configuration.
        """
        transport = await http.connect_transport(
            kubeconfig_path=kubeconfig,
            context=context,
            master=master,
            connect_timeout=request_timeout,
        )
        return cls(
            transport, qps=qps, burst=burst, user_agent=user_agent, request_timeout=request_timeout
        )

    def for_component(self, user_agent: str) -> Self:
        """A client sharing this one's transport and rate limiter, for one component.

        Its User-Agent is this client's base user agent + ``/`` + ``user_agent`` (upstream
        ``rest.AddUserAgent``): ``for_component("node-controller")`` on a ``ccm/v1`` client
        sends ``ccm/v1/node-controller``. Closing a derived client does not close the transport;
        closing the client :meth:`connect` returned does.
        """
        clone = copy.copy(self)
        clone.user_agent = f"{self._base_user_agent}/{user_agent}"
        clone._owns_transport = False
        clone.requests_total = collections.Counter()
        return clone

    @property
    def host(self) -> str:
        """The apiserver URL."""
        return self._transport.host

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def base_user_agent(self) -> str:
        return self._base_user_agent

    @property
    def limiter(self) -> ratelimit.TokenBucket:
        return self._limiter

    @property
    def write_count(self) -> int:
        """Writes (create, update, patch, delete) sent by this client."""
        return sum(self.requests_total[v] for v in ("create", "update", "patch", "delete"))

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": self.user_agent,
            # Upstream builds the CCM's client with compression disabled.
            "Accept-Encoding": "identity",
        }
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _timed_send(
        self, request: HttpRequest, verb: str, host: str, started: float
    ) -> HttpResponse:
        try:
            return await self._transport.send(request)
        except errors.KubeError:
            metrics.REST_CLIENT_REQUESTS.labels("<error>", request.method, host).inc()
            raise
        finally:
            metrics.REST_CLIENT_REQUEST_DURATION.labels(verb, host).observe(
                max(0.0, clock.monotonic() - started)
            )

    async def _send(self, verb: str, request: HttpRequest) -> HttpResponse:
        """Throttle, send, count, retry on Retry-After, translate error statuses."""
        host = self._metric_host
        retries = 0
        while True:
            waited = await self._limiter.acquire()
            metrics.REST_CLIENT_RATE_LIMITER_DURATION.labels(verb, host).observe(waited)
            if waited > 1.0:
                _log.info(
                    "Waited for %.2fs due to client-side throttling, request: %s:%s",
                    waited,
                    request.method,
                    request.path,
                )
            if verb in wire.WRITE_VERBS and wire.dry_run_applies(
                verb, request.method, request.path
            ):
                # _call answers a dry run's writes; one that got here was never meant to.
                raise errors.KubeError(f"dry run: refusing {request.method} {request.path}")
            # Right before sending (after the limiter's wait), and for as long as the request is
            # on its way: a leader whose lease lapsed meanwhile must not write (ccm.fencing).
            fence = fencing.fenced() if verb in wire.WRITE_VERBS else contextlib.nullcontext()
            async with fence:
                self.requests_total[verb] += 1
                self.all_requests_total[verb] += 1
                started = clock.monotonic()
                resp = await self._timed_send(request, verb, host, started)
            metrics.REST_CLIENT_REQUESTS.labels(str(resp.status), request.method, host).inc()
            if resp.status < 400:
                return resp
            delay = wire.retry_after(resp)
            if delay is not None and retries < MAX_RETRY_AFTER_RETRIES:
                await resp.aclose()
                retries += 1
                _log.debug(
                    "Got HTTP %d with Retry-After %.1fs for %s %s (retry %d)",
                    resp.status,
                    delay,
                    request.method,
                    request.path,
                    retries,
                )
                await clock.sleep(min(delay, self.request_timeout))
                continue
            try:
                body = await resp.read()
            finally:
                await resp.aclose()
            raise wire.api_error_from_body(resp.status, body)

    async def _call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        query: builtins.list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> bytes:
        if wire.dry_run_applies(verb, method, path):
            return await wire.dry_run_answer(
                verb, path, body, content_type, lambda: self._call("get", "GET", path)
            )
        request = HttpRequest(
            method=method,
            path=path,
            query=query or [],
            headers=self._headers(content_type),
            body=body,
            timeout=self.request_timeout,
        )
        resp = await self._send(verb, request)
        try:
            return await resp.read()
        finally:
            await resp.aclose()

    async def _json(self, verb: str, method: str, path: str, **kwargs: Any) -> Any:
        raw = await self._call(verb, method, path, **kwargs)
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.KubeError(f"{method} {path}: malformed JSON response: {exc}") from exc

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

        Ends when the server closes the watch (after ``timeout_seconds``). An ``ERROR`` event
        raises the ApiError of its Status (:class:`ccm.errors.GoneError` for a too-old
        resourceVersion); a broken connection raises :class:`ccm.errors.KubeError`. Close it
        when done early: ``async with contextlib.aclosing(client.watch(...)) as events:``.
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
    ) -> dict[str, Any]:
        """PATCH: strategic merge (default), JSON merge, JSON patch (a list of ops) or apply."""
        content_type = wire.PATCH_CONTENT_TYPES.get(patch_type)
        if content_type is None:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        query = wire.query({"fieldManager": field_manager, "force": force})
        obj: dict[str, Any] = await self._json(
            "patch",
            "PATCH",
            res.path(namespace=namespace, name=name, subresource=subresource),
            query=query,
            body=body if isinstance(body, bytes) else orjson.dumps(body),
            content_type=content_type,
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
