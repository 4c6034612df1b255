"""The provider contract and toolkit. Audience: provider authors; with :mod:`ccm.errors` (and the
constants of :mod:`ccm.wellknown`) the only part of ccm a provider imports at run time, and
:mod:`ccm.testing` in its tests. It does not depend on the runtime (``ccm.app``,
``ccm.controllers``, ``ccm.kube``, ``ccm.leaderelection``).

Besides the contract it holds the provider toolkit: :func:`run_blocking` and :class:`BlockingPool`
(blocking SDKs on the framework's thread pool, re-exported here), and the submodules imported on
demand (they load pydantic and tenacity): ``ccm.cloudprovider.config`` (the ``--cloud-config``
model: YAML, JSON, gcfg INI), ``ccm.cloudprovider.retry`` (retries and throttling),
``ccm.cloudprovider.durations`` (Go durations), ``ccm.cloudprovider.strconv`` (Go booleans) and
``ccm.cloudprovider.gcfg``.

``METRICS_REGISTRY`` is the registry ``/metrics`` serves: a provider's own metrics registered in
it (``prometheus_client.Counter("mycloud_api_calls", "...", registry=METRICS_REGISTRY)``) are
served with ccm's.
"""

from ccm.cloudprovider.blocking import BlockingPool, current_pool, run_blocking, use_pool
from ccm.cloudprovider.flags import Flag, FlagKind, FlagSet
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
    load_factory,
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
from ccm.metrics import REGISTRY as METRICS_REGISTRY

__all__ = [
    "CAPABILITIES",
    "ENTRY_POINT_GROUP",
    "METRICS_REGISTRY",
    "BlockingPool",
    "CloudProvider",
    "Clusters",
    "Flag",
    "FlagKind",
    "FlagSet",
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
    "load_factory",
    "register",
    "run_blocking",
    "split_provider_id",
    "unregister",
    "use_pool",
]
