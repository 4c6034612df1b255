"""KubeClient over its real aiohttp transport, against a small local HTTP server.

Covers what the fake cannot: kubeconfig loading and its errors, credentials on the wire,
Retry-After, transport failures and timeouts, and watch streams split across chunks. The real
kube-apiserver is in tests/e2e/test_kube_edge.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ccm import dryrun, errors, logs, metrics
from ccm.kube import client as kclient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Server:
    """Routes ``(method, path)`` to handlers and records what it received."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.port = 0

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def json(self, method: str, path: str, body: Any, status: int = 200) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status)

        self.on(method, path, handler)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.bodies.append(await request.read())
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response(status_body(404, "NotFound", "no route"), status=404)
        return await handler(request)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.dispatch)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    srv.port = test_server.port or 0
    try:
        yield srv
    finally:
        await test_server.close()


def write_kubeconfig(
    path: Path, server: str, *, user: dict[str, Any] | None = None, context: str = "test"
) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "secret-token"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
        "current-context": context,
    }
    path.write_bytes(orjson.dumps(cfg))  # JSON is YAML
    return path


@pytest.fixture
async def kube(server: Server, tmp_path: Path) -> AsyncIterator[kclient.KubeClient]:
    cfg = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.port}")
    client = await kclient.KubeClient.connect(
        kubeconfig=str(cfg), user_agent="ccm-test", request_timeout=2.0, qps=1000, burst=1000
    )
    try:
        yield client
    finally:
        await client.aclose()


# -- resources and paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("res", "kwargs", "path"),
    [
        pytest.param(kclient.NODES, {}, "/api/v1/nodes", id="cluster collection"),
        pytest.param(kclient.NODES, {"name": "n1"}, "/api/v1/nodes/n1", id="cluster object"),
        pytest.param(
            kclient.NODES,
            {"name": "n1", "subresource": "status"},
            "/api/v1/nodes/n1/status",
            id="subresource",
        ),
        pytest.param(kclient.SERVICES, {}, "/api/v1/services", id="all namespaces"),
        pytest.param(
            kclient.SERVICES,
            {"namespace": "ns", "name": "s"},
            "/api/v1/namespaces/ns/services/s",
            id="namespaced object",
        ),
        pytest.param(
            kclient.LEASES,
            {"namespace": "kube-system", "name": "ccm"},
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ccm",
            id="group resource",
        ),
        pytest.param(
            kclient.TOKENREVIEWS,
            {},
            "/apis/authentication.k8s.io/v1/tokenreviews",
            id="cluster-scoped group resource",
        ),
        pytest.param(
            kclient.SERVICEACCOUNTS,
            {"namespace": "kube-system", "name": "node-controller", "subresource": "token"},
            "/api/v1/namespaces/kube-system/serviceaccounts/node-controller/token",
            id="token subresource",
        ),
        pytest.param(
            kclient.CONFIGMAPS,
            {"namespace": "ns", "name": "a:b"},
            "/api/v1/namespaces/ns/configmaps/a:b",
            id="colon stays readable",
        ),
    ],
)
def test_resource_paths(res: kclient.Resource, kwargs: dict[str, Any], path: str) -> None:
    assert res.path(**kwargs) == path


def test_resource_path_rejects_scope_mistakes() -> None:
    with pytest.raises(ValueError, match="cluster-scoped"):
        kclient.NODES.path(namespace="ns")
    with pytest.raises(ValueError, match="needs a namespace"):
        kclient.SERVICES.path(name="s")
    with pytest.raises(ValueError, match="subresource needs a name"):
        kclient.NODES.path(subresource="status")
    assert kclient.LEASES.api_version == "coordination.k8s.io/v1"
    assert kclient.NODES.api_version == "v1"


# -- requests ----------------------------------------------------------------------------------


async def test_get_sends_credentials_user_agent_and_reads_json(
    server: Server, kube: kclient.KubeClient
) -> None:
    server.json("GET", "/api/v1/nodes/n1", {"kind": "Node", "metadata": {"name": "n1"}})
    node = await kube.get(kclient.NODES, "n1")
    assert node == {"kind": "Node", "metadata": {"name": "n1"}}
    req = server.seen[-1]
    assert req.headers["Authorization"] == "Bearer secret-token"
    assert req.headers["User-Agent"] == "ccm-test"
    assert req.headers["Accept"] == "application/json"
    assert req.headers["Accept-Encoding"] == "identity"
    assert kube.host == f"http://127.0.0.1:{server.port}"
    assert kube.requests_total["get"] == 1


