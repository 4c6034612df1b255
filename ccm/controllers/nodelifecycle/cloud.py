"""The cloud questions of the node lifecycle controller: does the instance of a Node exist, is it
shut down (upstream ``ensureNodeExistsByProviderID``, ``shutdownInCloudProvider``,
``getProviderID``), through InstancesV2 or the legacy Instances, each call bounded by the cloud
call timeout."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from ccm.cloudprovider import CloudProvider, Node, get_instance_provider_id
from ccm.controllers import base, cloudapi
from ccm.errors import CloudProviderError, InstanceNotFoundError, NotImplementedByProviderError

__all__ = ["get_provider_id", "instance_exists", "instance_shutdown"]

T = TypeVar("T")


async def _call(call_timeout: float | None, awaitable: Awaitable[T], what: str) -> T:
    return await base.call_cloud(awaitable, call_timeout, what, capability=cloudapi.INSTANCES)


async def get_provider_id(
    cloud: CloudProvider, node: Node, *, call_timeout: float | None = None
) -> str:
    """The provider ID of ``node``: its ``spec.providerID``, else the cloud's (upstream
    ``getProviderID``).

    InstancesV2: ``instance_metadata(node).provider_id`` (``""`` when the metadata is ``None``);
    Instances: :func:`ccm.cloudprovider.get_instance_provider_id`, whose ``InstanceNotFoundError``
    and ``NotImplementedByProviderError`` pass through unchanged.
    """
    if node.provider_id:
        return node.provider_id
    v2 = cloud.instances_v2()
    if v2 is not None:
        md = await base.call_cloud(
            v2.instance_metadata(node),
            call_timeout,
            "instance_metadata",
            capability=cloudapi.INSTANCES,
        )
        return md.provider_id if md is not None else ""
    instances = cloud.instances()
    if instances is None:
        raise CloudProviderError("failed to get instances from cloud provider")
    return await base.call_cloud(
        get_instance_provider_id(cloud, instances, node.name),
        call_timeout,
        "instance_id",
        capability=cloudapi.INSTANCES,
    )


async def instance_exists(cloud: CloudProvider, node: Node, *, call_timeout: float | None) -> bool:
    """Upstream ``ensureNodeExistsByProviderID``."""
    v2 = cloud.instances_v2()
    if v2 is not None:
        return bool(await _call(call_timeout, v2.instance_exists(node), "instance_exists"))
    instances = cloud.instances()
    if instances is None:
        raise CloudProviderError("instances interface not supported in the cloud provider")
    try:
        provider_id = await get_provider_id(cloud, node, call_timeout=call_timeout)
    except InstanceNotFoundError:
        return False
    return bool(
        await _call(
            call_timeout,
            instances.instance_exists_by_provider_id(provider_id),
            "instance_exists_by_provider_id",
        )
    )


async def instance_shutdown(
    cloud: CloudProvider, node: Node, *, call_timeout: float | None
) -> bool:
    """Upstream ``shutdownInCloudProvider``."""
    v2 = cloud.instances_v2()
    if v2 is not None:
        return bool(await _call(call_timeout, v2.instance_shutdown(node), "instance_shutdown"))
    instances = cloud.instances()
    if instances is None:
        raise CloudProviderError("cloud provider does not support instances")
    try:
        provider_id = await get_provider_id(cloud, node, call_timeout=call_timeout)
    except InstanceNotFoundError:
        return False
    try:
        return bool(
            await _call(
                call_timeout,
                instances.instance_shutdown_by_provider_id(provider_id),
                "instance_shutdown_by_provider_id",
            )
        )
    except NotImplementedByProviderError:
        return False
