"""The aiohttp transport resolves the environment proxy once instead of on every request."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import Configuration

from ccm.kube.client import AiohttpTransport


def _configuration(host: str) -> Configuration:
    cfg = Configuration()
    cfg.host = host
    return cfg


async def test_env_proxy_resolved_once_and_per_request_lookups_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    transport = AiohttpTransport(_configuration("https://kube.invalid:6443"))
    try:
        assert transport._env_proxy is not None
        proxy, auth = transport._env_proxy
        assert str(proxy) == "http://proxy.invalid:3128"
        assert auth is not None
        assert auth.login == "user"
        assert transport._rest.pool_manager.trust_env is False
    finally:
        await transport._rest.close()


async def test_no_proxy_excludes_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "kube.invalid")
    transport = AiohttpTransport(_configuration("https://kube.invalid:6443"))
    try:
        assert transport._env_proxy is None
        assert transport._rest.pool_manager.trust_env is False
    finally:
        await transport._rest.close()