async def test_for_component_appends_to_the_user_agent(
    server: Server, kube: kclient.KubeClient
) -> None:
    server.json("GET", "/api/v1/nodes/n1", {})
    component = kube.for_component("node-controller")
    await component.get(kclient.NODES, "n1")
    assert server.seen[-1].headers["User-Agent"] == "ccm-test/node-controller"
    assert component.limiter is kube.limiter
    assert kube.all_requests_total["get"] == 1


@pytest.mark.parametrize(
    ("code", "reason", "exc"),
    [
        pytest.param(400, "BadRequest", errors.BadRequestError, id="400"),
        pytest.param(401, "Unauthorized", errors.UnauthorizedError, id="401"),
        pytest.param(403, "Forbidden", errors.ForbiddenError, id="403"),
        pytest.param(404, "NotFound", errors.NotFoundError, id="404"),
        pytest.param(409, "Conflict", errors.ConflictError, id="409 conflict"),
        pytest.param(409, "AlreadyExists", errors.AlreadyExistsError, id="409 already exists"),
        pytest.param(410, "Expired", errors.GoneError, id="410"),
        pytest.param(422, "Invalid", errors.InvalidError, id="422"),
        pytest.param(429, "TooManyRequests", errors.TooManyRequestsError, id="429 no retry-after"),
        pytest.param(500, "InternalError", errors.ServerError, id="500"),
        pytest.param(503, "ServiceUnavailable", errors.ServerError, id="503"),
    ],
)
async def test_error_statuses_become_typed_errors(
    server: Server, kube: kclient.KubeClient, code: int, reason: str, exc: type[errors.ApiError]
) -> None:
    server.json("GET", "/api/v1/nodes/x", status_body(code, reason, f"it said {code}"), code)
    with pytest.raises(exc, match=f"it said {code}") as info:
        await kube.get(kclient.NODES, "x")
    assert info.value.status_code == code
    assert info.value.reason == reason
    assert info.value.body["code"] == code


async def test_a_non_status_error_body_still_gives_a_typed_error(
    server: Server, kube: kclient.KubeClient
) -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    server.on("GET", "/api/v1/nodes/x", html)
    with pytest.raises(errors.ServerError, match="Bad Gateway") as info:
        await kube.get(kclient.NODES, "x")
    assert info.value.status_code == 502


async def test_retry_after_is_honoured(server: Server, kube: kclient.KubeClient) -> None:
    calls = 0

    async def throttled(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.json_response(
                status_body(429, "TooManyRequests", "slow down"),
                status=429,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"metadata": {"name": "x"}})

    server.on("GET", "/api/v1/nodes/x", throttled)
    assert (await kube.get(kclient.NODES, "x"))["metadata"]["name"] == "x"
    assert calls == 3
    assert kube.requests_total["get"] == 3


async def test_an_unreachable_apiserver_raises_kube_error(tmp_path: Path) -> None:
    probe = TestServer(web.Application(), host="127.0.0.1")
    await probe.start_server()
    port = probe.port
    await probe.close()  # nothing listens there any more
    cfg = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    async with await kclient.KubeClient.connect(kubeconfig=str(cfg)) as kube:
        with pytest.raises(errors.KubeError, match=f"GET http://127.0.0.1:{port}/api/v1/nodes/n"):
            await kube.get(kclient.NODES, "n")
    errors_counted = metrics.REGISTRY.get_sample_value(
        "rest_client_requests_total",
        {"code": "<error>", "method": "GET", "host": f"127.0.0.1:{port}"},
    )
    assert errors_counted == 1


async def test_a_slow_apiserver_times_out_as_kube_error(server: Server, tmp_path: Path) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response({})

    server.on("GET", "/api/v1/nodes/slow", slow)
    cfg = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{server.port}")
    async with await kclient.KubeClient.connect(kubeconfig=str(cfg), request_timeout=0.2) as kube:
        with pytest.raises(errors.KubeError, match="timed out") as info:
            await kube.get(kclient.NODES, "slow")
    assert not isinstance(info.value, errors.ApiError)


