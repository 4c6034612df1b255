"""The ``azure`` provider: Azure virtual machines for ccm's node and node-lifecycle controllers.

``--cloud-provider azure --cloud-config /etc/kubernetes/azure.json`` (upstream's file,
:mod:`ccm_azure.config`). The factory parses the file and makes no call; the SDK clients are
created on the event loop at the first call (:class:`ccm_azure.api.AzureApi`). Capabilities:
InstancesV2 and InstancesBatch for VMs and scale set instances (:mod:`ccm_azure.nodes`), Routes
when ``routeTableName`` is set (:mod:`ccm_azure.routes`), LoadBalancer (:mod:`ccm_azure.lb`).
"""

from __future__ import annotations

import logging

from ccm.cloudprovider import (
    CloudProvider,
    InitContext,
    InstancesBatch,
    InstancesV2,
    LoadBalancer,
    Routes,
)
from ccm_azure.api import AzureApi
from ccm_azure.config import VM_TYPE_VMSS, AzureConfig
from ccm_azure.instances import PROVIDER_NAME, AzureInstances
from ccm_azure.lb import AzureLoadBalancers
from ccm_azure.nodes import AzureNodes
from ccm_azure.routes import AzureRoutes
from ccm_azure.vmss import VmssInstances

__all__ = ["AzureProvider", "factory"]

_log = logging.getLogger("ccm_azure")


class AzureProvider(CloudProvider):
    """The Azure cloud provider; build it with :func:`factory`."""

    name = PROVIDER_NAME

    def __init__(self, config: AzureConfig) -> None:
        self.config = config
        self.api = AzureApi(config)
        self._instances = AzureNodes(
            AzureInstances(self.api, config.resource_group),
            VmssInstances(self.api, config.resource_group),
            vmss=config.vm_set_type == VM_TYPE_VMSS,
        )
        self._load_balancers = AzureLoadBalancers(self.api, config)
        self._routes = (
            AzureRoutes(
                self.api,
                self._instances,
                table=config.route_table_name,
                group=config.route_table_group,
                location=config.location,
            )
            if config.route_table_name
            else None
        )
        _log.info(
            "Azure provider: subscription %s, resource group %s, location %s, vmType %s",
            config.subscription_id,
            config.resource_group,
            config.location,
            config.vm_set_type,
        )

    async def initialize(self, context: InitContext) -> None:
        await self.api.open()

    def instances_v2(self) -> InstancesV2 | None:
        return self._instances

    def instances_batch(self) -> InstancesBatch | None:
        return self._instances

    def load_balancer(self) -> LoadBalancer | None:
        return self._load_balancers

    def routes(self) -> Routes | None:
        return self._routes

    async def aclose(self) -> None:
        await self.api.close()


def factory(config: bytes | None) -> AzureProvider:
    """The ``ccm.cloud_providers`` entry point ``azure``."""
    return AzureProvider(AzureConfig.parse(config))
