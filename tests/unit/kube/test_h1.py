"""The HTTP/1.1 transport against small servers on 127.0.0.1 that answer, misbehave or hang on
purpose: keep-alive reuse, the pool bound, stale connections, streaming with back-pressure,
timeouts, 401 refresh, malformed answers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ccm import certs, errors
from ccm.kube import auth, h1, kubeconfig
from ccm.kube.transport import HttpRequest

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A raw HTTP/1.1 server: ``handler`` runs once per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def _response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def _echo_forever(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
    while True:
        request = await s.read_request(reader)
        w.write(_response(b'{"n": %d, "len": %d}' % (len(s.requests), len(request))))
        await w.drain()


@contextlib.asynccontextmanager
async def _transport(
    port: int, credentials: auth.Credentials | None = None, path: str = ""
) -> AsyncIterator[h1.H1Transport]:
    conn = kubeconfig.Connection(where="test", server=f"http://127.0.0.1:{port}{path}")
    transport = h1.H1Transport(conn, credentials, connect_timeout=5)
    try:
        yield transport
    finally:
        await transport.aclose()


def _get(path: str = "/api/v1/nodes", **kw: object) -> HttpRequest:
    return HttpRequest(method="GET", path=path, timeout=10, **kw)  # type: ignore[arg-type]


async def test_sequential_requests_share_one_keep_alive_connection() -> None:
    async with Server(_echo_forever) as server, _transport(server.port) as t:
        for i in range(1, 6):
            resp = await t.send(_get(query=[("labelSelector", "a=b,c!=d")]))
            assert resp.status == 200
            assert (await resp.read()).startswith(b'{"n": %d' % i)
        assert server.connections == 1
        head = server.requests[0].split(b"\r\n")
        assert head[0] == b"GET /api/v1/nodes?labelSelector=a%3Db%2Cc%21%3Dd HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}".encode() in head


async def test_the_server_url_path_prefixes_every_request() -> None:
    async with Server(_echo_forever) as server, _transport(server.port, path="/k8s/c1/") as t:
        await (await t.send(_get("/api/v1/nodes"))).read()
        assert server.requests[0].startswith(b"GET /k8s/c1/api/v1/nodes HTTP/1.1\r\n")


async def test_a_body_is_sent_with_its_length() -> None:
    async with Server(_echo_forever) as server, _transport(server.port) as t:
        req = HttpRequest(method="PATCH", path="/x", body=b'{"a":1}', timeout=10)
        await (await t.send(req)).read()
        assert b"Content-Length: 7\r\n" in server.requests[0]
        assert server.requests[0].endswith(b'\r\n\r\n{"a":1}')


async def test_concurrent_requests_stay_within_the_pool_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(h1, "POOL_SIZE", 3)
    in_flight = 0
    most = 0

    async def slow(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        nonlocal in_flight, most
        while True:
            await s.read_request(reader)
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            w.write(_response(b"{}"))
            await w.drain()

    async with Server(slow) as server, _transport(server.port) as t:
        results = await asyncio.gather(*(t.send(_get()) for _ in range(12)))
        assert [r.status for r in results] == [200] * 12
        assert server.connections == 3
        assert most == 3


async def test_connection_close_is_honoured() -> None:
    async def once(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        w.write(_response(b"{}", extra="Connection: close\r\n"))
        await w.drain()

    async with Server(once) as server, _transport(server.port) as t:
        for _ in range(3):
            assert (await t.send(_get())).status == 200
        assert server.connections == 3


async def _answer_then_drop(
    reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server
) -> None:
    """Answer one request as keep-alive, then close the idle connection without saying so."""
    await s.read_request(reader)
    w.write(_response(b"{}"))
    await w.drain()
    await reader.read(1)  # the next request's first bytes: hang up without answering


async def test_an_idempotent_request_on_a_stale_connection_is_sent_again_on_a_new_one() -> None:
    async with Server(_answer_then_drop) as server, _transport(server.port) as t:
        assert (await t.send(_get())).status == 200
        assert (await t.send(_get())).status == 200
        assert server.connections == 2  # the second went out again on a new connection


async def test_a_non_idempotent_request_on_a_stale_connection_fails_and_is_not_resent() -> None:
    async with Server(_answer_then_drop) as server, _transport(server.port) as t:
        assert (await t.send(_get())).status == 200
        post = HttpRequest(method="POST", path="/api/v1/namespaces/x/events", body=b"{}")
        with pytest.raises(errors.KubeError, match="connection closed by the server"):
            await t.send(post)
        assert server.connections == 1
        assert (await t.send(_get())).status == 200  # the pool recovers


async def test_a_streamed_chunked_body_arrives_whole_and_in_order() -> None:
    lines = [b'{"type":"ADDED","object":{"n":%d}}\n' % i for i in range(300)]

    async def chunked(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            await s.read_request(reader)
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for line in lines:
                w.write(b"%x\r\n%s\r\n" % (len(line), line))
                await w.drain()
            w.write(b"0\r\n\r\n")
            await w.drain()

    async with Server(chunked) as server, _transport(server.port) as t:
        resp = await t.send(_get(stream=True))
        got = b"".join([c async for c in resp.iter_chunks()])
        await resp.aclose()
        assert got == b"".join(lines)
        again = await t.send(_get(stream=True))  # on the same connection, after the end
        assert b"".join([c async for c in again.iter_chunks()]) == b"".join(lines)
        assert server.connections == 1


async def test_a_slow_reader_pauses_the_socket_and_loses_nothing() -> None:
    chunk = b"x" * 65536
    total = 3 * h1.HIGH_WATER

    async def big(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        for _ in range(total // len(chunk)):
            w.write(chunk)
            await w.drain()

    async with Server(big) as server, _transport(server.port) as t:
        resp = await t.send(_get(stream=True))
        assert isinstance(resp, h1._Response)
        for _ in range(200):  # let the server fill the client's buffer
            await asyncio.sleep(0.005)
            if resp._conn is not None and resp._conn._paused:
                break
        assert resp._conn is not None and resp._conn._paused
        assert resp._buffered <= h1.HIGH_WATER + 2**18
        received = 0
        async for part in resp.iter_chunks():
            received += len(part)
        assert received == total
        assert server.connections == 1


async def test_closing_an_unfinished_stream_drops_its_connection() -> None:
    async def endless(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        await reader.read(1)  # until the client hangs up

    async with Server(endless) as server, _transport(server.port) as t:
        resp = await t.send(_get(stream=True))
        async for part in resp.iter_chunks():
            assert part == b"hello"
            break
        await resp.aclose()
        resp2 = await t.send(_get(stream=True))
        await resp2.aclose()
        assert server.connections == 2


async def test_a_request_that_outlives_its_timeout_fails_and_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(h1, "POOL_SIZE", 1)
    hang = True

    async def maybe_hang(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            await s.read_request(reader)
            if hang:
                await reader.read(1)
                return
            w.write(_response(b"{}"))
            await w.drain()

    async with Server(maybe_hang) as server, _transport(server.port) as t:
        with pytest.raises(errors.KubeError, match="timed out"):
            await t.send(HttpRequest(method="GET", path="/slow", timeout=0.2))
        hang = False
        assert (await t.send(_get())).status == 200
        assert server.connections == 2


async def test_a_watch_times_out_at_its_deadline_while_streaming() -> None:
    async def trickle(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await w.drain()
        await reader.read(1)

    async with Server(trickle) as server, _transport(server.port) as t:
        resp = await t.send(HttpRequest(method="GET", path="/w", timeout=0.2, stream=True))
        with pytest.raises(errors.KubeError, match="timed out"):
            async for _ in resp.iter_chunks():
                pass
        await resp.aclose()
        assert server.connections == 1


class _Rotating(auth.Credentials):
    def __init__(self) -> None:
        self.token = "old"

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> bool:
        self.token = "new"
        return True


async def test_a_401_refreshes_the_credentials_and_resends_once() -> None:
    async def auth_check(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            request = await s.read_request(reader)
            ok = b"Authorization: Bearer new" in request
            w.write(_response(b"{}", "200 OK" if ok else "401 Unauthorized"))
            await w.drain()

    async with Server(auth_check) as server, _transport(server.port, _Rotating()) as t:
        assert (await t.send(_get())).status == 200
        assert len(server.requests) == 2


async def test_a_malformed_answer_is_a_kube_error() -> None:
    async def garbage(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
        await w.drain()
        await reader.read(1)

    async with Server(garbage) as server, _transport(server.port) as t:
        with pytest.raises(errors.KubeError, match=r"GET http://127\.0\.0\.1"):
            await t.send(_get())


async def test_a_line_break_in_a_header_is_refused_before_sending() -> None:
    async with Server(_echo_forever) as server, _transport(server.port) as t:
        with pytest.raises(errors.KubeError, match="line break"):
            await t.send(_get(headers={"Authorization": "Bearer x\r\nX-Evil: 1"}))
        assert server.requests == []


async def test_an_unreachable_server_is_a_kube_error() -> None:
    async with Server(_echo_forever) as server:
        port = server.port
    async with _transport(port) as t:
        with pytest.raises(errors.KubeError, match=r"GET http://127\.0\.0\.1"):
            await t.send(_get())


def test_a_non_http_server_url_is_a_config_error() -> None:
    conn = kubeconfig.Connection(where="kc.yaml", server="ftp://x")
    with pytest.raises(errors.ConfigError, match=r"kc\.yaml: server"):
        h1.H1Transport(conn)


async def test_tls_with_a_client_certificate_and_large_bodies_both_ways(tmp_path: Path) -> None:
    """The server trusts only our CA's client certificate; 4 MiB go up and 6 MiB come back, more
    than one TLS record and more than a socket buffer either way."""
    ca = certs.new_ca("test-ca")
    server_pair = certs.issue(ca, "server", usage="server", ip_addresses=["127.0.0.1"])
    client_pair = certs.issue(ca, "admin", usage="client", organizations=["system:masters"])
    server_pair.write(tmp_path / "s.crt", tmp_path / "s.key")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.cert_pem.decode())
    server_ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    up = bytes(range(256)) * (4 * 4096)
    down = b"y" * (6 * 2**20)
    peers: list[object] = []

    async def serve(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peers.append(w.get_extra_info("peercert"))
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        ok = await reader.readexactly(length) == up
        w.write(_response(down if ok else b"bad"))
        await w.drain()
        await reader.read(1)
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    conn = kubeconfig.Connection(
        where="test",
        server=f"https://127.0.0.1:{port}",
        ca_data=ca.cert_pem,
        cert_data=client_pair.cert_pem,
        key_data=client_pair.key_pem,
    )
    transport = h1.H1Transport(conn)
    try:
        req = HttpRequest(method="PUT", path="/big", body=up, timeout=30)
        resp = await transport.send(req)
        assert resp.status == 200
        assert await resp.read() == down
        assert peers and peers[0]  # the server saw our client certificate
    finally:
        await transport.aclose()
        server.close()


async def test_tls_refuses_a_server_outside_the_trusted_ca(tmp_path: Path) -> None:
    pair = certs.self_signed("stranger", ip_addresses=["127.0.0.1"])
    pair.write(tmp_path / "s.crt", tmp_path / "s.key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")

    async def serve(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.read(1)
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    ca = certs.new_ca("other-ca")
    conn = kubeconfig.Connection(
        where="test", server=f"https://127.0.0.1:{port}", ca_data=ca.cert_pem
    )
    transport = h1.H1Transport(conn)
    try:
        with pytest.raises(errors.KubeError, match="CERTIFICATE_VERIFY_FAILED"):
            await transport.send(_get())
    finally:
        await transport.aclose()
        server.close()


async def test_a_connection_paused_by_a_large_answer_reads_again_for_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An answer over the pause threshold that arrives whole in one read leaves the connection
    paused at its end; the next request on that connection must still be read."""
    monkeypatch.setattr(h1, "HIGH_WATER", 1000)
    big = b"z" * 20_000

    async def answer(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            await s.read_request(reader)
            w.write(_response(big if len(s.requests) == 1 else b"{}"))
            await w.drain()

    async with Server(answer) as server, _transport(server.port) as t:
        first = await t.send(_get())
        assert len(await first.read()) == len(big)
        second = await t.send(HttpRequest(method="GET", path="/again", timeout=5))
        assert second.status == 200
        assert server.connections == 1


async def test_a_bearer_token_transport_presents_only_its_token_and_takes_a_new_one() -> None:
    async with Server(_echo_forever) as server:
        conn = kubeconfig.Connection(
            where="test", server=f"http://127.0.0.1:{server.port}", token="admin-token"
        )
        base = h1.H1Transport(conn, auth.StaticToken("admin-token"))
        scoped = base.with_bearer_token("sa-token-1")
        try:
            await (await scoped.send(_get())).read()
            scoped.set_token("sa-token-2")
            await (await scoped.send(_get())).read()
        finally:
            await scoped.aclose()
            await base.aclose()
        assert b"Authorization: Bearer sa-token-1\r\n" in server.requests[0]
        assert b"Authorization: Bearer sa-token-2\r\n" in server.requests[1]
        assert all(b"admin-token" not in r for r in server.requests)
