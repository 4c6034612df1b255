"""The request path under every verb of :class:`ccm.kube.client.KubeClient`: headers, the
client-side QPS/burst limiter, ``Retry-After`` retries, fencing of writes, the dry run, error
translation and the ``rest_client_*`` metrics (client-go's ``rest.Request``)."""

from __future__ import annotations

import builtins
import collections
import contextlib
import copy
import logging
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

import orjson
from prometheus_client import Counter, Histogram

from ccm import clock, errors, fencing, metrics
from ccm.kube import dial, ratelimit, wire
from ccm.kube.transport import HttpRequest, HttpResponse, Transport

__all__ = ["MAX_RETRY_AFTER_RETRIES", "RestClient"]

_log = logging.getLogger("ccm.kube.client")

# client-go's rest.Request retries 429s and 5xx responses carrying Retry-After up to 10 times.
MAX_RETRY_AFTER_RETRIES = 10

_M = TypeVar("_M", Counter, Histogram)


class _Children(Generic[_M]):
    """A metric's labelled children, asked of prometheus_client once per set of label values
    (its ``labels()`` checks the values and takes a lock on every call; a request touches three
    children). The ``rest_client_*`` metrics are process-wide and never cleared, and their label
    sets are few (verbs, methods, status codes, apiservers), so the children are kept."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *labels: str) -> _M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


_REQUESTS = _Children(metrics.REST_CLIENT_REQUESTS)
_REQUEST_DURATION = _Children(metrics.REST_CLIENT_REQUEST_DURATION)
_RATE_LIMITER_DURATION = _Children(metrics.REST_CLIENT_RATE_LIMITER_DURATION)


class RestClient:
    """Sends requests for :class:`ccm.kube.client.KubeClient` (see there); it has no verbs."""

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
        transport = await dial.connect_transport(
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
        ``rest.AddUserAgent``): ``for_component("node-controller")`` on a ``ccm/v1`` client sends
        ``ccm/v1/node-controller``. Closing a derived client does not close the transport; closing
        the client :meth:`connect` returned does.
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
            _REQUESTS("<error>", request.method, host).inc()
            raise
        finally:
            _REQUEST_DURATION(verb, host).observe(max(0.0, clock.monotonic() - started))

    async def _send(
        self, verb: str, request: HttpRequest, *, raise_for_status: bool = True
    ) -> HttpResponse:
        """Throttle, send, count, retry on Retry-After, translate error statuses (or, with
        ``raise_for_status=False``, return the error response as it came)."""
        host = self._metric_host
        retries = 0
        while True:
            waited = await self._limiter.acquire()
            _RATE_LIMITER_DURATION(verb, host).observe(waited)
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
            _REQUESTS(str(resp.status), request.method, host).inc()
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
            if not raise_for_status:
                return resp
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
        accept: str | None = None,
    ) -> bytes:
        if wire.dry_run_applies(verb, method, path):
            return await wire.dry_run_answer(
                verb, path, body, content_type, lambda: self._call("get", "GET", path)
            )
        headers = self._headers(content_type)
        if accept is not None:
            headers["Accept"] = accept
        request = HttpRequest(
            method=method,
            path=path,
            query=query or [],
            headers=headers,
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
