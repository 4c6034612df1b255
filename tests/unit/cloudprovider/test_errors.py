"""The provider-facing part of the exception tree (ccm.errors)."""

from __future__ import annotations

import pytest

from ccm.errors import (
    CCMError,
    CloudProviderError,
    DiskNotFoundError,
    ImplementedElsewhereError,
    InstanceNotFoundError,
    NotImplementedByProviderError,
    RetryAfterError,
    find_retry_after,
)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        pytest.param(InstanceNotFoundError, "instance not found", id="InstanceNotFound"),
        pytest.param(NotImplementedByProviderError, "unimplemented", id="NotImplemented"),
        pytest.param(
            ImplementedElsewhereError,
            "implemented by alternate to cloud provider",
            id="ImplementedElsewhere",
        ),
        pytest.param(DiskNotFoundError, "disk is not found", id="DiskNotFound"),
    ],
)
def test_sentinel_errors_carry_the_upstream_message(
    cls: type[CloudProviderError], message: str
) -> None:
    assert str(cls()) == message
    assert str(cls("custom")) == "custom"
    assert issubclass(cls, CloudProviderError)
    assert issubclass(cls, CCMError)


def test_retry_after_error_keeps_its_delay() -> None:
    err = RetryAfterError("provisioning", 7)
    assert err.delay == 7.0
    assert str(err) == "provisioning"
    assert isinstance(err, CloudProviderError)


def test_retry_after_error_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RetryAfterError("x", -1)


def test_find_retry_after_returns_the_error_itself() -> None:
    err = RetryAfterError("wait", 3)
    assert find_retry_after(err) is err


def _raise_wrapped(inner: BaseException) -> None:
    try:
        raise inner
    except BaseException as exc:
        raise CloudProviderError("ensure failed") from exc


def test_find_retry_after_looks_through_raise_from() -> None:
    inner = RetryAfterError("lb provisioning", 5)
    with pytest.raises(CloudProviderError) as caught:
        _raise_wrapped(inner)
    assert caught.value.__cause__ is inner
    assert find_retry_after(caught.value) is inner


def _raise_twice_wrapped(inner: BaseException) -> None:
    try:
        try:
            raise inner
        except RetryAfterError:
            raise RuntimeError("while handling")  # noqa: B904 - implicit __context__ on purpose
    except RuntimeError as exc:
        raise ValueError("outer") from exc


def test_find_retry_after_looks_through_several_levels_and_implicit_context() -> None:
    inner = RetryAfterError("wait", 2)
    with pytest.raises(ValueError, match="outer") as caught:
        _raise_twice_wrapped(inner)
    middle = caught.value.__cause__
    assert isinstance(middle, RuntimeError)
    assert middle.__cause__ is None
    assert middle.__context__ is inner
    assert find_retry_after(caught.value) is inner


def test_find_retry_after_returns_none_without_one() -> None:
    with pytest.raises(CloudProviderError) as caught:
        _raise_wrapped(KeyError("x"))
    assert find_retry_after(caught.value) is None


def test_find_retry_after_survives_a_cycle_in_the_chain() -> None:
    a = RuntimeError("a")
    b = RuntimeError("b")
    a.__cause__ = b
    b.__cause__ = a
    assert find_retry_after(a) is None