async def test_a_patch_without_decode_sends_the_same_request_and_leaves_the_body_undecoded(
    server: Server, kube: kclient.KubeClient
) -> None:
    async def not_json(request: web.Request) -> web.StreamResponse:
        server.bodies.append(await request.read())
        return web.Response(status=200, body=b"{not json", content_type="application/json")

    server.on("PATCH", "/api/v1/nodes/n/status", not_json)
    body = {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}
    patched = await kube.patch(
        kclient.NODES, "n", body, subresource="status", patch_type="merge", decode=False
    )
    assert patched is None
    assert server.seen[-1].headers["Content-Type"] == "application/merge-patch+json"
    # Only the metadata is asked for, with plain JSON as the fallback.
    assert server.seen[-1].headers["Accept"] == (
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
    )
    assert orjson.loads(server.bodies[-1]) == body
    # Decoding the same answer fails: decode=False is what skipped it.
    with pytest.raises(errors.KubeError, match="malformed JSON"):
        await kube.patch(kclient.NODES, "n", body, subresource="status", patch_type="merge")
    assert server.seen[-1].headers["Accept"] == "application/json"


@pytest.mark.parametrize("decode", [True, False])
async def test_a_patch_error_is_the_same_with_or_without_decode(
    server: Server, kube: kclient.KubeClient, decode: bool
) -> None:
    server.json("PATCH", "/api/v1/nodes/gone", status_body(404, "NotFound", "no gone"), 404)
    with pytest.raises(errors.NotFoundError, match="no gone") as info:
        await kube.patch(kclient.NODES, "gone", {"a": 1}, decode=decode)  # type: ignore[call-overload]
    assert info.value.status_code == 404
    assert info.value.reason == "NotFound"
    assert info.value.body["message"] == "no gone"


async def test_writes_send_json_with_the_right_content_types(
    server: Server, kube: kclient.KubeClient
) -> None:
    server.json("POST", "/api/v1/namespaces/ns/configmaps", {"metadata": {"name": "c"}}, 201)
    server.json("PUT", "/api/v1/namespaces/ns/configmaps/c", {"metadata": {"name": "c"}})
    server.json("PATCH", "/api/v1/nodes/n/status", {"metadata": {"name": "n"}})
    server.json("DELETE", "/api/v1/nodes/n", {"kind": "Status", "status": "Success"})
    server.json("DELETE", "/api/v1/namespaces/ns/services/s", {"kind": "Service"})

    await kube.create(kclient.CONFIGMAPS, {"metadata": {"name": "c", "namespace": "ns"}})
    assert server.seen[-1].headers["Content-Type"] == "application/json"
    assert orjson.loads(server.bodies[-1])["metadata"]["name"] == "c"
    await kube.replace(kclient.CONFIGMAPS, "c", {"metadata": {"name": "c"}}, namespace="ns")
    assert server.seen[-1].method == "PUT"

    expected = {
        "strategic": "application/strategic-merge-patch+json",
        "merge": "application/merge-patch+json",
        "json": "application/json-patch+json",
        "apply": "application/apply-patch+yaml",
    }
    for patch_type, content_type in expected.items():
        body: Any = [] if patch_type == "json" else {"status": {}}
        await kube.patch(
            kclient.NODES,
            "n",
            body,
            subresource="status",
            patch_type=patch_type,  # type: ignore[arg-type]
            field_manager="ccm" if patch_type == "apply" else None,
            force=True if patch_type == "apply" else None,
        )
        assert server.seen[-1].headers["Content-Type"] == content_type
    assert dict(server.seen[-1].query) == {"fieldManager": "ccm", "force": "true"}
    with pytest.raises(ValueError, match="field_manager"):
        await kube.patch(kclient.NODES, "n", {}, patch_type="apply")

    assert await kube.delete(kclient.NODES, "n", preconditions={"uid": "u"}) is None
    assert orjson.loads(server.bodies[-1]) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "u"},
    }
    assert await kube.delete(kclient.SERVICES, "s", namespace="ns") == {"kind": "Service"}
    assert kube.write_count == 8


