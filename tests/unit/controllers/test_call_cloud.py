"""``ccm.controllers.base.call_cloud``: the one cloud-call timeout of every controller."""

from __future__ import annotations

import asyncio
import contextlib
import logging

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


async def _stubborn(outcome: BaseException | None) -> bool:
    """A provider call that sleeps past any bound, catches the cancellation and carries on."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(1)  # keeps working after the cancellation
    if outcome is not None:
        raise outcome
    return False  # e.g. "the instance does not exist"


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("outcome", "said"),
    [
        pytest.param(None, "returned an answer late", id="late-answer"),
        pytest.param(CloudProviderError("gone"), "raised CloudProviderError late", id="late-error"),
        pytest.param(TimeoutError("sdk"), "raised TimeoutError late", id="late-own-timeout"),
    ],
)
async def test_a_call_that_ignores_cancellation_fails_whatever_it_returns(
    outcome: BaseException | None, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="ccm.controllers.base"),
        pytest.raises(CloudCallTimeoutError) as info,
    ):
        await base.call_cloud(_stubborn(outcome), 2, "instance_exists")
    assert info.value.call == "instance_exists"
    assert info.value.timeout == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cloud provider call instance_exists ignored its cancellation" in warnings[0]
    assert said in warnings[0]


@pytest.mark.looptime
async def test_a_call_that_honours_cancellation_logs_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="ccm.controllers.base"),
        pytest.raises(CloudCallTimeoutError),
    ):
        await base.call_cloud(_hang(), 2, "instance_exists")
    assert caplog.records == []
