"""--use-service-account-credentials: a ServiceAccount and a bound token per controller."""

from __future__ import annotations

import asyncio

import pytest

from ccm.kube import client as kclient
from ccm.kube.credentials import ServiceAccountClients
from ccm.kube.fake import FakeKubeClient


async def test_creates_the_service_account_and_sends_its_token() -> None:
    root = FakeKubeClient()
    creds = ServiceAccountClients(root)
    try:
        node_client = await creds.client("node-controller")
        assert root.get_object(kclient.SERVICEACCOUNTS, "node-controller", "kube-system")
        root.clear_actions()
        await node_client.list(kclient.NODES)
        request = root.requests[-1]
        assert request.authorization == "Bearer fake-token-kube-system-node-controller"
        assert request.user_agent.endswith("/node-controller")
        assert await creds.client("node-controller") is node_client
    finally:
        await creds.aclose()
        await root.aclose()


async def test_an_existing_service_account_is_reused() -> None:
    root = FakeKubeClient()
    root.put_object(
        kclient.SERVICEACCOUNTS,
        {"metadata": {"name": "service-controller", "namespace": "kube-system"}},
    )
    creds = ServiceAccountClients(root)
    try:
        await creds.client("service-controller")
        creates = [a for a in root.actions if a.verb == "create" and not a.subresource]
        assert creates == []
    finally:
        await creds.aclose()
        await root.aclose()


@pytest.mark.looptime
async def test_tokens_are_refreshed_before_they_expire() -> None:
    root = FakeKubeClient()
    creds = ServiceAccountClients(root, expiration_seconds=3600)
    task = asyncio.create_task(creds.run())
    try:
        await creds.client("route-controller")

        def token_requests() -> int:
            return sum(1 for a in root.actions if a.subresource == "token")

        assert token_requests() == 1
        await asyncio.sleep(0.8 * 3600 - 10)
        assert token_requests() == 1
        await asyncio.sleep(20)
        assert token_requests() == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await creds.aclose()
        await root.aclose()
