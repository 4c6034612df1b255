"""The provider registry: register()/unregister(), entry-point discovery, init_cloud_provider()."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from ccm.cloudprovider import (
    ENTRY_POINT_GROUP,
    CloudProvider,
    init_cloud_provider,
    installed_providers,
    is_cloud_provider,
    register,
    unregister,
)
from ccm.errors import ConfigError, UnknownProviderError
from ccm.testing.fake_cloud import FakeCloud

_names = itertools.count()


class _Provider(CloudProvider):
    name = "test"

    def __init__(self, config: bytes | None = None) -> None:
        self.config = config


@pytest.fixture
def provider_name() -> Iterator[str]:
    """A unique provider name, unregistered after the test."""
    name = f"test-provider-{next(_names)}"
    yield name
    unregister(name)


async def test_registered_factory_builds_the_provider_with_no_config_when_no_path(
    provider_name: str,
) -> None:
    register(provider_name, _Provider)
    provider = await init_cloud_provider(provider_name, None)
    assert isinstance(provider, _Provider)
    assert provider.config is None
    assert is_cloud_provider(provider_name)
    assert provider_name in installed_providers()


async def test_factory_receives_the_bytes_of_the_config_file(
    provider_name: str, tmp_path: Path
) -> None:
    config = tmp_path / "cloud.conf"
    config.write_bytes(b"region: moon\n")
    register(provider_name, _Provider)
    provider = await init_cloud_provider(provider_name, str(config))
    assert isinstance(provider, _Provider)
    assert provider.config == b"region: moon\n"


def test_registering_a_name_twice_is_an_error(provider_name: str) -> None:
    register(provider_name, _Provider)
    with pytest.raises(ValueError, match="registered twice"):
        register(provider_name, _Provider)


def test_registering_an_empty_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        register("", _Provider)


async def test_unregister_removes_the_provider_and_tolerates_unknown_names(
    provider_name: str,
) -> None:
    register(provider_name, _Provider)
    unregister(provider_name)
    unregister(provider_name)
    assert not is_cloud_provider(provider_name)
    with pytest.raises(UnknownProviderError):
        await init_cloud_provider(provider_name, None)


async def test_unknown_provider_error_lists_the_installed_providers() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        await init_cloud_provider("no-such-cloud", None)
    message = str(caught.value)
    assert message.startswith('unknown cloud provider "no-such-cloud"')
    assert "fake" in message
    assert caught.value.installed == installed_providers()
    assert isinstance(caught.value, ConfigError)


def test_fake_entry_point_is_discovered_through_importlib_metadata() -> None:
    names = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert names["fake"] == "ccm.testing.fake_cloud:FakeCloudFactory"
    assert "fake" in installed_providers()
    assert is_cloud_provider("fake")


async def test_fake_entry_point_builds_a_fake_cloud() -> None:
    provider = await init_cloud_provider("fake", None)
    assert isinstance(provider, FakeCloud)
    assert provider.provider_name == "fake"


async def test_fake_config_errors_are_wrapped_with_the_provider_name(tmp_path: Path) -> None:
    config = tmp_path / "fake.yaml"
    config.write_text("capabilities: {routes: maybe}\n")
    with pytest.raises(ConfigError) as caught:
        await init_cloud_provider("fake", str(config))
    message = str(caught.value)
    assert message.startswith('could not init cloud provider "fake": invalid fake cloud config: ')
    assert "capabilities.routes" in message
    assert "\n" not in message


async def test_factory_exceptions_are_wrapped_with_the_provider_name(provider_name: str) -> None:
    def broken(config: bytes | None) -> CloudProvider:
        raise RuntimeError("credentials expired")

    register(provider_name, broken)
    with pytest.raises(ConfigError) as caught:
        await init_cloud_provider(provider_name, None)
    assert (
        str(caught.value) == f'could not init cloud provider "{provider_name}": credentials expired'
    )
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_unreadable_config_path_is_a_config_error(provider_name: str, tmp_path: Path) -> None:
    register(provider_name, _Provider)
    missing = tmp_path / "missing.conf"
    with pytest.raises(ConfigError, match="couldn't open cloud provider configuration") as caught:
        await init_cloud_provider(provider_name, str(missing))
    assert str(missing) in str(caught.value)


async def test_async_factory_is_awaited(provider_name: str) -> None:
    async def factory(config: bytes | None) -> CloudProvider:
        return _Provider(config)

    register(provider_name, factory)
    assert isinstance(await init_cloud_provider(provider_name, None), _Provider)


async def test_factory_returning_something_else_than_a_cloud_provider_is_rejected(
    provider_name: str,
) -> None:
    register(provider_name, lambda config: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="factory returned object, not a CloudProvider"):
        await init_cloud_provider(provider_name, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("", "--cloud-provider cannot be empty", id="empty"),
        pytest.param("external", "names no provider", id="external"),
    ],
)
async def test_empty_and_external_provider_names_are_config_errors(
    name: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        await init_cloud_provider(name, None)


async def test_registered_provider_shadows_an_entry_point_of_the_same_name() -> None:
    register("fake", _Provider)
    try:
        assert isinstance(await init_cloud_provider("fake", None), _Provider)
    finally:
        unregister("fake")
    assert isinstance(await init_cloud_provider("fake", None), FakeCloud)


class _Nameless(CloudProvider):
    closed = False

    def __init__(self, config: bytes | None = None) -> None:
        self.config = config

    async def aclose(self) -> None:
        _Nameless.closed = True


async def test_a_provider_with_an_empty_name_is_refused_and_closed(provider_name: str) -> None:
    register(provider_name, _Nameless)
    with pytest.raises(ConfigError, match=r"_Nameless\.name is empty"):
        await init_cloud_provider(provider_name, None)
    assert _Nameless.closed


async def test_the_provider_name_need_not_equal_the_registered_name(provider_name: str) -> None:
    register(provider_name, _Provider)
    provider = await init_cloud_provider(provider_name, None)
    assert (provider.name, provider_name.startswith("test-provider-")) == ("test", True)
