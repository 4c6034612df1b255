"""The network transport: aiohttp, the TLS context and the credentials of one :class:`Connection`.

Built from a :class:`ccm.kube.kubeconfig.Connection` and its :class:`ccm.kube.auth.Credentials`:
one connection pool (100 connections, as kubernetes_asyncio's default) with a TLS context trusting
the cluster's CA (or the system's), presenting the client certificate if there is one, checking
the server's name against ``tls-server-name`` when set, and not verifying at all with
``insecure-skip-tls-verify``. A proxy is ``proxy-url`` or, as client-go's
``ProxyFromEnvironment``, the environment's proxy for the apiserver URL, resolved once (aiohttp's
per-request lookup reads ``~/.netrc`` in a thread on every request).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ccm import errors
from ccm.kube import auth, kubeconfig
from ccm.kube.transport import (
    BufferedResponse,
    HttpRequest,
    HttpResponse,
    TokenTransport,
    Transport,
    describe,
)

__all__ = ["AiohttpTransport", "connect_transport", "ssl_context"]

_log = logging.getLogger("ccm.kube.client")

#: Connections per apiserver (kubernetes_asyncio's ``connection_pool_maxsize``).
POOL_SIZE = 100
#: Watch events of large objects exceed aiohttp's default read buffer (etcd allows 1.5 MiB).
READ_BUFSIZE = 2**21


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """``data`` in a private temporary file for as long as ``ssl`` needs a path."""
    fd, path = tempfile.mkstemp(prefix="ccm-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        os.unlink(path)


def ssl_context(
    conn: kubeconfig.Connection, *, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """The TLS context of ``conn`` (``cert_file``/``key_file``: a plugin's client certificate).

    Raises :class:`ccm.errors.ConfigError` naming the field whose content ``ssl`` refused.
    """
    field = "certificate-authority"
    try:
        if conn.ca_data is not None:
            field += "-data"
            context = ssl.create_default_context(cadata=conn.ca_data.decode("ascii", "replace"))
        else:
            context = ssl.create_default_context(cafile=conn.ca_file)
        field = "client-certificate/client-key"
        cert, key = conn.cert_file or cert_file, conn.key_file or key_file
        with contextlib.ExitStack() as stack:
            if conn.cert_data is not None:
                cert = stack.enter_context(_pem_file(conn.cert_data))
            if conn.key_data is not None:
                key = stack.enter_context(_pem_file(conn.key_data))
            if cert is not None:
                context.load_cert_chain(cert, keyfile=key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise errors.ConfigError(f"{conn.where}: {field}: {describe(exc)}") from exc
    if conn.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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


class AiohttpTransport(Transport):
    """HTTP to the apiserver of ``conn`` over one aiohttp connection pool."""

    def __init__(
        self,
        conn: kubeconfig.Connection,
        credentials: auth.Credentials | None = None,
        *,
        connect_timeout: float = 30.0,
    ) -> None:
        self.host = conn.server.rstrip("/")
        self.connection = conn
        self.credentials = credentials if credentials is not None else auth.NoCredentials()
        self._connect_timeout = connect_timeout
        cert = key = None
        if isinstance(self.credentials, auth.PluginCredentials):
            cert, key = self.credentials.cert_file, self.credentials.key_file
        tls: ssl.SSLContext | bool = True
        if self.host.startswith("https"):
            tls = ssl_context(conn, cert_file=cert, key_file=key)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE, ssl=tls),
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

    async def send(self, request: HttpRequest) -> HttpResponse:
        url = self.host + request.path
        what = f"{request.method} {url}"
        timeout = aiohttp.ClientTimeout(
            total=request.timeout, sock_connect=self._connect_timeout, connect=None
        )
        extra: dict[str, Any] = {}
        if self.proxy is not None:
            extra["proxy"], extra["proxy_auth"] = self.proxy
        if self.connection.tls_server_name:
            extra["server_hostname"] = self.connection.tls_server_name
        for attempt in range(2):
            headers = dict(request.headers)
            headers.update(await self.credentials.headers())
            try:
                resp = await self.session.request(
                    request.method,
                    url,
                    params=request.query or None,
                    data=request.body,
                    headers=headers,
                    timeout=timeout,
                    **extra,
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise errors.KubeError(f"{what}: {describe(exc)}") from exc
            if resp.status == 401 and attempt == 0 and self.credentials.invalidate():
                resp.release()
                continue
            if request.stream:
                return _AiohttpStream(resp, what)
            try:
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise errors.KubeError(f"{what}: {describe(exc)}") from exc
            finally:
                resp.release()
            return BufferedResponse(
                resp.status, body, {k.lower(): v for k, v in resp.headers.items()}
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self.session.close()

    def with_bearer_token(self, token: str) -> TokenTransport:
        """A new connection pool to the same apiserver, trusting the same CA, that presents only
        ``token`` (a client certificate would win over the token at the apiserver)."""
        conn = dataclasses.replace(
            self.connection,
            cert_file=None,
            cert_data=None,
            key_file=None,
            key_data=None,
            token=None,
            token_file=None,
            username=None,
            password=None,
            plugin=None,
        )
        return _AiohttpTokenTransport(conn, token, connect_timeout=self._connect_timeout)


class _AiohttpTokenTransport(AiohttpTransport, TokenTransport):
    def __init__(self, conn: kubeconfig.Connection, token: str, *, connect_timeout: float) -> None:
        self._token = auth.StaticToken(token)
        super().__init__(conn, self._token, connect_timeout=connect_timeout)

    def set_token(self, token: str) -> None:
        self._token.token = token


async def connect_transport(
    *, kubeconfig_path: str | None, context: str | None, master: str | None, connect_timeout: float
) -> AiohttpTransport:
    """Load the configuration (see :meth:`ccm.kube.client.KubeClient.connect`) and open a pool."""
    if kubeconfig_path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        conn = kubeconfig.in_cluster()
        _log.info("Using in-cluster configuration")
    else:
        paths, label = kubeconfig.kubeconfig_paths(kubeconfig_path)
        if kubeconfig_path is None and master and not kubeconfig.any_exists(paths):
            conn = kubeconfig.master_only(master)  # upstream: --master alone, no credentials
        else:
            conn = kubeconfig.load_kubeconfig(paths, label, context=context, master=master)
            _log.info("Using kubeconfig %s", label)
    if master:
        conn = conn.with_server(master)
    credentials = await auth.credentials_for(conn)
    return AiohttpTransport(conn, credentials, connect_timeout=connect_timeout)
