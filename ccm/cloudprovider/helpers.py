"""Helpers for providers and controllers: load-balancer names, provider IDs, legacy instance
lookups.

Ports ``cloud.go`` (``DefaultLoadBalancerName``, ``GetInstanceProviderID``) and ``node/helpers``
provider-ID parsing.
"""

from __future__ import annotations

from ccm.cloudprovider.interface import CloudProvider, Instances
from ccm.cloudprovider.objects import Service
from ccm.errors import CloudProviderError, InstanceNotFoundError, NotImplementedByProviderError

__all__ = ["default_load_balancer_name", "get_instance_provider_id", "split_provider_id"]


def default_load_balancer_name(service: Service) -> str:
    """``"a"`` + the Service UID without dashes, truncated to 32 characters (GCE needs a leading
    letter, AWS at most 32 bytes)."""
    name = "a" + service.uid.replace("-", "")
    return name[:32]


def split_provider_id(provider_id: str) -> tuple[str, str]:
    """Split ``<provider>://<id>`` into its two parts; raise ValueError when malformed."""
    scheme, sep, rest = provider_id.partition("://")
    if not sep or not scheme or not rest:
        raise ValueError(f"malformed provider ID {provider_id!r}: want <provider>://<id>")
    return scheme, rest


async def get_instance_provider_id(
    cloud: CloudProvider, instances: Instances, node_name: str
) -> str:
    """``<provider>://<instance id>`` for a Node, from the legacy Instances capability.

    InstanceNotFoundError and NotImplementedByProviderError pass through unchanged; other errors are
    wrapped.
    """
    try:
        instance_id = await instances.instance_id(node_name)
    except (InstanceNotFoundError, NotImplementedByProviderError):
        raise
    except Exception as exc:
        raise CloudProviderError(f"failed to get instance ID from cloud provider: {exc}") from exc
    return f"{cloud.provider_name}://{instance_id}"
