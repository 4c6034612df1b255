"""``ccm.controllers.base.call_cloud``: the one cloud-call timeout of every controller."""

from __future__ import annotations

import asyncio

import pytest

from ccm.controllers import base
from ccm.controllers import service as service_controller
from ccm.errors import CCMError, CloudCallTimeoutError, CloudProviderError


async def _hang() -> int:
    await asyncio.sleep(3600)
    return 1


async def _answer() -> int:
    await asyncio.sleep(1)
    return 42


@pytest.mark.looptime
async def test_returns_the_answer_within_the_bound() -> None:
    assert await base.call_cloud(_answer(), 5, "instance_metadata") == 42


@pytest.mark.looptime
async def test_a_hung_call_raises_the_timeout_error_naming_the_call() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(CloudCallTimeoutError) as info:
        await base.call_cloud(_hang(), 2.5, "instance_exists")
    assert loop.time() - start == pytest.approx(2.5)
    assert str(info.value) == "cloud provider call instance_exists did not return within 2.5s"
    assert info.value.call == "instance_exists"
    assert info.value.timeout == 2.5
    # a CCMError (every controller's "doubt/retry" clause) but not a provider answer
    assert isinstance(info.value, CCMError)
    assert not isinstance(info.value, CloudProviderError)
    assert not isinstance(info.value, TimeoutError)


@pytest.mark.looptime
async def test_none_means_unbounded() -> None:
    assert await base.call_cloud(_answer(), None, "x") == 42


async def test_a_providers_own_timeout_error_passes_through() -> None:
    async def own() -> None:
        raise TimeoutError("sdk timeout")

    with pytest.raises(TimeoutError, match="sdk timeout"):
        await base.call_cloud(own(), 5, "x")


@pytest.mark.looptime
async def test_cancelling_the_caller_cancels_the_call() -> None:
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(base.call_cloud(hang(), 60, "x"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


def test_the_service_module_still_exports_the_error() -> None:
    assert service_controller.CloudCallTimeoutError is CloudCallTimeoutError
