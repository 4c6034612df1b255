"""Fixtures of the AWS provider's tests: one moto server for the session (real HTTP, no patching
of boto3), fake credentials, a network per test with its own cluster ID, and the provider built
through its entry point's factory."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from ccm_aws.testing import Ec2Console, MotoServer, aws_test_env, cloud_config, patched_environ

REGION = "us-east-1"


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Fake credentials for every test (and daemons they start); IMDS disabled."""
    with patched_environ(aws_test_env()):
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def console(moto_server: MotoServer) -> Ec2Console:
    return Ec2Console(moto_server.url, REGION)


@pytest.fixture
def cluster_id() -> str:
    return f"c{secrets.token_hex(4)}"


@pytest.fixture
def network(console: Ec2Console, cluster_id: str) -> dict[str, Any]:
    """A VPC tagged for this test's cluster, one subnet in each of two zones; its CIDR is random
    so that instances of different tests get different private DNS names (Node names)."""
    return console.create_network(cluster_id, cidr=f"10.{secrets.randbelow(250) + 1}.0.0/16")


@pytest.fixture
def config_text(moto_server: MotoServer, cluster_id: str) -> str:
    return cloud_config(moto_server.url, region=REGION, KubernetesClusterID=cluster_id)


@pytest.fixture
async def make_provider(
    moto_server: MotoServer, cluster_id: str
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await make_provider(**global_fields)``: the provider of this test's cluster."""
    from ccm_aws.provider import factory

    built: list[Any] = []

    async def make(**fields: str) -> Any:
        fields.setdefault("KubernetesClusterID", cluster_id)
        provider = await factory(cloud_config(moto_server.url, region=REGION, **fields).encode())
        built.append(provider)
        return provider

    yield make
    for provider in built:
        await provider.aclose()
