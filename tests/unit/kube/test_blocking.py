"""The blocking facade: synchronous code and threads share the one KubeClient request path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube.blocking import BlockingClient


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "body": body,
                "auth": self.headers.get("Authorization"),
                "ua": self.headers.get("User-Agent"),
                "accept": self.headers.get("Accept"),
                "type": self.headers.get("Content-Type"),
            }
        )
        if "missing" in self.path:
            payload = {"kind": "Status", "code": 404, "reason": "NotFound", "message": "nope"}
            data, status = json.dumps(payload).encode(), 404
        else:
            data, status = json.dumps({"path": self.path}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("H", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()


def _kubeconfig(path: Path, server: str) -> str:
    cfg = {
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "tok"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(cfg))
    return str(path)


def test_raw_requests_from_threads_go_through_the_kube_client(
    server: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, seen = server
    with BlockingClient(_kubeconfig(tmp_path / "kc", url), user_agent="tool") as kube:
        assert kube.host == url
        status, body = kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": "a"}})
        assert (status, json.loads(body)) == (200, {"path": "/api/v1/namespaces"})
        status, body = kube.request("GET", "/missing")
        assert status == 404  # answered as it came, not raised
        assert json.loads(body)["reason"] == "NotFound"
        status, _ = kube.request("GET", "/api/v1/nodes?labelSelector=a%3Db", accept="text/plain")
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: kube.request("GET", f"/n/{i}")[0], range(32)))
        assert statuses == [200] * 32
        with pytest.raises(errors.NotFoundError):  # the typed verbs raise as always
            kube.call(lambda c: c.get(kclient.NODES, "missing"))
    post = seen[0]
    assert post["auth"] == "Bearer tok"
    assert post["ua"] == "tool"
    assert post["type"] == "application/json"
    assert json.loads(post["body"]) == {"metadata": {"name": "a"}}
    assert seen[2]["path"] == "/api/v1/nodes?labelSelector=a%3Db"
    assert seen[2]["accept"] == "text/plain"
    with pytest.raises(errors.KubeError, match="closed"):
        kube.request("GET", "/after-close")


def test_a_bad_kubeconfig_fails_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="file not found"):
        BlockingClient(str(tmp_path / "missing"))