async def test_list_passes_selectors_and_paging(server: Server, kube: kclient.KubeClient) -> None:
    pages = {
        "": {"metadata": {"resourceVersion": "10", "continue": "p2"}, "items": [{"a": 1}]},
        "p2": {"metadata": {"resourceVersion": "10"}, "items": [{"a": 2}]},
    }

    async def listing(request: web.Request) -> web.StreamResponse:
        return web.json_response(pages[request.query.get("continue", "")])

    server.on("GET", "/api/v1/namespaces/ns/services", listing)
    items, rv = await kube.list_all(
        kclient.SERVICES, namespace="ns", label_selector="a=b,c in (d)", page_size=1
    )
    assert rv == "10"
    assert items == [
        {"a": 1, "kind": "Service", "apiVersion": "v1"},
        {"a": 2, "kind": "Service", "apiVersion": "v1"},
    ]
    assert dict(server.seen[0].query) == {"labelSelector": "a=b,c in (d)", "limit": "1"}
    assert dict(server.seen[1].query)["continue"] == "p2"


async def test_request_is_a_raw_escape_hatch(server: Server, kube: kclient.KubeClient) -> None:
    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    server.on("GET", "/healthz", healthz)
    server.json("POST", "/apis/x.io/v1/things", {"made": True}, 201)
    assert await kube.request("GET", "/healthz", query={"verbose": True}) == "ok"
    assert server.seen[-1].query["verbose"] == "true"
    assert await kube.request("POST", "/apis/x.io/v1/things", body={"a": 1}) == {"made": True}
    assert server.seen[-1].headers["Content-Type"] == "application/json"


# -- watch -------------------------------------------------------------------------------------


def watch_handler(lines: list[bytes], *, chunk: int = 7) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        data = b"".join(lines)
        for i in range(0, len(data), chunk):  # split events across chunks on purpose
            await resp.write(data[i : i + chunk])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    return handler


def event(etype: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": etype, "object": obj}) + b"\n"


async def test_watch_yields_events_split_across_chunks(
    server: Server, kube: kclient.KubeClient
) -> None:
    big = {"metadata": {"name": "big", "resourceVersion": "3"}, "data": "x" * 300_000}
    server.on(
        "GET",
        "/api/v1/nodes",
        watch_handler(
            [
                event("ADDED", {"metadata": {"name": "a", "resourceVersion": "2"}}),
                event("MODIFIED", big),
                event("BOOKMARK", {"metadata": {"resourceVersion": "4"}}),
                event("DELETED", {"metadata": {"name": "a", "resourceVersion": "5"}})[:-1],
            ],
            chunk=4096,
        ),
    )
    got = [
        (ev["type"], ev["object"]["metadata"].get("name"))
        async for ev in kube.watch(kclient.NODES, resource_version="1", timeout_seconds=30)
    ]
    assert got == [("ADDED", "a"), ("MODIFIED", "big"), ("BOOKMARK", None), ("DELETED", "a")]
    query = dict(server.seen[-1].query)
    assert query == {
        "watch": "true",
        "resourceVersion": "1",
        "timeoutSeconds": "30",
        "allowWatchBookmarks": "true",
    }
    assert kube.requests_total["watch"] == 1


async def test_watch_error_event_raises_gone(server: Server, kube: kclient.KubeClient) -> None:
    server.on(
        "GET",
        "/api/v1/nodes",
        watch_handler(
            [
                event("ADDED", {"metadata": {"name": "a"}}),
                event("ERROR", status_body(410, "Expired", "too old resource version: 1 (5)")),
            ]
        ),
    )
    got: list[str] = []

    async def consume() -> None:
        async for ev in kube.watch(kclient.NODES, resource_version="1"):
            got.append(ev["type"])

    with pytest.raises(errors.GoneError, match="too old resource version"):
        await consume()
    assert got == ["ADDED"]


async def test_watch_start_failure_raises_the_status(
    server: Server, kube: kclient.KubeClient
) -> None:
    server.json("GET", "/api/v1/nodes", status_body(403, "Forbidden", "no watch for you"), 403)
    with pytest.raises(errors.ForbiddenError, match="no watch for you"):
        async for _ in kube.watch(kclient.NODES, resource_version="1"):
            pass


async def test_watch_malformed_line_raises_kube_error(
    server: Server, kube: kclient.KubeClient
) -> None:
    server.on("GET", "/api/v1/nodes", watch_handler([b"{not json\n"]))
    with pytest.raises(errors.KubeError, match="malformed event"):
        async for _ in kube.watch(kclient.NODES, resource_version="1"):
            pass


async def test_the_rate_limiter_applies_to_watches_too(server: Server, tmp_path: Path) -> None:
    server.on("GET", "/api/v1/nodes", watch_handler([]))
    cfg = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{server.port}")
    async with await kclient.KubeClient.connect(kubeconfig=str(cfg), qps=5, burst=1) as kube:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(3):
            async for _ in kube.watch(kclient.NODES, resource_version="1"):
                pass
        assert loop.time() - start >= 0.35  # 3 requests at 5 qps with a burst of 1


# -- configuration -----------------------------------------------------------------------------


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)


