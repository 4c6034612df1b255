"""Delegated authentication (TokenReview) and authorization (SubjectAccessReview) of /metrics."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ccm.app.auth import DelegatedAuth, UserInfo
from ccm.app.serving import SecureServer
from ccm.kube.fake import FakeKubeClient, FakeRequest

TOKENS = {
    "metrics-reader": {
        "username": "system:serviceaccount:mon:prom",
        "uid": "u1",
        "groups": ["system:serviceaccounts"],
    },
    "nobody": {"username": "system:serviceaccount:mon:other", "uid": "u2", "groups": []},
    "admin": {"username": "admin", "groups": ["system:masters"]},
}
ALLOWED = {("system:serviceaccount:mon:prom", "/metrics", "get")}


@pytest.fixture
def kube() -> FakeKubeClient:
    kube = FakeKubeClient()

    def token_review(req: FakeRequest) -> dict[str, Any]:
        user = TOKENS.get(req.body["spec"]["token"])
        status = {"authenticated": True, "user": user} if user else {"authenticated": False}
        return {**req.body, "status": status}

    def sar(req: FakeRequest) -> dict[str, Any]:
        spec = req.body["spec"]
        attrs = spec["nonResourceAttributes"]
        allowed = (spec["user"], attrs["path"], attrs["verb"]) in ALLOWED
        return {**req.body, "status": {"allowed": allowed}}

    kube.add_reactor("create", "tokenreviews", token_review)
    kube.add_reactor("create", "subjectaccessreviews", sar)
    return kube


@pytest.fixture
async def server(kube: FakeKubeClient) -> AsyncIterator[SecureServer]:
    srv = SecureServer(bind_address="127.0.0.1", port=0, authorizer=DelegatedAuth(kube))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
        await kube.aclose()


async def _get(server: SecureServer, path: str, token: str | None = None) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{server.port}{path}", ssl=ctx, headers=headers) as resp,
    ):
        return resp.status


async def test_metrics_needs_a_token_with_the_grant(server: SecureServer) -> None:
    assert await _get(server, "/metrics") == 401
    assert await _get(server, "/metrics", "not-a-token") == 401
    assert await _get(server, "/metrics", "nobody") == 403
    assert await _get(server, "/metrics", "metrics-reader") == 200
    assert await _get(server, "/metrics", "admin") == 200  # system:masters always allowed


async def test_health_paths_need_no_token(server: SecureServer) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        assert await _get(server, path) == 200


@pytest.mark.looptime
async def test_answers_are_cached_for_ten_seconds(kube: FakeKubeClient) -> None:
    auth = DelegatedAuth(kube)
    user = await auth.authenticate("metrics-reader")
    assert user == UserInfo(
        name="system:serviceaccount:mon:prom",
        uid="u1",
        groups=("system:serviceaccounts",),
        extra={},
    )
    assert await auth.authorize(user, verb="get", path="/metrics")
    assert not await auth.authorize(user, verb="get", path="/debug")
    calls = len(kube.actions)
    await auth.authenticate("metrics-reader")
    await auth.authorize(user, verb="get", path="/metrics")
    await auth.authorize(user, verb="get", path="/debug")
    assert len(kube.actions) == calls, "cached answers make no API call"
    await asyncio.sleep(11)
    await auth.authenticate("metrics-reader")
    assert len(kube.actions) == calls + 1


async def test_apiserver_failure_refuses_instead_of_allowing(kube: FakeKubeClient) -> None:
    kube.inject_error("create", "tokenreviews", 503)
    auth = DelegatedAuth(kube)
    assert await auth.authenticate("metrics-reader") is None
    user = UserInfo(name="x")
    kube.inject_error("create", "subjectaccessreviews", 500)
    assert await auth.authorize(user, verb="get", path="/metrics") is False
