"""The apiserver transport: HTTP/1.1 keep-alive connections on asyncio, responses parsed by
httptools (llhttp, in C).

A controller manager sends many small requests to one server it trusts, so the general-purpose
machinery of an HTTP client library (cookie jars, redirects, per-request timers, tracing hooks,
multidict headers) is CPU spent for nothing: per request this transport writes one ``bytes`` and
feeds what comes back to a C parser. It keeps one pool of at most :data:`POOL_SIZE` connections
per apiserver (idle connections reused last-in first-out, a new one opened only when none is
idle), honours ``Connection: close``, stops reading a streaming response (a watch) whose reader
falls more than :data:`HIGH_WATER` bytes behind, and bounds every exchange by the request's
``timeout`` (for a watch: until its last byte). A request that finds its reused connection closed
by the server before any byte of the answer is sent once more on a new connection when it is
idempotent. Proxies are not handled here: :func:`ccm.kube.dial.connect_transport` chooses the
aiohttp transport when one applies. The bytes go through :mod:`ccm.kube.sockets`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncGenerator
from urllib.parse import urlencode, urlsplit

import httptools

from ccm import errors
from ccm.kube import sockets, tls
from ccm.kube.transport import (
    BufferedResponse,
    HttpRequest,
    HttpResponse,
    NetworkTransport,
    describe,
)

__all__ = ["HIGH_WATER", "POOL_SIZE", "H1Transport"]

#: Connections per apiserver (kubernetes_asyncio's ``connection_pool_maxsize``).
POOL_SIZE = 100
#: Unread bytes of a streaming response above which the socket is no longer read.
HIGH_WATER = 2**21
#: Methods sent again on a new connection when a reused one turns out closed.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

_NETWORK_ERRORS = (OSError, ssl.SSLError, httptools.HttpParserError, ConnectionError, EOFError)


class _StaleConnectionError(ConnectionError):
    """A reused connection closed before the first byte of the answer."""


class _Response(HttpResponse):
    """One response as it arrives: headers once complete, then the body in chunks."""

    def __init__(self, conn: _Connection, what: str) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.what = what
        self._expiry: asyncio.TimerHandle | None = None
        self.received = False  # any byte of the answer
        self.keep_alive = False
        self._conn: _Connection | None = conn
        self._loop = conn.loop
        self._headers_done: asyncio.Future[None] = conn.loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection -----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def headers_complete(self, status: int, headers: dict[str, str], keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.keep_alive = keep_alive
        if not self._headers_done.done():
            self._headers_done.set_result(None)

    def complete(self) -> None:
        self._complete = True
        self._conn = None
        self._stop_expiry()
        self._wake()

    def expire_at(self, deadline: float | None) -> None:
        """Fail the rest of the body at ``deadline`` (one timer, not one per chunk awaited)."""
        if deadline is not None and not self._complete and self._error is None:
            self._expiry = self._loop.call_at(deadline, self._expire)

    def _stop_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        self._expiry = None
        conn = self._conn
        if conn is not None and not self._complete:
            conn.abort()
            self.fail(TimeoutError())

    def fail(self, exc: BaseException) -> None:
        if self._complete or self._error is not None:
            return  # the first cause stays
        self._error = exc
        self._conn = None
        self._stop_expiry()
        if not self._headers_done.done():
            self._headers_done.set_exception(exc)
            self._headers_done.exception()  # raised to whoever awaits it; never "unretrieved"
        self._wake()

    # -- read by the caller --------------------------------------------------------------------

    async def wait_headers(self) -> None:
        await self._headers_done

    async def _next(self) -> bytes | None:
        """The next chunk of the body, or None at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._conn is not None and self._buffered <= HIGH_WATER // 2:
                    self._conn.resume()
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                raise errors.KubeError(f"{self.what}: {describe(self._error)}") from self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._next()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        while (chunk := await self._next()) is not None:
            yield chunk

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None and not self._complete:
            # An unfinished body (a watch stopped early) cannot go back to the pool.
            conn.abort()
            self.fail(errors.KubeError(f"{self.what}: closed"))


class _Connection:
    """One keep-alive connection: at most one request at a time (the protocol of a
    :class:`sockets.SocketTransport`)."""

    def __init__(self, pool: _Pool) -> None:
        self.loop = pool.loop
        self._pool = pool
        self._transport: sockets.SocketTransport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: _Response | None = None
        self._headers: dict[str, str] = {}
        self._paused = False
        self.lost = False
        self.used = 0

    # -- called by the transport ---------------------------------------------------------------

    def connection_made(self, transport: sockets.SocketTransport) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        resp, self._response = self._response, None
        if resp is not None:
            if exc is None:
                exc = (
                    _StaleConnectionError("connection closed by the server")
                    if not resp.received and self.used > 1
                    else ConnectionResetError("connection closed by the server")
                )
            resp.fail(exc)
        self._pool.forget(self)

    def data_received(self, data: bytes) -> None:
        resp = self._response
        if resp is None:  # bytes nobody asked for: the connection is out of step
            self.abort()
            return
        resp.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._response = None
            resp.fail(exc)
            self.abort()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        headers, self._headers = self._headers, {}
        if self._response is not None:
            self._response.headers_complete(
                self._parser.get_status_code(), headers, self._parser.should_keep_alive()
            )

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.feed(body)

    def on_message_complete(self) -> None:
        resp, self._response = self._response, None
        if resp is None:
            return
        keep = resp.keep_alive and not self.lost
        resp.complete()
        if keep:
            self.resume()  # an answer that arrived whole may have paused it: the next one is read
            self._pool.release(self)
        else:
            self.abort()

    # -- used by the pool and the response -----------------------------------------------------

    def start(self, resp: _Response, data: bytes) -> None:
        assert self._transport is not None
        self.used += 1
        self._response = resp
        self._transport.write(data)

    @property
    def usable(self) -> bool:
        return not self.lost and self._transport is not None and not self._transport.is_closing()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows and frees the pool slot
        else:
            self._pool.forget(self)