async def config_error(**kwargs: Any) -> str:
    with pytest.raises(errors.ConfigError) as info:
        await kclient.KubeClient.connect(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.usefixtures("no_cluster_env")
async def test_a_missing_kubeconfig_is_a_one_line_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    assert await config_error(kubeconfig=str(path)) == f"kubeconfig {path}: file not found"


@pytest.mark.usefixtures("no_cluster_env")
async def test_a_kubeconfig_env_list_without_any_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert "no such file" in await config_error()


@pytest.mark.usefixtures("no_cluster_env")
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param("clusters: [\n  - name: x\n  bad", "not valid YAML", id="bad yaml"),
        pytest.param("", "file is empty", id="empty"),
        pytest.param("- just\n- a list\n", "not a kubeconfig", id="not a mapping"),
        pytest.param("clusters: {}\n", "'clusters' must be a list", id="clusters not a list"),
        pytest.param("clusters: []\ncontexts: []\n", "no current-context", id="no context"),
        pytest.param(
            "current-context: nope\ncontexts: []\n", 'context "nope" not found', id="bad context"
        ),
        pytest.param(
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n",
            'cluster "c" (of context "x") not found',
            id="missing cluster",
        ),
        pytest.param(
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
            "clusters: [{name: c, cluster: {}}]\n",
            'cluster "c" has no server',
            id="no server",
        ),
        pytest.param(
            "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://h', "
            "certificate-authority-data: 'bm90IGEgY2VydA=='}}]\n"
            "users: [{name: u, user: {token: t}}]\n",
            "kubeconfig",
            id="bad certificate authority",
        ),
    ],
)
async def test_a_malformed_kubeconfig_is_a_one_line_config_error(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    message = await config_error(kubeconfig=str(path))
    assert message.startswith(f"kubeconfig {path}: ")
    assert reason in message


@pytest.mark.usefixtures("no_cluster_env")
async def test_an_unreadable_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    message = await config_error(kubeconfig=str(directory))
    assert message.startswith(f"kubeconfig {directory}: cannot read")


@pytest.mark.usefixtures("no_cluster_env")
async def test_an_unknown_context_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    assert 'context "other" not found' in await config_error(kubeconfig=str(cfg), context="other")


async def test_in_cluster_config_without_a_token_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    message = await config_error()
    assert message.startswith("in-cluster configuration: ")


@pytest.mark.usefixtures("no_cluster_env")
async def test_kubeconfig_env_and_master_override(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.json("GET", "/api/v1/nodes/n", {"ok": True})
    cfg = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")  # wrong port...
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    master = f"http://127.0.0.1:{server.port}"  # ...fixed by --master
    async with await kclient.KubeClient.connect(master=master) as kube:
        assert kube.host == master
        assert await kube.get(kclient.NODES, "n") == {"ok": True}


@pytest.mark.usefixtures("no_cluster_env")
async def test_exec_plugin_tokens_are_refreshed_after_a_401(server: Server, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        textwrap.dedent(
            f"""
            import json, pathlib
            p = pathlib.Path({str(counter)!r})
            n = int(p.read_text()) + 1 if p.exists() else 1
            p.write_text(str(n))
            print(json.dumps({{
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "kind": "ExecCredential",
                "status": {{"token": f"tok-{{n}}",
                            "expirationTimestamp": "2999-01-01T00:00:00Z"}},
            }}))
            """
        )
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer tok-2":
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        return web.json_response({"metadata": {"name": "n"}})

    server.on("GET", "/api/v1/nodes/n", guarded)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin)],
        }
    }
    cfg = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{server.port}", user=user)
    async with await kclient.KubeClient.connect(kubeconfig=str(cfg)) as kube:
        assert counter.read_text() == "1"
        assert (await kube.get(kclient.NODES, "n"))["metadata"]["name"] == "n"
        assert counter.read_text() == "2"  # the 401 re-ran the plugin once
        await kube.get(kclient.NODES, "n")
        assert counter.read_text() == "2"  # a valid token is cached


