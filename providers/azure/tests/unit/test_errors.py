"""ccm decides on retries: the SDK's own are off, a 429 is a RetryAfterError with the server's
delay, 5xx are retried a bounded number of times, a bad credential is one clear error."""

from __future__ import annotations

from typing import Any

import pytest
from ccm_azure.instances import provider_id
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld

from ccm import errors
from ccm.cloudprovider import Node

PID = provider_id("sub-1", "rg-1", "vm-a")
NODE = Node({"metadata": {"name": "vm-a"}, "spec": {"providerID": PID}})


async def test_throttling_is_a_retry_after_error_with_the_servers_delay(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    world.create_vm("vm-a")
    provider = await make_provider()
    arm.inject("GET", "/virtualMachines/vm-a", 429, retry_after="17")
    with pytest.raises(errors.RetryAfterError) as caught:
        await provider.instances_v2().instance_exists(NODE)
    assert caught.value.delay == 17
    assert arm.calls["GET virtualMachines"] == 1, "neither the SDK nor ccm retried a 429"
    assert await provider.instances_v2().instance_exists(NODE) is True


async def test_server_errors_are_retried_a_bounded_number_of_times(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    world.create_vm("vm-a")
    provider = await make_provider()
    arm.inject("GET", "/virtualMachines/vm-a", 503, times=2)
    assert await provider.instances_v2().instance_exists(NODE) is True
    assert arm.calls["GET virtualMachines"] == 3
    arm.calls.clear()
    arm.inject("GET", "/virtualMachines/vm-a", 500, times=10)
    with pytest.raises(errors.RetriesExhaustedError, match="gave up after 3 attempts"):
        await provider.instances_v2().instance_exists(NODE)
    assert arm.calls["GET virtualMachines"] == 3


async def test_a_client_error_is_a_cloud_provider_error_naming_the_call(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    world.create_vm("vm-a")
    provider = await make_provider()
    arm.inject("GET", "/virtualMachines/vm-a", 403, code="AuthorizationFailed")
    with pytest.raises(errors.CloudProviderError, match=r"VirtualMachines.Get: HTTP 403 Auth"):
        await provider.instances_v2().instance_exists(NODE)
    assert arm.calls["GET virtualMachines"] == 1


async def test_a_wrong_client_secret_is_a_cloud_provider_error(
    make_provider: Any, world: AzureWorld, arm: FakeArm
) -> None:
    world.create_vm("vm-a")
    provider = await make_provider(aadClientSecret="wrong")
    with pytest.raises(errors.CloudProviderError, match=r"HTTP 401 .*AADSTS7000215"):
        await provider.instances_v2().instance_exists(NODE)
    assert arm.tokens_issued == 0
    assert not arm.calls, "no ARM request without a token"