class _Pool:
    """The connections to one server: idle ones, and a bound on how many exist."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        server_hostname: str | None,
        connect_timeout: float,
    ) -> None:
        self.loop = loop
        self._host = host
        self._port = port
        self._ssl = context
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self._busy: set[_Connection] = set()
        self._all: set[_Connection] = set()
        self.closed = False

    async def acquire(self, *, fresh: bool = False) -> _Connection:
        """A connection for one request: an idle one unless ``fresh``, else a new one."""
        if self.closed:
            raise errors.KubeError("transport closed")
        await self._slots.acquire()
        try:
            while self._idle and not fresh:
                conn = self._idle.pop()
                if conn.usable:
                    self._busy.add(conn)
                    return conn
                conn.abort()
            async with asyncio.timeout(self._connect_timeout):
                sock = await sockets.open_socket(
                    self.loop, self._host, self._port, self._ssl, self._server_hostname
                )
            conn = _Connection(self)
            sockets.SocketTransport(self.loop, sock, conn)
            self._all.add(conn)
            self._busy.add(conn)
            return conn
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: _Connection) -> None:
        """``conn`` finished its response and stays open."""
        if conn in self._busy:
            self._busy.discard(conn)
            self._slots.release()
        if self.closed:
            conn.abort()
        else:
            self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed (or never opened)."""
        self._all.discard(conn)
        if conn in self._busy:
            self._busy.discard(conn)
            self._slots.release()
        if conn in self._idle:
            self._idle.remove(conn)

    async def aclose(self) -> None:
        self.closed = True
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run


class H1Transport(NetworkTransport):
    """HTTP/1.1 to the apiserver of ``conn`` over a pool of keep-alive connections."""

    def _open(self) -> None:
        conn = self.connection
        url = urlsplit(self.host)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.ConfigError(f"{conn.where}: server: not an http(s) URL: {conn.server!r}")
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "https":
            cert, key = tls.client_certificate(self.credentials)
            self._tls = tls.ssl_context(conn, cert_file=cert, key_file=key)
        self._address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
        self._server_hostname = conn.tls_server_name or url.hostname
        self._prefix = url.path.rstrip("/")
        self._host_header = url.netloc.rsplit("@", 1)[-1]
        self._pool: _Pool | None = None

    def _pool_of_loop(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop:
            pool = self._pool = _Pool(
                loop,
                self._address[0],
                self._address[1],
                self._tls,
                self._server_hostname,
                self._connect_timeout,
            )
        return pool

    def _head(self, request: HttpRequest, headers: dict[str, str]) -> bytes:
        target = self._prefix + request.path
        if request.query:
            target += "?" + urlencode(request.query)
        lines = [f"{request.method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise errors.KubeError(f"{request.method} {target}: header {name!r}: line break")
            lines.append(f"{name}: {value}\r\n")
        if request.body is not None or request.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(request.body or b'')}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    async def _exchange(
        self, request: HttpRequest, headers: dict[str, str], what: str
    ) -> HttpResponse:
        pool = self._pool_of_loop()
        data = self._head(request, headers) + (request.body or b"")
        loop = pool.loop
        deadline = None if request.timeout is None else loop.time() + request.timeout
        fresh = False
        while True:
            resp: _Response | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.acquire(fresh=fresh)
                    resp = _Response(conn, what)
                    conn.start(resp, data)
                    await resp.wait_headers()
                    if not request.stream:
                        body = await resp.read()
                        return BufferedResponse(resp.status, body, resp.headers)
            except _StaleConnectionError:
                if not fresh and request.method in _IDEMPOTENT:
                    fresh = True  # the server closed an idle connection: once on a new one
                    continue
                raise errors.KubeError(f"{what}: connection closed by the server") from None
            except TimeoutError as exc:
                if resp is not None:
                    await resp.aclose()
                raise errors.KubeError(f"{what}: timed out") from exc
            except errors.KubeError:
                if resp is not None:
                    await resp.aclose()
                raise
            except _NETWORK_ERRORS as exc:
                if resp is not None:
                    await resp.aclose()
                raise errors.KubeError(f"{what}: {describe(exc)}") from exc
            except BaseException:
                if resp is not None:
                    await resp.aclose()
                raise
            assert resp is not None
            resp.expire_at(deadline)
            return resp

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