# -- dry run (--dry-run): writes are logged, counted and answered locally; only reads and the
# reviews that persist nothing reach the apiserver.


DRY_RUN_NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "n1", "resourceVersion": "7", "labels": {"a": "1"}},
    "spec": {"taints": [{"key": "t", "effect": "NoSchedule"}]},
}


def _count(controller: str, verb: str) -> float:
    return dryrun.DRY_RUN_WRITES.labels(controller, verb)._value.get()


async def test_writes_never_reach_the_apiserver_and_are_answered_as_it_would(
    server: Server, kube: kclient.KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.json("GET", "/api/v1/nodes/n1", DRY_RUN_NODE)
    before = _count("cloud-node-controller", "patch")
    with (
        dryrun.enabled(),
        logs.bind(controller="cloud-node-controller"),
        caplog.at_level(logging.INFO, "ccm.dryrun"),
    ):
        patched = await kube.patch(
            kclient.NODES,
            "n1",
            {"metadata": {"labels": {"b": "2"}}, "spec": {"taints": None}},
            patch_type="merge",
        )
        created = await kube.create(
            kclient.EVENTS, {"metadata": {"name": "e1", "namespace": "default"}}
        )
        deleted = await kube.delete(kclient.NODES, "n1")
        replaced = await kube.replace(kclient.NODES, "n1", DRY_RUN_NODE)
        # A review persists nothing: the secure server still needs it in a dry run.
        server.json("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"status": {}})
        review = await kube.request(
            "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body={"spec": {}}
        )
    assert [(r.method, r.path) for r in server.seen] == [
        ("GET", "/api/v1/nodes/n1"),
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
    ]
    assert patched["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert "taints" not in patched["spec"]
    assert created["metadata"]["name"] == "e1"
    assert deleted is None
    assert replaced == DRY_RUN_NODE
    assert review == {"status": {}}
    assert _count("cloud-node-controller", "patch") == before + 1
    would = [r for r in caplog.records if r.name == "ccm.dryrun"]
    assert [(r.verb, r.target) for r in would] == [  # type: ignore[attr-defined]
        ("patch", "nodes/n1"),
        ("create", "namespaces/default/events"),
        ("delete", "nodes/n1"),
        ("update", "nodes/n1"),
    ]


async def test_a_dry_run_strategic_patch_answers_without_its_directives(
    server: Server, kube: kclient.KubeClient
) -> None:
    server.json("GET", "/api/v1/nodes/n1/status", DRY_RUN_NODE)
    with dryrun.enabled():
        patched = await kube.patch(
            kclient.NODES,
            "n1",
            {
                "status": {
                    "addresses": [{"$patch": "replace"}, {"type": "InternalIP", "address": "a"}]
                }
            },
            subresource="status",
        )
    assert [(r.method, r.path) for r in server.seen] == [("GET", "/api/v1/nodes/n1/status")]
    assert patched["status"]["addresses"] == [{"type": "InternalIP", "address": "a"}]


async def test_a_dry_run_patch_of_a_missing_object_fails_as_the_real_one_would(
    server: Server, kube: kclient.KubeClient
) -> None:
    with dryrun.enabled(), pytest.raises(errors.NotFoundError):
        await kube.patch(kclient.NODES, "gone", {"metadata": {}}, patch_type="merge")
    assert [r.method for r in server.seen] == ["GET"]


async def test_without_dry_run_writes_are_sent(server: Server, kube: kclient.KubeClient) -> None:
    server.json("DELETE", "/api/v1/nodes/n1", {"kind": "Status", "status": "Success"})
    await kube.delete(kclient.NODES, "n1")
    assert [r.method for r in server.seen] == ["DELETE"]
