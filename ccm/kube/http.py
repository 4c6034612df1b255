"""The transport through a proxy: aiohttp, when the apiserver is reached through ``proxy-url``
or, as client-go's ``ProxyFromEnvironment``, the environment's proxy for the apiserver URL
(resolved once: aiohttp's per-request lookup reads ``~/.netrc`` in a thread on every request).
Without a proxy ccm uses :class:`ccm.kube.h1.H1Transport` (:func:`ccm.kube.dial.connect_transport`
chooses). One connection pool (100 connections, as kubernetes_asyncio's default) with the TLS
context of :func:`ccm.kube.tls.ssl_context`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ccm import errors
from ccm.kube import tls
from ccm.kube.transport import (
    BufferedResponse,
    HttpRequest,
    HttpResponse,
    NetworkTransport,
    describe,
)

__all__ = ["AiohttpTransport"]


#: Connections per apiserver (kubernetes_asyncio's ``connection_pool_maxsize``).
POOL_SIZE = 100
#: Watch events of large objects exceed aiohttp's default read buffer (etcd allows 1.5 MiB).
READ_BUFSIZE = 2**21


class _AiohttpStream(HttpResponse):
    def __init__(self, resp: aiohttp.ClientResponse, what: str) -> None:
        self._resp = resp
        self._what = what
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.KubeError(f"{self._what}: {describe(exc)}") from exc

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.KubeError(f"{self._what}: {describe(exc)}") from exc

    async def aclose(self) -> None:
        # close(), not release(): an unfinished watch body must not go back to the pool.
        self._resp.close()


class AiohttpTransport(NetworkTransport):
    """HTTP to the apiserver of ``conn`` over one aiohttp connection pool."""

    def _open(self) -> None:
        conn = self.connection
        context: ssl.SSLContext | bool = True
        if self.host.startswith("https"):
            cert, key = tls.client_certificate(self.credentials)
            context = tls.ssl_context(conn, cert_file=cert, key_file=key)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE, ssl=context),
            trust_env=False,
            read_bufsize=READ_BUFSIZE,
        )
        self.proxy: tuple[Any, Any] | None = self._resolve_proxy()

    def _resolve_proxy(self) -> tuple[Any, Any] | None:
        """``(proxy URL, proxy auth)``: ``proxy-url``, else the environment's for our host."""
        if self.connection.proxy_url:
            return URL(self.connection.proxy_url), None
        try:
            proxy, proxy_auth = get_env_proxy_for_url(URL(self.host))
        except LookupError:
            return None
        return proxy, proxy_auth

    async def _exchange(
        self, request: HttpRequest, headers: dict[str, str], what: str
    ) -> HttpResponse:
        timeout = aiohttp.ClientTimeout(
            total=request.timeout, sock_connect=self._connect_timeout, connect=None
        )
        extra: dict[str, Any] = {}
        if self.proxy is not None:
            extra["proxy"], extra["proxy_auth"] = self.proxy
        if self.connection.tls_server_name:
            extra["server_hostname"] = self.connection.tls_server_name
        try:
            resp = await self.session.request(
                request.method,
                self.host + request.path,
                params=request.query or None,
                data=request.body,
                headers=headers,
                timeout=timeout,
                **extra,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.KubeError(f"{what}: {describe(exc)}") from exc
        if request.stream:
            return _AiohttpStream(resp, what)
        try:
            body = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.KubeError(f"{what}: {describe(exc)}") from exc
        finally:
            resp.release()
        return BufferedResponse(resp.status, body, {k.lower(): v for k, v in resp.headers.items()})

    async def aclose(self) -> None:
        await self.session.close()
