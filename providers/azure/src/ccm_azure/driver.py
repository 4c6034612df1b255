"""The conformance driver of the Azure provider: the suite's own hand on Azure Resource Manager.

``ccm conformance --cloud-provider azure --cloud-config azure.json --driver
ccm_azure.driver:driver_factory`` — the factory receives the provider the suite built and opens
SDK clients of its own with the same configuration (never the provider's): it creates a public
IP, a network interface (in ``vnetName``/``subnetName``) and a virtual machine per machine,
alternating zones 1 and 2, deallocates and starts VMs through their long-running operations, and
deletes all three. Against the fake ARM server of :mod:`ccm_azure.testing` every call is free;
against a real subscription the machines are real and billed (and need an image and OS profile
this driver does not set: a real run needs a subclass overriding :meth:`AzureDriver._vm_body`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from azure.mgmt.compute import models as compute
from azure.mgmt.network import models as network

from ccm.cloudprovider import CloudProvider, NodeAddress
from ccm.testing.conformance.driver import (
    CloudLoadBalancer,
    CloudRoute,
    ConformanceDriverBase,
    Machine,
)
from ccm_azure.api import POLL_INTERVAL, AzureApi, is_not_found
from ccm_azure.instances import node_addresses, provider_id
from ccm_azure.provider import AzureProvider
from ccm_azure.routes import node_of_route

__all__ = ["AzureDriver", "driver_factory"]


class AzureDriver(ConformanceDriverBase):
    """Creates the suite's machines as VMs in the provider's resource group."""

    vm_size = "Standard_D2s_v3"
    #: Azure routes carry no tags: the configured route table is the cluster's scope and
    #: ``cluster_name`` does not scope its routes (as upstream), so the suite does not check it.
    route_scope = "route-table"
    #: Give each NIC an IPv6 configuration too (a dual-stack subnet), for the routes' dual-stack
    #: scenario.
    dual_stack = True

    def __init__(self, provider: AzureProvider) -> None:
        super().__init__()
        self.config = provider.config
        # Polled often against a server on this machine (the fake), as the provider does not.
        local = "://127.0.0.1" in provider.config.resource_manager_endpoint
        self.api = AzureApi(provider.config, poll_interval=0.05 if local else POLL_INTERVAL)
        self.group = provider.config.resource_group
        self._serial = itertools.count(4)
        self._zones = itertools.cycle(("1", "2"))

    def _id(self, namespace: str, kind: str, name: str, group: str | None = None) -> str:
        return (
            f"/subscriptions/{self.config.subscription_id}/resourceGroups/{group or self.group}"
            f"/providers/{namespace}/{kind}/{name}"
        )

    def _next_ip(self, prefix: str) -> str:
        n = next(self._serial)
        return f"{prefix}.{n // 250}.{n % 250 + 2}"

    def _vm_body(self, nic_id: str, zone: str) -> compute.VirtualMachine:
        return compute.VirtualMachine(
            location=self.config.location,
            zones=[zone],
            properties=compute.VirtualMachineProperties(
                hardware_profile=compute.HardwareProfile(vm_size=self.vm_size),
                network_profile=compute.NetworkProfile(
                    network_interfaces=[
                        compute.NetworkInterfaceReference(
                            id=nic_id,
                            properties=compute.NetworkInterfaceReferenceProperties(primary=True),
                        )
                    ]
                ),
            ),
        )

    async def _nic_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        net = self.api.network
        nic = await self.api.call(
            "NetworkInterfaces.Get", lambda: net.network_interfaces.get(self.group, f"{name}-nic")
        )
        pip = await self.api.call(
            "PublicIPAddresses.Get", lambda: net.public_ip_addresses.get(self.group, f"{name}-pip")
        )
        return node_addresses(name, nic, {str(pip.id).lower(): str(pip.ip_address)})

    def _ipv6_configs(self, subnet: str) -> list[network.NetworkInterfaceIPConfiguration]:
        if not self.dual_stack:
            return []
        n = next(self._serial)
        return [
            network.NetworkInterfaceIPConfiguration(
                name="ipconfig-v6",
                primary=False,
                private_ip_address=f"fd00:240::{n:x}",
                private_ip_address_version="IPv6",
                private_ip_allocation_method="Static",
                subnet=network.Subnet(id=subnet),
            )
        ]

    async def create_machine(self, name: str) -> Machine:
        await self.api.open()
        net = self.api.network
        location = self.config.location
        pip = network.PublicIPAddress(
            location=location,
            public_ip_allocation_method="Static",
            ip_address=self._next_ip("20.30"),
            sku=network.PublicIPAddressSku(name="Standard"),
        )
        pip = await self.api.wait(
            "PublicIPAddresses.CreateOrUpdate",
            lambda: net.public_ip_addresses.begin_create_or_update(self.group, f"{name}-pip", pip),
        )
        subnet = (
            self._id(
                "Microsoft.Network",
                "virtualNetworks",
                self.config.vnet_name or "vnet",
                self.config.vnet_resource_group or None,
            )
            + f"/subnets/{self.config.subnet_name or 'subnet'}"
        )
        nic = network.NetworkInterface(
            location=location,
            ip_configurations=[
                network.NetworkInterfaceIPConfiguration(
                    name="ipconfig1",
                    primary=True,
                    private_ip_address=self._next_ip("10.240"),
                    private_ip_allocation_method="Static",
                    subnet=network.Subnet(id=subnet),
                    public_ip_address=network.PublicIPAddress(id=pip.id),
                ),
                *self._ipv6_configs(subnet),
            ],
        )
        nic = await self.api.wait(
            "NetworkInterfaces.CreateOrUpdate",
            lambda: net.network_interfaces.begin_create_or_update(self.group, f"{name}-nic", nic),
        )
        zone = next(self._zones)
        vm = await self.api.wait(
            "VirtualMachines.CreateOrUpdate",
            lambda: self.api.compute.virtual_machines.begin_create_or_update(
                self.group, name, self._vm_body(str(nic.id), zone)
            ),
        )
        machine = Machine(
            name=name,
            provider_id=provider_id(self.config.subscription_id, self.group, str(vm.name)),
            addresses=await self._nic_addresses(name),
            instance_type=self.vm_size,
            zone=f"{location.lower()}-{zone}",
            region=location.lower(),
        )
        self.machines[name] = machine
        return machine

    async def stop_machine(self, name: str) -> None:
        await self.api.wait(
            "VirtualMachines.Deallocate",
            lambda: self.api.compute.virtual_machines.begin_deallocate(self.group, name),
        )

    async def start_machine(self, name: str) -> None:
        await self.api.wait(
            "VirtualMachines.Start",
            lambda: self.api.compute.virtual_machines.begin_start(self.group, name),
        )

    async def delete_machine(self, name: str) -> None:
        await self.api.open()
        net = self.api.network
        steps: list[tuple[str, Any]] = [
            (
                "VirtualMachines.Delete",
                lambda: self.api.compute.virtual_machines.begin_delete(self.group, name),
            ),
            (
                "NetworkInterfaces.Delete",
                lambda: net.network_interfaces.begin_delete(self.group, f"{name}-nic"),
            ),
            (
                "PublicIPAddresses.Delete",
                lambda: net.public_ip_addresses.begin_delete(self.group, f"{name}-pip"),
            ),
        ]
        for what, begin in steps:
            try:
                await self.api.wait(what, begin)
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    async def change_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        """Give the machine's NIC a second IP configuration (one more private address)."""
        net = self.api.network
        nic = await self.api.call(
            "NetworkInterfaces.Get", lambda: net.network_interfaces.get(self.group, f"{name}-nic")
        )
        configs = nic.ip_configurations = list(nic.ip_configurations or ())
        configs.append(
            network.NetworkInterfaceIPConfiguration(
                name=f"ipconfig{len(configs) + 1}",
                primary=False,
                private_ip_address=self._next_ip("10.241"),
                private_ip_allocation_method="Static",
                subnet=configs[0].subnet,
            )
        )
        await self.api.wait(
            "NetworkInterfaces.CreateOrUpdate",
            lambda: net.network_interfaces.begin_create_or_update(self.group, f"{name}-nic", nic),
        )
        return await self._nic_addresses(name)

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        """One entry per frontend of the resource group's load balancers (a Service's share of
        the shared load balancer), read directly from ARM: its public IP's address and service
        tag, or its private address; the backend pool's Node names."""
        await self.api.open()
        net = self.api.network
        lbs = await self.api.collect(
            "LoadBalancers.List", lambda: net.load_balancers.list(self.group)
        )
        pips = {
            str(p.id).lower(): p
            for p in await self.api.collect(
                "PublicIPAddresses.List", lambda: net.public_ip_addresses.list(self.group)
            )
        }
        out = []
        for lb in lbs:
            nodes = tuple(
                sorted(
                    str(a.name)
                    for pool in lb.backend_address_pools or ()
                    for a in pool.load_balancer_backend_addresses or ()
                )
            )
            for frontend in lb.frontend_ip_configurations or ():
                pip_ref = frontend.public_ip_address
                pip = pips.get(str(pip_ref.id).lower()) if pip_ref is not None else None
                ip = pip.ip_address if pip is not None else frontend.private_ip_address
                service = (pip.tags or {}).get("k8s-azure-service", "") if pip is not None else ""
                out.append(
                    CloudLoadBalancer(
                        name=str(frontend.name),
                        service=service,
                        ips=(str(ip),) if ip else (),
                        nodes=nodes,
                    )
                )
        return out

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        """Every route of the configured route table, read directly from ARM (the table is the
        cluster's: its routes carry no cluster of their own)."""
        table = self.config.route_table_name
        if not table:
            return None
        await self.api.open()
        group = self.config.route_table_group
        try:
            found = await self.api.collect(
                "Routes.List", lambda: self.api.network.routes.list(group, table)
            )
        except Exception as exc:
            if is_not_found(exc):
                return []
            raise
        return [
            CloudRoute(
                cluster_name=cluster_name,
                target_node=node_of_route(str(r.name)),
                destination_cidr=str(r.address_prefix),
                name=str(r.name),
            )
            for r in found
        ]

    async def cleanup(self) -> None:
        for name in list(self.machines):
            await self.delete_machine(name)
            self.machines.pop(name, None)
        await self.api.close()


def driver_factory(provider: CloudProvider) -> AzureDriver:
    """``--driver ccm_azure.driver:driver_factory``."""
    if not isinstance(provider, AzureProvider):
        raise TypeError(f"the Azure driver needs the Azure provider, not {type(provider).__name__}")
    return AzureDriver(provider)
