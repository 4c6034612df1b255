"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's server.

The provider's endpoints point at the proxy (``[ServiceOverride]`` URLs); the proxy forwards each
AWS call to moto, except a seeded random share of them, which get instead:

- ``throttle``: AWS's throttling answer of the service (EC2: HTTP 503 ``RequestLimitExceeded``;
  ELB and ELBv2: HTTP 400 ``Throttling``), the call not made;
- ``error``: HTTP 500 ``InternalFailure``, the call not made;
- ``lost``: the call made on moto, its answer replaced by HTTP 500 ``InternalFailure`` (a
  response lost on the way back: the retry of a create finds it done).

``counts`` tells how many of each were served (and ``ok``, forwarded untouched).
"""

from __future__ import annotations

import http.client
import http.server
import random
import re
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


def _ec2_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"
    ).encode()


def _query_error(code: str, message: str) -> bytes:
    return (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>fault</RequestId></ErrorResponse>"
    ).encode()


class FaultProxy:
    """``with FaultProxy(moto_url, throttle=0.05, error=0.1, lost=0.05) as proxy: proxy.url``"""

    def __init__(
        self,
        upstream: str,
        *,
        throttle: float = 0.0,
        error: float = 0.0,
        lost: float = 0.0,
        seed: int = 16,
    ) -> None:
        target = urlsplit(upstream)
        self.host, self.port = str(target.hostname), int(target.port or 80)
        self.rates = {"throttle": throttle, "error": error, "lost": lost}
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.enabled = True
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy.handle(self)

            def do_GET(self) -> None:
                proxy.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="aws-fault-proxy", daemon=True
        )

    def _pick(self) -> str:
        with self._lock:
            if not self.enabled:
                return "ok"
            draw = self._random.random()
        for kind, rate in self.rates.items():
            if draw < rate:
                return kind
            draw -= rate
        return "ok"

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        match = _SERVICE.search(request.headers.get("Authorization") or "")
        service = match.group(1) if match else ""
        kind = self._pick() if service else "ok"
        with self._lock:
            self.counts[kind] += 1
        if kind == "throttle":
            if service == "ec2":
                self._answer(
                    request, 503, _ec2_error("RequestLimitExceeded", "Request limit exceeded.")
                )
            else:
                self._answer(request, 400, _query_error("Throttling", "Rate exceeded"))
            return
        if kind == "error":
            self._answer(request, 500, self._internal(service))
            return
        status, headers, answer = self._forward(request, body)
        if kind == "lost":
            self._answer(request, 500, self._internal(service))
            return
        self._answer(request, status, answer, headers)

    @staticmethod
    def _internal(service: str) -> bytes:
        if service == "ec2":
            return _ec2_error("InternalError", "An internal error has occurred")
        return _query_error("InternalFailure", "An internal error has occurred")

    def _forward(
        self, request: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "connection"}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = {
                k: v
                for k, v in response.getheaders()
                if k.lower() in ("content-type", "x-amzn-requestid", "x-amz-request-id")
            }
            return response.status, kept, answer
        finally:
            connection.close()

    @staticmethod
    def _answer(
        request: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        for key, value in (headers or {"Content-Type": "text/xml"}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
