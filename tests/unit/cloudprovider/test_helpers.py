"""Helpers of the contract: load-balancer names and provider IDs."""

from __future__ import annotations

import pytest

from ccm.cloudprovider import (
    Service,
    default_load_balancer_name,
    get_instance_provider_id,
    split_provider_id,
)
from ccm.errors import (
    CloudProviderError,
    InstanceNotFoundError,
    NotImplementedByProviderError,
)
from ccm.testing.fake_cloud import FakeCloud


def _service(uid: str) -> Service:
    return Service({"metadata": {"name": "web", "namespace": "default", "uid": uid}})


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        pytest.param(
            "0bd6b2a4-3c5e-4f1d-9a8b-7c6d5e4f3a2b",
            "a0bd6b2a43c5e4f1d9a8b7c6d5e4f3a2",
            id="uuid is stripped of dashes and truncated to 32",
        ),
        pytest.param("abc-123", "aabc123", id="short uid is kept"),
        pytest.param("", "a", id="no uid"),
    ],
)
def test_default_load_balancer_name_is_a_plus_the_uid_without_dashes_truncated(
    uid: str, expected: str
) -> None:
    name = default_load_balancer_name(_service(uid))
    assert name == expected
    assert name.startswith("a")
    assert len(name) <= 32


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        pytest.param("fake://node-1", ("fake", "node-1"), id="simple"),
        pytest.param(
            "aws:///us-east-1a/i-0123456789", ("aws", "/us-east-1a/i-0123456789"), id="aws style"
        ),
        pytest.param("gce://project/zone/name", ("gce", "project/zone/name"), id="gce style"),
    ],
)
def test_split_provider_id_returns_provider_and_id(
    provider_id: str, expected: tuple[str, str]
) -> None:
    assert split_provider_id(provider_id) == expected


@pytest.mark.parametrize(
    "provider_id",
    [
        pytest.param("", id="empty"),
        pytest.param("node-1", id="no scheme"),
        pytest.param("://node-1", id="empty provider"),
        pytest.param("fake://", id="empty id"),
        pytest.param("fake:/node-1", id="single slash"),
    ],
)
def test_split_provider_id_rejects_malformed_ids(provider_id: str) -> None:
    with pytest.raises(ValueError, match="malformed provider ID"):
        split_provider_id(provider_id)


async def test_get_instance_provider_id_prefixes_the_provider_name() -> None:
    cloud = FakeCloud(provider_name="acme")
    cloud.add_instance("node-1", provider_id="acme://i-0001")
    instances = cloud.instances()
    assert instances is not None
    assert await get_instance_provider_id(cloud, instances, "node-1") == "acme://i-0001"


async def test_get_instance_provider_id_passes_instance_not_found_through() -> None:
    cloud = FakeCloud()
    instances = cloud.instances()
    assert instances is not None
    with pytest.raises(InstanceNotFoundError):
        await get_instance_provider_id(cloud, instances, "node-1")


async def test_get_instance_provider_id_passes_not_implemented_through() -> None:
    cloud = FakeCloud()
    cloud.add_instance("node-1")
    cloud.inject_error("instance-id", NotImplementedByProviderError())
    instances = cloud.instances()
    assert instances is not None
    with pytest.raises(NotImplementedByProviderError):
        await get_instance_provider_id(cloud, instances, "node-1")


async def test_get_instance_provider_id_wraps_other_errors() -> None:
    cloud = FakeCloud()
    cloud.add_instance("node-1")
    cloud.inject_error("instance-id", RuntimeError("api down"))
    instances = cloud.instances()
    assert instances is not None
    with pytest.raises(CloudProviderError, match=r"failed to get instance ID.*api down") as caught:
        await get_instance_provider_id(cloud, instances, "node-1")
    assert isinstance(caught.value.__cause__, RuntimeError)
