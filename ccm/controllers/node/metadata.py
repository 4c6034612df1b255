"""Instance metadata of a Node from the cloud: the error of a failed initialization, and the legacy
Instances path that assembles :class:`~ccm.cloudprovider.InstanceMetadata` from several calls
(upstream ``getInstanceMetadata`` without InstancesV2), each bounded by the cloud call timeout."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from ccm.cloudprovider import (
    CloudProvider,
    InstanceMetadata,
    Instances,
    Node,
    NodeAddress,
    get_instance_provider_id,
)
from ccm.controllers import base, cloudapi, failures
from ccm.errors import CCMError, CloudProviderError, NotImplementedByProviderError

__all__ = [
    "NodeInitializationError",
    "legacy_addresses",
    "legacy_instance_metadata",
    "legacy_instance_type",
]

_log = logging.getLogger("ccm.controllers.node")

T = TypeVar("T")


class NodeInitializationError(CCMError):
    """Initialization of a Node failed; the taint stays and the Node is retried."""


async def _call(
    call_timeout: float | None,
    awaitable: Awaitable[T],
    what: str,
    capability: str = cloudapi.INSTANCES,
) -> T:
    return await base.call_cloud(awaitable, call_timeout, what, capability=capability)


async def legacy_instance_metadata(
    cloud: CloudProvider, instances: Instances, view: Node, *, call_timeout: float | None
) -> InstanceMetadata:
    """The InstanceMetadata of a Node assembled from the legacy Instances calls (provider ID,
    addresses, instance type) and Zones, each by provider ID first and by Node name second."""
    provider_id = view.provider_id
    if not provider_id:
        try:
            provider_id = await _call(
                call_timeout, get_instance_provider_id(cloud, instances, view.name), "instance_id"
            )
        except NotImplementedByProviderError:
            _log.warning(
                "cloud provider does not set node provider ID, using node name to discover node %s",
                view.name,
            )
    addresses = await legacy_addresses(instances, provider_id, view.name, call_timeout=call_timeout)
    instance_type = await legacy_instance_type(
        instances, provider_id, view.name, call_timeout=call_timeout
    )
    zone_name = region = ""
    zones = cloud.zones()
    if zones is not None:
        try:
            zone = await _call(
                call_timeout,
                zones.get_zone_by_provider_id(provider_id),
                "get_zone_by_provider_id",
                cloudapi.ZONES,
            )
        except CloudProviderError as by_id:
            try:
                zone = await _call(
                    call_timeout,
                    zones.get_zone_by_node_name(view.name),
                    "get_zone_by_node_name",
                    cloudapi.ZONES,
                )
            except CloudProviderError as by_name:
                raise failures.with_context(
                    "failed to get zone from cloud provider: Zone: Error fetching by "
                    f"providerID: {by_id} Error fetching by NodeName: {by_name}",
                    by_name,
                    NodeInitializationError,
                ) from by_name
        zone_name, region = zone.failure_domain, zone.region
    return InstanceMetadata(
        provider_id=provider_id,
        instance_type=instance_type,
        node_addresses=tuple(addresses),
        zone=zone_name,
        region=region,
    )


async def legacy_addresses(
    instances: Instances, provider_id: str, name: str, *, call_timeout: float | None
) -> list[NodeAddress]:
    """The addresses of a Node by provider ID, else by name (legacy Instances)."""
    try:
        return list(
            await _call(
                call_timeout,
                instances.node_addresses_by_provider_id(provider_id),
                "node_addresses_by_provider_id",
            )
        )
    except CloudProviderError as by_id:
        try:
            return list(await _call(call_timeout, instances.node_addresses(name), "node_addresses"))
        except CloudProviderError as by_name:
            raise failures.with_context(
                f"error fetching node by provider ID: {by_id}, and error by node name: {by_name}",
                by_name,
                NodeInitializationError,
            ) from by_name


async def legacy_instance_type(
    instances: Instances, provider_id: str, name: str, *, call_timeout: float | None
) -> str:
    """The instance type of a Node by provider ID, else by name (legacy Instances)."""
    try:
        return str(
            await _call(
                call_timeout,
                instances.instance_type_by_provider_id(provider_id),
                "instance_type_by_provider_id",
            )
        )
    except CloudProviderError as by_id:
        try:
            return str(await _call(call_timeout, instances.instance_type(name), "instance_type"))
        except CloudProviderError as by_name:
            raise failures.with_context(
                f"InstanceType: Error fetching by providerID: {by_id} Error fetching by "
                f"NodeName: {by_name}",
                by_name,
                NodeInitializationError,
            ) from by_name
