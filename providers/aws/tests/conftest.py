"""Fixtures of the AWS provider's tests: one moto server for the session (real HTTP, no patching
of boto3), fake credentials, a network per test with its own cluster ID, and the provider built
through its entry point's factory."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ccm_aws.api import ACTION_LOG_ENV
from ccm_aws.testing import Ec2Console, MotoServer, aws_test_env, cloud_config, patched_environ

REGION = "us-east-1"


POLICY = Path(__file__).parent.parent / "iam-policy.json"


def policy_actions() -> set[str]:
    """The actions ``iam-policy.json`` allows."""
    doc = json.loads(POLICY.read_text())
    return {a for s in doc["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


@pytest.fixture(scope="session", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fake credentials for every test (and the daemons and commands they start); IMDS disabled;
    every AWS call of every provider recorded in an action log (``CCM_AWS_ACTION_LOG``). At the
    end of the session, an action the IAM policy does not allow fails the run: the policy must
    cover whatever the tests made the provider do (``sts:`` actions are the base identity's
    permission to assume ``RoleARN``, not the policy's)."""
    log = tmp_path_factory.mktemp("aws") / "actions.log"
    log.touch()
    with patched_environ({**aws_test_env(), ACTION_LOG_ENV: str(log)}):
        yield log
    used = {a for a in log.read_text().split() if not a.startswith("sts:")}
    missing = used - policy_actions()
    assert not missing, f"the tests called actions that iam-policy.json lacks: {sorted(missing)}"


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
