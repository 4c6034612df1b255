"""The LoadBalancer capability of the AWS provider: a classic ELB by default
(:mod:`ccm_aws.elb`), an NLB with ``service.beta.kubernetes.io/aws-load-balancer-type: nlb``
(:mod:`ccm_aws.nlb`), nothing with ``external`` or ``nlb-ip`` (the AWS Load Balancer Controller's:
ImplementedElsewhereError, as upstream).

Every ensure first checks the Service and parses every annotation
(:func:`ccm_aws.annotations.validate`): a malformed or unsupported one raises an error naming it
before any AWS call, so the service controller reports it in a Warning event and nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ccm.cloudprovider import LoadBalancerStatus, Node, Service, default_load_balancer_name
from ccm.errors import CloudProviderError, ImplementedElsewhereError
from ccm_aws import annotations as ann
from ccm_aws.api import AWSApi
from ccm_aws.elb import ClassicLoadBalancers
from ccm_aws.instances import AWSInstances
from ccm_aws.lbnetwork import LBNetwork
from ccm_aws.nlb import NetworkLoadBalancers
from ccm_aws.tags import ClusterTagging

__all__ = ["AWSLoadBalancers"]


class AWSLoadBalancers:
    """Classic ELBs and NLBs, chosen by the Service's ``aws-load-balancer-type``."""

    def __init__(
        self,
        api: AWSApi,
        tagging: ClusterTagging,
        instances: AWSInstances,
        *,
        vpc: str = "",
        elb_security_group: str = "",
        disable_security_group_ingress: bool = False,
    ) -> None:
        self.network = LBNetwork(api, tagging, instances, vpc=vpc)
        self.classic = ClassicLoadBalancers(
            api,
            tagging,
            instances,
            self.network,
            elb_security_group=elb_security_group,
            disable_security_group_ingress=disable_security_group_ingress,
        )
        self.nlb = NetworkLoadBalancers(
            api,
            tagging,
            self.network,
            disable_security_group_ingress=disable_security_group_ingress,
        )

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        return default_load_balancer_name(service)

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        """The load balancer's status, or None when it does not exist. What a delete cut short
        left (the ELB's security group, target groups) counts as existing with no ingress, so that
        the service controller deletes it before it drops the Service's finalizer."""
        if ann.is_external(service):
            return None
        name = self.get_load_balancer_name(cluster_name, service)
        if ann.is_nlb(service):
            lb = await self.nlb.describe(name)
            if lb is not None:
                return self.nlb.status(lb)
        else:
            description = await self.classic.describe(name)
            if description is not None:
                return self.classic.status(description)
        left = await self.classic.leftover_group(name)
        if left is None and ann.is_nlb(service):
            left = next(iter(await self.nlb.orphans(service)), None)
        return LoadBalancerStatus() if left is not None else None

    async def _check_type(self, name: str, service: Service) -> None:
        """Refuse a type annotation changed after creation (upstream's validation), when the
        other kind of load balancer exists under the Service's name."""
        if not ann.type_changed(service):
            return
        nlb = ann.is_nlb(service)
        other = await (self.classic.describe(name) if nlb else self.nlb.describe(name))
        if other is not None:
            raise ann.AnnotationError(
                ann.TYPE,
                service.annotations.get(ann.TYPE, ""),
                "cannot update Load Balancer Type annotation after creation",
            )

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        if ann.is_external(service):
            raise ImplementedElsewhereError()
        ann.validate(service)
        name = self.get_load_balancer_name(cluster_name, service)
        await self._check_type(name, service)
        if ann.is_nlb(service):
            return await self.nlb.ensure(name, service, nodes)
        return await self.classic.ensure(name, service, nodes)

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        if ann.is_external(service):
            raise ImplementedElsewhereError()
        ann.validate(service)
        name = self.get_load_balancer_name(cluster_name, service)
        await self._check_type(name, service)
        if ann.is_nlb(service):
            if await self.nlb.describe(name) is None:
                raise CloudProviderError(f"load balancer not found: {name}")
            await self.nlb.ensure(name, service, nodes)
            return
        await self.classic.update(name, service, nodes)

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        if ann.is_external(service):
            return  # the other controller's to delete
        name = self.get_load_balancer_name(cluster_name, service)
        # Both kinds: a Service whose type annotation changed leaves nothing behind.
        await self.nlb.delete(name, service, orphans=ann.is_nlb(service))
        await self.classic.delete(name, service)
