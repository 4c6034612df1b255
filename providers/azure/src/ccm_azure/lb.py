"""LoadBalancer: the cluster's shared Standard load balancer, as upstream names its parts.

- Load balancer ``<clusterName>`` (``<clusterName>-internal`` for a Service annotated
  ``service.beta.kubernetes.io/azure-load-balancer-internal: "true"``), Standard SKU, in
  ``resourceGroup`` and ``location``; deleted when its last frontend goes.
- Per Service: a frontend IP configuration named ``a<uid without dashes>`` (32 characters at most,
  :meth:`get_load_balancer_name`), on a public IP ``<clusterName>-<frontend name>`` (Standard,
  static) or, internal, on a dynamic private address of ``subnetName`` in ``vnetName``; per port a
  load-balancing rule and a TCP probe on the Node port, both named
  ``<frontend name>-<protocol>-<port>``.
- One backend pool ``<clusterName>`` per load balancer holding the Nodes' internal IPv4 addresses
  (upstream's ``nodeIP`` backend pool configuration: no NIC is written).

Every change is a read-modify-write of the whole load balancer guarded by its etag
(``If-Match``; ``If-None-Match: *`` when creating it): a write that lost a race (HTTP 412) reads
again and retries (4 tries in all), so two writers never drop each other's frontend. Within the
process, the writes to one load balancer are serialized (as upstream serializes its reconciles).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
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
from ccm_azure.api import AzureApi, PreconditionFailedError, is_not_found
from ccm_azure.config import AzureConfig

__all__ = ["ANNOTATION_INTERNAL", "AzureLoadBalancers"]

ANNOTATION_INTERNAL = "service.beta.kubernetes.io/azure-load-balancer-internal"
TAG_SERVICE = "k8s-azure-service"
TAG_CLUSTER = "k8s-azure-cluster-name"
_ATTEMPTS = 4


def _internal(service: Service) -> bool:
    return service.annotations.get(ANNOTATION_INTERNAL, "").lower() == "true"


def _node_ip(node: Node) -> str | None:
    for address in node.addresses:
        internal = address.type == wellknown.ADDRESS_INTERNAL_IP
        if internal and ipaddress.ip_address(address.address).version == 4:
            return address.address
    return None


class AzureLoadBalancers(LoadBalancer):
    """The shared load balancers of the cluster."""

    def __init__(self, api: AzureApi, config: AzureConfig) -> None:
        self.api = api
        self.config = config
        self.group = config.resource_group
        self._locks: dict[str, asyncio.Lock] = {}

    # -- names ---------------------------------------------------------------------------------

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        return default_load_balancer_name(service)

    @staticmethod
    def lb_name(cluster_name: str, service: Service) -> str:
        return f"{cluster_name}-internal" if _internal(service) else cluster_name

    def _pip_name(self, cluster_name: str, service: Service) -> str:
        return f"{cluster_name}-{self.get_load_balancer_name(cluster_name, service)}"[:80]

    def _id(self, kind: str, name: str, child: str = "") -> str:
        return (
            f"/subscriptions/{self.config.subscription_id}/resourceGroups/{self.group}"
            f"/providers/Microsoft.Network/{kind}/{name}{child}"
        )

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

    async def _modify(self, name: str, change: Any) -> Any | None:
        """Read the load balancer, ``change(lb)`` it (False: nothing to write; None: delete it)
        and write it under its etag, again on a lost race. The writes of this process to one
        load balancer go one at a time; the etag guards against other writers."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            return await self._modify_locked(name, change)

    async def _modify_locked(self, name: str, change: Any) -> Any | None:
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
                        await self._delete("LoadBalancers.Delete", lbs, name)
                    return None
                return await self._write(name, lb, etag)
            except PreconditionFailedError:
                if attempt == _ATTEMPTS - 1:
                    raise
        return None

    async def _delete(self, what: str, operations: Any, name: str) -> None:
        try:
            await self.api.wait(what, lambda: operations.begin_delete(self.group, name))
        except Exception as exc:
            if not is_not_found(exc):
                raise

    async def _public_ip(self, cluster_name: str, service: Service) -> Any:
        name = self._pip_name(cluster_name, service)
        pips = self.api.network.public_ip_addresses
        try:
            return await self.api.call("PublicIPAddresses.Get", lambda: pips.get(self.group, name))
        except Exception as exc:
            if not is_not_found(exc):
                raise
        body = network.PublicIPAddress(
            location=self.config.location,
            sku=network.PublicIPAddressSku(name="Standard"),
            public_ip_allocation_method="Static",
            tags={TAG_SERVICE: service.key, TAG_CLUSTER: cluster_name},
        )
        return await self.api.wait(
            "PublicIPAddresses.CreateOrUpdate",
            lambda: pips.begin_create_or_update(self.group, name, body),
        )

    # -- the load balancer's parts -------------------------------------------------------------

    def _pool(self, lb: Any, cluster_name: str, nodes: Sequence[Node]) -> bool:
        """Set the backend pool to ``nodes``; whether it changed."""
        pools = lb.backend_address_pools = list(lb.backend_address_pools or ())
        pool = next((p for p in pools if p.name == cluster_name), None)
        if pool is None:
            pool = network.BackendAddressPool(name=cluster_name)
            pools.append(pool)
        vnet = self._id_in(
            self.config.vnet_resource_group or self.group, "virtualNetworks", self.config.vnet_name
        )
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

    def _id_in(self, group: str, kind: str, name: str) -> str:
        return (
            f"/subscriptions/{self.config.subscription_id}/resourceGroups/{group}"
            f"/providers/Microsoft.Network/{kind}/{name}"
        )

    def _apply(
        self, lb: Any, cluster_name: str, service: Service, nodes: Sequence[Node], pip: Any | None
    ) -> None:
        lb_name = self.lb_name(cluster_name, service)
        fip = self.get_load_balancer_name(cluster_name, service)
        prefix = fip + "-"
        fip_id = self._id("loadBalancers", lb_name, f"/frontendIPConfigurations/{fip}")
        pool_id = self._id("loadBalancers", lb_name, f"/backendAddressPools/{cluster_name}")
        frontends = [f for f in lb.frontend_ip_configurations or () if f.name != fip]
        current = next((f for f in lb.frontend_ip_configurations or () if f.name == fip), None)
        if pip is not None:
            frontend = network.FrontendIPConfiguration(
                name=fip, public_ip_address=network.PublicIPAddress(id=pip.id)
            )
        else:
            subnet = (
                self._id_in(
                    self.config.vnet_resource_group or self.group,
                    "virtualNetworks",
                    self.config.vnet_name,
                )
                + f"/subnets/{self.config.subnet_name}"
            )
            frontend = network.FrontendIPConfiguration(
                name=fip,
                subnet=network.Subnet(id=subnet),
                private_ip_allocation_method="Dynamic",
                private_ip_address=current.private_ip_address if current is not None else None,
            )
        lb.frontend_ip_configurations = [*frontends, frontend]
        rules = [r for r in lb.load_balancing_rules or () if not str(r.name).startswith(prefix)]
        probes = [p for p in lb.probes or () if not str(p.name).startswith(prefix)]
        for port in service.ports:
            protocol = str(port.get("protocol") or "TCP")
            name = f"{fip}-{protocol}-{port['port']}"[:80]
            node_port = int(port.get("nodePort") or port["port"])
            probes.append(
                network.Probe(
                    name=name,
                    protocol="Tcp",
                    port=node_port,
                    interval_in_seconds=5,
                    number_of_probes=2,
                )
            )
            rules.append(
                network.LoadBalancingRule(
                    name=name,
                    protocol=protocol.title(),
                    frontend_port=int(port["port"]),
                    backend_port=int(port["port"]),
                    frontend_ip_configuration=network.SubResource(id=fip_id),
                    backend_address_pool=network.SubResource(id=pool_id),
                    probe=network.SubResource(
                        id=self._id("loadBalancers", lb_name, f"/probes/{name}")
                    ),
                    enable_floating_ip=True,
                    idle_timeout_in_minutes=4,
                    disable_outbound_snat=False,
                )
            )
        lb.load_balancing_rules = rules
        lb.probes = probes
        self._pool(lb, cluster_name, nodes)

    def _status(self, lb: Any, service: Service, pip: Any | None) -> LoadBalancerStatus:
        fip = self.get_load_balancer_name("", service)
        if pip is not None:
            return LoadBalancerStatus(ingress=(LoadBalancerIngress(ip=str(pip.ip_address)),))
        for frontend in lb.frontend_ip_configurations or ():
            if frontend.name == fip and frontend.private_ip_address:
                ip = str(frontend.private_ip_address)
                return LoadBalancerStatus(ingress=(LoadBalancerIngress(ip=ip),))
        raise errors.CloudProviderError(f"load balancer frontend {fip} has no address yet")

    # -- LoadBalancer --------------------------------------------------------------------------

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        lb = await self._read(self.lb_name(cluster_name, service))
        fip = self.get_load_balancer_name(cluster_name, service)
        if lb is None or not any(f.name == fip for f in lb.frontend_ip_configurations or ()):
            return None
        pip = None if _internal(service) else await self._public_ip(cluster_name, service)
        return self._status(lb, service, pip)

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        if not service.ports:
            raise errors.CloudProviderError(f"service {service.key} has no ports")
        pip = None if _internal(service) else await self._public_ip(cluster_name, service)

        def change(lb: Any) -> bool:
            self._apply(lb, cluster_name, service, nodes, pip)
            return True

        name = self.lb_name(cluster_name, service)
        lb = await self._modify(name, change)
        # A Service that switched between public and internal leaves the other load balancer.
        other = cluster_name if name != cluster_name else f"{cluster_name}-internal"
        fip = self.get_load_balancer_name(cluster_name, service)
        if await self._remove(other, fip) and pip is None:
            await self._delete(
                "PublicIPAddresses.Delete",
                self.api.network.public_ip_addresses,
                self._pip_name(cluster_name, service),
            )
        return self._status(lb, service, pip)

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        name = self.lb_name(cluster_name, service)
        # Only an existing load balancer (one ensure made: it has an etag) is updated.
        await self._modify(name, lambda lb: bool(lb.etag) and self._pool(lb, cluster_name, nodes))

    async def _remove(self, lb_name: str, fip: str) -> bool:
        """Remove the frontend ``fip`` with its rules and probes from load balancer ``lb_name``
        (the load balancer itself with its last frontend); whether it was there."""
        prefix = fip + "-"
        found = False

        def change(lb: Any) -> bool | None:
            nonlocal found
            frontends = list(lb.frontend_ip_configurations or ())
            kept = [f for f in frontends if f.name != fip]
            found = len(kept) != len(frontends)
            if not found:
                return False
            if not kept:
                return None
            lb.frontend_ip_configurations = kept
            lb.load_balancing_rules = [
                r for r in lb.load_balancing_rules or () if not str(r.name).startswith(prefix)
            ]
            lb.probes = [p for p in lb.probes or () if not str(p.name).startswith(prefix)]
            return True

        await self._modify(lb_name, change)
        return found

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        fip = self.get_load_balancer_name(cluster_name, service)
        for lb_name in (cluster_name, f"{cluster_name}-internal"):
            await self._remove(lb_name, fip)
        await self._delete(
            "PublicIPAddresses.Delete",
            self.api.network.public_ip_addresses,
            self._pip_name(cluster_name, service),
        )
