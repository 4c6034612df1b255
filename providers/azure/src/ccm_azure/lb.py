"""LoadBalancer: the cluster's shared Standard load balancer, as upstream names its parts.

- Load balancer ``<clusterName>`` (``<clusterName>-internal`` for a Service annotated
  ``service.beta.kubernetes.io/azure-load-balancer-internal: "true"``), Standard SKU, in
  ``resourceGroup`` and ``location``; deleted when its last frontend goes.
- Per Service a frontend, rules and probes (:mod:`ccm_azure.lbparts`), on a public IP
  ``<clusterName>-a<uid>`` (or ``azure-pip-name``; in ``azure-load-balancer-resource-group`` when
  set; Standard, static, its DNS label ``azure-dns-label-name``) or, internal, on a dynamic private
  address of ``subnetName`` (or ``azure-load-balancer-internal-subnet``) in ``vnetName``; and its
  network security group rules (:mod:`ccm_azure.nsg`). Only a public IP tagged with the Service
  is deleted with it (one named by ``azure-pip-name`` that ccm did not create stays).
- One backend pool ``<clusterName>`` per load balancer holding the Nodes' internal IPv4 addresses
  (upstream's ``nodeIP`` backend pool configuration: no NIC or scale set is written).

The annotations are read first (:mod:`ccm_azure.annotations`): an unknown or malformed one fails the
ensure before any cloud call. Every change is a read-modify-write of the whole load balancer guarded
by its etag (``If-Match``; ``If-None-Match: *`` when creating it): a write that lost a race (HTTP
412) reads again and retries (4 tries in all), so two writers never drop each other's frontend.
Within the process, the writes to one load balancer are serialized (as upstream serializes its
reconciles).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from azure.mgmt.network import models as network

from ccm import errors, wellknown
from ccm.cloudprovider import (
    LoadBalancer,
    LoadBalancerIngress,
    LoadBalancerStatus,
    Node,
    Service,
    default_load_balancer_name,
)
from ccm_azure import annotations as svcopts
from ccm_azure import lbparts
from ccm_azure.annotations import ServiceOptions
from ccm_azure.api import AzureApi, PreconditionFailedError, is_not_found
from ccm_azure.config import VM_TYPE_VMSS, AzureConfig
from ccm_azure.nsg import SecurityGroup
from ccm_azure.vmsspool import ScaleSetPools

__all__ = ["ANNOTATION_INTERNAL", "AzureLoadBalancers"]

ANNOTATION_INTERNAL = svcopts.INTERNAL
TAG_SERVICE = "k8s-azure-service"
TAG_CLUSTER = "k8s-azure-cluster-name"
_ATTEMPTS = 4


def _node_ip(node: Node) -> str | None:
    for address in node.addresses:
        internal = address.type == wellknown.ADDRESS_INTERNAL_IP
        if internal and ipaddress.ip_address(address.address).version == 4:
            return address.address
    return None


def _ours(pip: Any, service: Service) -> bool:
    """Whether ccm created ``pip`` for ``service`` (upstream's ``k8s-azure-service`` tag, a
    comma-separated list of Services)."""
    owners = (pip.tags or {}).get(TAG_SERVICE, "")
    return service.key in {o.strip() for o in owners.split(",")}


class AzureLoadBalancers(LoadBalancer):
    """The shared load balancers of the cluster."""

    def __init__(self, api: AzureApi, config: AzureConfig) -> None:
        self.api = api
        self.config = config
        self.group = config.resource_group
        self.ids = lbparts.Ids(config.subscription_id, config.resource_group)
        self.security_group = SecurityGroup(
            api,
            config.security_group_resource_group or config.resource_group,
            config.security_group_name,
        )
        vmss = config.vm_set_type == VM_TYPE_VMSS
        self.scale_sets = ScaleSetPools(api, config.resource_group) if vmss else None
        self._locks: dict[str, asyncio.Lock] = {}

    # -- names ---------------------------------------------------------------------------------

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        return default_load_balancer_name(service)

    @staticmethod
    def lb_name(cluster_name: str, service: Service) -> str:
        internal = svcopts.is_internal(service)
        return f"{cluster_name}-internal" if internal else cluster_name

    def _pip_where(
        self, cluster_name: str, service: Service, options: ServiceOptions
    ) -> tuple[str, str]:
        """(resource group, name) of the Service's public IP."""
        default = f"{cluster_name}-{default_load_balancer_name(service)}"
        return options.pip_resource_group or self.group, options.pip_name or default

    # -- ARM -----------------------------------------------------------------------------------

    async def _read(self, name: str) -> Any | None:
        try:
            return await self.api.call(
                "LoadBalancers.Get", lambda: self.api.network.load_balancers.get(self.group, name)
            )
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def _write(self, name: str, lb: Any, etag: str | None) -> Any:
        headers = {"If-Match": etag} if etag else {"If-None-Match": "*"}
        return await self.api.wait(
            "LoadBalancers.CreateOrUpdate",
            lambda: self.api.network.load_balancers.begin_create_or_update(
                self.group, name, lb, headers=headers
            ),
        )

    async def _modify(self, name: str, change: Callable[[Any], bool | None]) -> Any | None:
        """Read the load balancer, ``change(lb)`` it (False: nothing to write; None: delete it) and
        write it under its etag, again on a lost race. The writes of this process to one load
        balancer go one at a time; the etag guards against other writers."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            for attempt in range(_ATTEMPTS):
                lb = await self._read(name)
                etag = lb.etag if lb is not None else None
                if lb is None:
                    lb = network.LoadBalancer(
                        location=self.config.location,
                        sku=network.LoadBalancerSku(name="Standard"),
                        frontend_ip_configurations=[],
                        backend_address_pools=[],
                        load_balancing_rules=[],
                        probes=[],
                    )
                verdict = change(lb)
                if verdict is False:
                    return lb
                try:
                    if verdict is None:
                        if etag is not None:
                            lbs = self.api.network.load_balancers
                            await self._delete("LoadBalancers.Delete", lbs, self.group, name)
                        return None
                    return await self._write(name, lb, etag)
                except PreconditionFailedError:
                    if attempt == _ATTEMPTS - 1:
                        raise
        return None

    async def _delete(self, what: str, operations: Any, group: str, name: str) -> None:
        try:
            await self.api.wait(what, lambda: operations.begin_delete(group, name))
        except Exception as exc:
            if not is_not_found(exc):
                raise

    async def _read_pip(self, group: str, name: str) -> Any | None:
        pips = self.api.network.public_ip_addresses
        try:
            return await self.api.call("PublicIPAddresses.Get", lambda: pips.get(group, name))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def _public_ip(self, cluster_name: str, service: Service, options: ServiceOptions) -> Any:
        """The Service's public IP, created (or its DNS label set) when needed."""
        group, name = self._pip_where(cluster_name, service, options)
        pip = await self._read_pip(group, name)
        label = options.dns_label_name
        if pip is not None:
            current = pip.dns_settings.domain_name_label if pip.dns_settings else None
            if current == label or (label is None and not _ours(pip, service)):
                return pip
            body = pip
        else:
            body = network.PublicIPAddress(
                location=self.config.location,
                sku=network.PublicIPAddressSku(name="Standard"),
                public_ip_allocation_method="Static",
                tags={TAG_SERVICE: service.key, TAG_CLUSTER: cluster_name},
            )
        body.dns_settings = (
            network.PublicIPAddressDnsSettings(domain_name_label=label) if label else None
        )
        pips = self.api.network.public_ip_addresses
        return await self.api.wait(
            "PublicIPAddresses.CreateOrUpdate",
            lambda: pips.begin_create_or_update(group, name, body),
        )

    # -- the load balancer's parts -------------------------------------------------------------

    def _pool(self, lb: Any, cluster_name: str, nodes: Sequence[Node]) -> bool:
        """Set the backend pool to ``nodes``; whether it changed."""
        pools = lb.backend_address_pools = list(lb.backend_address_pools or ())
        pool = next((p for p in pools if p.name == cluster_name), None)
        if pool is None:
            pool = network.BackendAddressPool(name=cluster_name)
            pools.append(pool)
        if self.scale_sets is not None:
            return False  # the scale sets' NIC configurations hold the members
        vnet = self._vnet()
        want = sorted((n.name, ip) for n in nodes if (ip := _node_ip(n)))
        have = sorted((a.name, a.ip_address) for a in pool.load_balancer_backend_addresses or ())
        if want == have:
            return False
        pool.load_balancer_backend_addresses = [
            network.LoadBalancerBackendAddress(
                name=name, ip_address=ip, virtual_network=network.SubResource(id=vnet)
            )
            for name, ip in want
        ]
        return True

    def _vnet(self) -> str:
        group = self.config.vnet_resource_group or self.group
        return self.ids.of("virtualNetworks", self.config.vnet_name, group=group)

    def _frontend(self, service: Service, options: ServiceOptions, lb: Any, pip: Any | None) -> Any:
        name = lbparts.frontend_name(service, options)
        if pip is not None:
            return network.FrontendIPConfiguration(
                name=name, public_ip_address=network.PublicIPAddress(id=pip.id)
            )
        current = next((f for f in lb.frontend_ip_configurations or () if f.name == name), None)
        subnet = options.internal_subnet or self.config.subnet_name
        return network.FrontendIPConfiguration(
            name=name,
            subnet=network.Subnet(id=f"{self._vnet()}/subnets/{subnet}"),
            private_ip_allocation_method="Dynamic",
            private_ip_address=current.private_ip_address if current is not None else None,
        )

    @staticmethod
    def _address(lb: Any | None, service: Service, pip: Any | None) -> str | None:
        """The Service's frontend address: its public IP's, else its private frontend's."""
        if pip is not None:
            return str(pip.ip_address) if pip.ip_address else None
        for frontend in (lb.frontend_ip_configurations or ()) if lb is not None else ():
            if lbparts.owns(service, str(frontend.name)) and frontend.private_ip_address:
                return str(frontend.private_ip_address)
        return None

    def _status(self, lb: Any, service: Service, pip: Any | None) -> LoadBalancerStatus:
        address = self._address(lb, service, pip)
        if address is None:
            fip = self.get_load_balancer_name("", service)
            raise errors.CloudProviderError(f"load balancer frontend {fip} has no address yet")
        return LoadBalancerStatus(ingress=(LoadBalancerIngress(ip=address),))

    # -- LoadBalancer --------------------------------------------------------------------------

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        lb = await self._read(self.lb_name(cluster_name, service))
        if lb is None or not any(
            lbparts.owns(service, str(f.name)) for f in lb.frontend_ip_configurations or ()
        ):
            return None
        pip = None
        if not svcopts.is_internal(service):
            options = svcopts.lenient(service)
            pip = await self._read_pip(*self._pip_where(cluster_name, service, options))
        return self._status(lb, service, pip)

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        if not service.ports:
            raise errors.CloudProviderError(f"service {service.key} has no ports")
        options = svcopts.parse(service)  # before any cloud call: a bad one changes nothing
        pip = None if options.internal else await self._public_ip(cluster_name, service, options)
        name = self.lb_name(cluster_name, service)

        def change(lb: Any) -> bool:
            frontend = self._frontend(service, options, lb, pip)
            lbparts.apply(
                lb, ids=self.ids, lb_name=name, pool=cluster_name, service=service,
                options=options, frontend=frontend,
            )  # fmt: skip
            self._pool(lb, cluster_name, nodes)
            return True

        lb = await self._modify(name, change)
        await self._sync_scale_sets(name, cluster_name, nodes)
        status = self._status(lb, service, pip)
        await self.security_group.ensure(service, options, [status.ingress[0].ip or ""])
        # A Service that switched between public and internal leaves the other load balancer.
        other = cluster_name if name != cluster_name else f"{cluster_name}-internal"
        old = await self._read(other)
        if old is not None and any(
            lbparts.owns(service, str(f.name)) for f in old.frontend_ip_configurations or ()
        ):
            if options.internal:
                await self._delete_pip(cluster_name, service, options, status.ingress[0].ip)
            else:
                address = self._address(old, service, None)
                await self.security_group.remove([address] if address else [])
            await self._remove(other, service, cluster_name)
        return status

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        name = self.lb_name(cluster_name, service)
        # Only an existing load balancer (one ensure made: it has an etag) is updated.
        lb = await self._modify(
            name, lambda lb: bool(lb.etag) and self._pool(lb, cluster_name, nodes)
        )
        if lb is not None and lb.etag:
            await self._sync_scale_sets(name, cluster_name, nodes)

    async def _sync_scale_sets(self, lb_name: str, pool: str, nodes: Sequence[Node]) -> None:
        """With ``vmType: vmss``: the scale set instances of ``nodes`` into the pool."""
        if self.scale_sets is not None:
            pool_id = self.ids.of("loadBalancers", lb_name, f"/backendAddressPools/{pool}")
            await self.scale_sets.sync(pool_id, nodes)

    async def _remove(self, lb_name: str, service: Service, pool: str) -> None:
        """Remove the Service's frontend, rules and probes from load balancer ``lb_name`` (the
        load balancer itself with its last frontend, after the scale sets leave its pool)."""
        if self.scale_sets is not None:
            lb = await self._read(lb_name)
            frontends = (lb.frontend_ip_configurations or ()) if lb is not None else ()
            if frontends and all(lbparts.owns(service, str(f.name)) for f in frontends):
                await self._sync_scale_sets(lb_name, pool, [])

        def change(lb: Any) -> bool | None:
            if not lbparts.remove(lb, service):
                return False
            return True if lb.frontend_ip_configurations else None

        await self._modify(lb_name, change)

    async def _delete_pip(
        self, cluster_name: str, service: Service, options: ServiceOptions, keep: str | None = None
    ) -> None:
        """Delete the Service's public IP if ccm made it for the Service (its address's NSG rules
        first); ``keep``: an address still in use whose rules stay."""
        group, name = self._pip_where(cluster_name, service, options)
        pip = await self._read_pip(group, name)
        if pip is None or not _ours(pip, service):
            return
        if pip.ip_address and pip.ip_address != keep:
            await self.security_group.remove([str(pip.ip_address)])
        await self._delete(
            "PublicIPAddresses.Delete", self.api.network.public_ip_addresses, group, name
        )

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        options = svcopts.lenient(service)
        group, name = self._pip_where(cluster_name, service, options)
        pip = await self._read_pip(group, name)
        # The security rules first (to the public IP's and any private frontend's address).
        addresses = [str(pip.ip_address)] if pip is not None and pip.ip_address else []
        found = []
        for lb_name in (cluster_name, f"{cluster_name}-internal"):
            lb = await self._read(lb_name)
            if lb is not None:
                found.append(lb_name)
                if (address := self._address(lb, service, None)) is not None:
                    addresses.append(address)
        await self.security_group.remove(addresses)
        for lb_name in found:
            await self._remove(lb_name, service, cluster_name)
        if pip is not None and _ours(pip, service):
            pips = self.api.network.public_ip_addresses
            await self._delete("PublicIPAddresses.Delete", pips, group, name)
