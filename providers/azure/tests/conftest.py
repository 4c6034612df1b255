"""Fixtures of the Azure provider's tests: a fake ARM server over TLS per test (its CA trusted
through ``SSL_CERT_FILE``), the world in it, and the provider built through its entry point's
factory with a service principal whose token the fake issues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld, azure_json


@pytest.fixture
async def arm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeArm]:
    async with FakeArm() as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_path))
        yield server


@pytest.fixture
def world(arm: FakeArm) -> AzureWorld:
    return AzureWorld(arm)


@pytest.fixture
async def make_provider(arm: FakeArm) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await make_provider(**azure_json_fields)``: a provider of the fake, opened."""
    from ccm_azure.provider import factory

    built: list[Any] = []

    async def make(**fields: Any) -> Any:
        world = AzureWorld(arm)
        if (
            arm.get_resource(
                world.resource_id("Microsoft.Network", "networkSecurityGroups", "nsg-1")
            )
            is None
        ):
            world.create_security_group()
        provider = factory(azure_json(arm, **fields).encode())
        built.append(provider)
        await provider.api.open()
        return provider

    yield make
    for provider in built:
        await provider.aclose()
