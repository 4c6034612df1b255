"""The provider contract: the only package (with ccm.errors and ccm.wellknown) a provider
imports.

Besides the contract it holds the provider toolkit: :func:`run_blocking` and
:class:`BlockingPool` (blocking SDKs on the framework's thread pool, re-exported here), and the
submodules imported on demand (they load pydantic and tenacity): ``ccm.cloudprovider.config``
(the ``--cloud-config`` model: YAML, JSON, gcfg INI), ``ccm.cloudprovider.retry`` (retries and
throttling), ``ccm.cloudprovider.durations`` (Go durations) and ``ccm.cloudprovider.gcfg``.
"""

from ccm.cloudprovider.blocking import BlockingPool, current_pool, run_blocking, use_pool
from ccm.cloudprovider.helpers import (
    default_load_balancer_name,
    get_instance_provider_id,
    split_provider_id,
)
from ccm.cloudprovider.interface import (
    CAPABILITIES,
    CloudProvider,
    Clusters,
    InitContext,
    Instances,
    InstancesBatch,
    InstancesV2,
    LoadBalancer,
    Routes,
    Zones,
)
from ccm.cloudprovider.objects import Node, Service
from ccm.cloudprovider.registry import (
    ENTRY_POINT_GROUP,
    ProviderFactory,
    init_cloud_provider,
    installed_providers,
    is_cloud_provider,
    register,
    unregister,
)
from ccm.cloudprovider.types import (
    InstanceMetadata,
    LoadBalancerIngress,
    LoadBalancerStatus,
    NodeAddress,
    PortStatus,
    Route,
    Zone,
)

__all__ = [
    "CAPABILITIES",
    "ENTRY_POINT_GROUP",
    "BlockingPool",
    "CloudProvider",
    "Clusters",
    "InitContext",
    "InstanceMetadata",
    "Instances",
    "InstancesBatch",
    "InstancesV2",
    "LoadBalancer",
    "LoadBalancerIngress",
    "LoadBalancerStatus",
    "Node",
    "NodeAddress",
    "PortStatus",
    "ProviderFactory",
    "Route",
    "Routes",
    "Service",
    "Zone",
    "Zones",
    "current_pool",
    "default_load_balancer_name",
    "get_instance_provider_id",
    "init_cloud_provider",
    "installed_providers",
    "is_cloud_provider",
    "register",
    "run_blocking",
    "split_provider_id",
    "unregister",
    "use_pool",
]
