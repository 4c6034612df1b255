"""Waiting for the apiserver's /healthz at start-up (looptime)."""

from __future__ import annotations

import asyncio

import pytest

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube import health

pytestmark = pytest.mark.looptime


class ScriptedTransport(kclient.Transport):
    """Answers GET /healthz: refuses connections until ``healthy_at`` (loop time), or hangs."""

    host = "https://127.0.0.1:1"

    def __init__(self, *, healthy_at: float | None = None, hang: bool = False) -> None:
        self.healthy_at = healthy_at
        self.hang = hang
        self.sent: list[float] = []

    async def send(self, request: kclient.HttpRequest) -> kclient.HttpResponse:
        assert (request.method, request.path) == ("GET", "/healthz")
        now = asyncio.get_running_loop().time()
        self.sent.append(now)
        if self.hang:
            await asyncio.Event().wait()
        if self.healthy_at is not None and now >= self.healthy_at:
            return kclient.BufferedResponse(200, b"ok")
        raise errors.KubeError("connection refused")

    async def aclose(self) -> None:
        pass


async def test_an_unreachable_apiserver_fails_after_ten_seconds_polling_every_second() -> None:
    transport = ScriptedTransport()
    client = kclient.KubeClient(transport)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(health.ApiServerUnhealthyError) as caught:
        await health.wait_for_apiserver(client)
    assert loop.time() - start == pytest.approx(10.0)
    assert len(transport.sent) == 11  # at 0, 1, …, 10 s
    message = str(caught.value)
    assert message.startswith("Failed to wait for apiserver being healthy:")
    assert "https://127.0.0.1:1/healthz" in message and "connection refused" in message
    assert "\n" not in message


async def test_returns_as_soon_as_the_apiserver_answers_ok() -> None:
    transport = ScriptedTransport(healthy_at=3.5)
    client = kclient.KubeClient(transport)
    loop = asyncio.get_running_loop()
    start = loop.time()
    transport.healthy_at = start + 3.5
    await health.wait_for_apiserver(client)
    assert loop.time() - start == pytest.approx(4.0)


async def test_a_request_that_never_answers_cannot_stretch_the_wait() -> None:
    client = kclient.KubeClient(ScriptedTransport(hang=True))
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(health.ApiServerUnhealthyError, match="no answer in time"):
        await health.wait_for_apiserver(client)
    assert loop.time() - start == pytest.approx(10.0)
