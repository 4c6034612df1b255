"""The ``aws`` provider: EC2 instances for ccm's node and node-lifecycle controllers.

``--cloud-provider aws --cloud-config /etc/kubernetes/cloud.conf`` (the INI file of
cloud-provider-aws, :mod:`ccm_aws.config`). The factory parses the file and resolves the region
(which may ask the instance metadata service, on the framework's thread pool); it makes no AWS API
call. Capabilities: InstancesV2 and InstancesBatch (:mod:`ccm_aws.instances`), Routes
(:mod:`ccm_aws.routes`), LoadBalancer with classic ELBs and NLBs (:mod:`ccm_aws.loadbalancer`).

Provider IDs are ``aws:///<availability zone>/<instance id>``, as upstream.
"""

from __future__ import annotations

import logging

from ccm.cloudprovider import (
    CloudProvider,
    InstancesBatch,
    InstancesV2,
    LoadBalancer,
    Routes,
    run_blocking,
)
from ccm_aws import addresses
from ccm_aws.api import AWSApi, resolve_region
from ccm_aws.config import AWSConfig
from ccm_aws.instances import AWSInstances
from ccm_aws.loadbalancer import AWSLoadBalancers
from ccm_aws.routes import AWSRoutes
from ccm_aws.tags import ClusterTagging

__all__ = ["PROVIDER_NAME", "AWSProvider", "factory"]

PROVIDER_NAME = addresses.PROVIDER_NAME

_log = logging.getLogger("ccm_aws")


class AWSProvider(CloudProvider):
    """The AWS cloud provider; build it with :func:`factory`."""

    name = PROVIDER_NAME

    def __init__(self, config: AWSConfig, region: str) -> None:
        self.config = config
        self.region = region
        self.api = AWSApi(config, region)
        self.tagging = ClusterTagging(config.cluster_id, config.uses_legacy_tags)
        self._instances = AWSInstances(self.api, self.tagging, families=config.node_ip_families)
        self._routes = AWSRoutes(
            self.api, self.tagging, self._instances, route_table_id=config.route_table_id
        )
        self._load_balancers = AWSLoadBalancers(
            self.api,
            self.tagging,
            self._instances,
            vpc=config.global_.vpc,
            elb_security_group=config.global_.elb_security_group,
            disable_security_group_ingress=config.global_.disable_security_group_ingress,
        )
        if self.tagging.cluster_id:
            _log.info("AWS cloud filtering on ClusterID: %s", self.tagging.cluster_id)
        else:
            _log.warning(
                "No cluster ID ([Global] KubernetesClusterID or KubernetesClusterTag): every "
                "instance and route table counts as this cluster's"
            )
        _log.info(
            "The following IP families will be added to nodes: %s",
            list(config.node_ip_families),
        )

    def has_cluster_id(self) -> bool:
        return bool(self.tagging.cluster_id)

    def instances_v2(self) -> InstancesV2 | None:
        return self._instances

    def instances_batch(self) -> InstancesBatch | None:
        return self._instances

    def load_balancer(self) -> LoadBalancer | None:
        return self._load_balancers

    def routes(self) -> Routes | None:
        return self._routes

    async def aclose(self) -> None:
        await run_blocking(self.api.close)


async def factory(config: bytes | None) -> AWSProvider:
    """The ``ccm.cloud_providers`` entry point ``aws``."""
    parsed = AWSConfig.parse(config)
    region = await run_blocking(resolve_region, parsed)
    return await run_blocking(AWSProvider, parsed, region)
