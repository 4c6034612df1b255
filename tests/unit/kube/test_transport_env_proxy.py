"""The aiohttp transport resolves the environment proxy once instead of on every request."""

from __future__ import annotations

import pytest

from ccm.kube import kubeconfig
from ccm.kube.http import AiohttpTransport


def _connection(host: str) -> kubeconfig.Connection:
    return kubeconfig.Connection(where="test", server=host)


async def test_env_proxy_resolved_once_and_per_request_lookups_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    transport = AiohttpTransport(_connection("https://kube.invalid:6443"))
    try:
        assert transport.proxy is not None
        proxy, auth = transport.proxy
        assert str(proxy) == "http://proxy.invalid:3128"
        assert auth is not None
        assert auth.login == "user"
        assert transport.session.trust_env is False
    finally:
        await transport.aclose()


async def test_no_proxy_excludes_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "kube.invalid")
    transport = AiohttpTransport(_connection("https://kube.invalid:6443"))
    try:
        assert transport.proxy is None
        assert transport.session.trust_env is False
    finally:
        await transport.aclose()


async def test_the_kubeconfig_proxy_url_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    conn = kubeconfig.Connection(
        where="test", server="https://kube.invalid:6443", proxy_url="http://other.invalid:8080"
    )
    transport = AiohttpTransport(conn)
    try:
        assert transport.proxy is not None
        assert str(transport.proxy[0]) == "http://other.invalid:8080"
    finally:
        await transport.aclose()
