"""Bytes in and out of one non-blocking socket on the event loop's selector, TLS done by
``ssl.SSLSocket`` in C: the socket layer under :mod:`ccm.kube.h1`.

asyncio's own transports pass every TLS record through a Python-level protocol
(``asyncio.sslproto``: buffers copied, a state machine stepped per record); here one ``recv``
returns decrypted bytes. :func:`open_socket` connects (each resolved address in turn) and completes
the handshake; :class:`SocketTransport` feeds a :class:`Receiver` and sends what it is given.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
from typing import Protocol

__all__ = ["Receiver", "SocketTransport", "open_socket"]

#: Bytes asked of the socket per read, and reads per readiness callback before yielding.
_READ_SIZE = 2**18
_READS_PER_CALLBACK = 16


class Receiver(Protocol):
    """What a :class:`SocketTransport` reports to."""

    def connection_made(self, transport: SocketTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Until ``fd`` is readable (or writable)."""
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await waiter
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def open_socket(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> socket.socket:
    """A connected non-blocking socket to ``host:port``, TLS handshake done when ``context``."""
    try:
        ip = ipaddress.ip_address(host)
        addresses: list[tuple[int, tuple[str, int] | tuple[str, int, int, int]]] = [
            (socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, port))
        ]
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [(info[0], info[4]) for info in infos]  # type: ignore[misc]
    last: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        break
    else:
        raise last or OSError(f"no address for {host}")
    if context is None:
        return sock
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await _ready(loop, tls.fileno(), write=False)
            except ssl.SSLWantWriteError:
                await _ready(loop, tls.fileno(), write=True)
    except BaseException:
        tls.close()
        raise


_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class SocketTransport:
    """One connected socket (TLS or not) on the loop's selector, reporting to ``protocol``.

    Reads are drained until the socket (and OpenSSL's buffer) would block, a bounded number per
    callback; writes that would block are kept, in order, until the socket is writable.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Receiver
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._closing = False
        self._paused = False
        self._pending: collections.deque[bytes] = collections.deque()
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        sock = self._sock
        for _ in range(_READS_PER_CALLBACK):
            if self._paused or self._closing:
                return
            try:
                data = sock.recv(_READ_SIZE)
            except _WOULD_BLOCK:
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            except OSError as exc:
                self._close(exc)
                return
            if not data:
                self._close(None)
                return
            self._protocol.data_received(data)
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            # Decrypted bytes wait in OpenSSL's buffer: the selector will not say so.
            self._loop.call_soon(self._read_ready)

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._pending:
            self._pending.append(data)
            return
        try:
            sent = self._sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            self._close(exc)
            return
        if sent < len(data):
            self._pending.append(data[sent:])
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        while self._pending:
            data = self._pending[0]
            try:
                sent = self._sock.send(data)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._close(exc)
                return
            if sent < len(data):
                self._pending[0] = data[sent:]
                return
            self._pending.popleft()
        self._loop.remove_writer(self._fd)

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        if not self._paused and not self._closing:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused and not self._closing:
            self._paused = False
            self._loop.add_reader(self._fd, self._read_ready)
            self._loop.call_soon(self._read_ready)  # what OpenSSL may already hold

    def abort(self) -> None:
        self._close(None)

    def _close(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._pending:
            self._pending.clear()
            self._loop.remove_writer(self._fd)
        self._loop.call_soon(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
