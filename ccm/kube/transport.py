"""How ccm's client sends one HTTP request: the :class:`Transport` interface and its values.

A :class:`Transport` sends to one apiserver; :class:`ccm.kube.h1.H1Transport` does it over the
network (:class:`ccm.kube.http.AiohttpTransport` through a proxy) and
:class:`ccm.kube.fake.FakeApiServer` in memory, for unit tests.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field

from ccm.kube import auth, kubeconfig

__all__ = [
    "BufferedResponse",
    "HttpRequest",
    "HttpResponse",
    "NetworkTransport",
    "StaticTokenTransport",
    "TokenTransport",
    "Transport",
    "describe",
]


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request to the apiserver, as a :class:`Transport` sees it."""

    method: str
    path: str  # absolute path, already escaped, no query
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float | None = None  # total seconds for the whole exchange; None: no limit
    stream: bool = False  # True: the caller reads the body incrementally (watches)


class HttpResponse(abc.ABC):
    """A response: status, lower-cased headers, and a body read at once or in chunks."""

    status: int
    headers: Mapping[str, str]

    @abc.abstractmethod
    async def read(self) -> bytes: ...

    @abc.abstractmethod
    def iter_chunks(self) -> AsyncGenerator[bytes, None]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class BufferedResponse(HttpResponse):
    """A response whose body is already in memory."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    async def read(self) -> bytes:
        return self.body

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        if self.body:
            yield self.body

    async def aclose(self) -> None:
        pass


class Transport(abc.ABC):
    """Sends requests to one apiserver. Raises :class:`ccm.errors.KubeError` if it cannot.

    A non-streaming request returns with the body read and the connection released; a streaming
    one returns an open response the caller must ``aclose()``.
    """

    host: str  # the apiserver URL, e.g. https://127.0.0.1:6443

    @abc.abstractmethod
    async def send(self, request: HttpRequest) -> HttpResponse: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    def with_bearer_token(self, token: str) -> TokenTransport:
        """A transport to the same apiserver that authenticates with ``token`` only (no client
        certificate, none of this transport's credentials). The default sends through this
        transport with an ``Authorization`` header, which suits in-memory fakes."""
        return _HeaderTokenTransport(self, token)


class TokenTransport(Transport):
    """A transport authenticating with a bearer token that can be replaced (token refresh)."""

    @abc.abstractmethod
    def set_token(self, token: str) -> None: ...


class NetworkTransport(Transport):
    """A transport to the apiserver of a kubeconfig :class:`~ccm.kube.kubeconfig.Connection` with
    its credentials: each request carries the credentials' headers, and a 401 the credentials can
    fix (a rotated token file, an exec plugin run again) is sent once more. A subclass moves the
    bytes (:meth:`_open`, :meth:`_exchange`)."""

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
        self._open()

    @abc.abstractmethod
    def _open(self) -> None:
        """Build what sends the bytes (TLS context, connection pool) from :attr:`connection` and
        :attr:`credentials`."""

    @abc.abstractmethod
    async def _exchange(
        self, request: HttpRequest, headers: dict[str, str], what: str
    ) -> HttpResponse:
        """Send ``request`` with ``headers``; ``what`` names it in errors."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        what = f"{request.method} {self.host}{request.path}"
        for attempt in range(2):
            headers = dict(request.headers)
            headers.update(await self.credentials.headers())
            resp = await self._exchange(request, headers, what)
            if resp.status == 401 and attempt == 0 and self.credentials.invalidate():
                await resp.aclose()
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def with_bearer_token(self, token: str) -> TokenTransport:
        """A new connection pool to the same apiserver, trusting the same CA, that presents only
        ``token`` (a client certificate would win over the token at the apiserver)."""
        static = auth.StaticToken(token)
        inner = type(self)(
            self.connection.without_credentials(), static, connect_timeout=self._connect_timeout
        )
        return StaticTokenTransport(inner, static)


class StaticTokenTransport(TokenTransport):
    """``inner`` (a network transport built with ``token`` as its only credentials) behind the
    :class:`TokenTransport` interface: :meth:`set_token` replaces the token it presents."""

    def __init__(self, inner: Transport, token: auth.StaticToken) -> None:
        self.host = inner.host
        self._inner = inner
        self._token = token

    def set_token(self, token: str) -> None:
        self._token.token = token

    async def send(self, request: HttpRequest) -> HttpResponse:
        return await self._inner.send(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _HeaderTokenTransport(TokenTransport):
    def __init__(self, inner: Transport, token: str) -> None:
        self.host = inner.host
        self._inner = inner
        self._token = token

    def set_token(self, token: str) -> None:
        self._token = token

    async def send(self, request: HttpRequest) -> HttpResponse:
        headers = {**request.headers, "Authorization": f"Bearer {self._token}"}
        return await self._inner.send(dataclasses.replace(request, headers=headers))

    async def aclose(self) -> None:
        return None  # the inner transport belongs to someone else


def describe(exc: BaseException) -> str:
    """One line for an exception, for error messages."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
