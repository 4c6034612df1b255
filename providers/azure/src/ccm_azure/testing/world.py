"""Virtual machines, network interfaces and public IPs in a :class:`FakeArm`, built from the
SDK's own model classes, and an ``azure.json`` that points the provider at the fake."""

from __future__ import annotations

import json
import secrets
from typing import Any

from azure.mgmt.compute import models as compute
from azure.mgmt.network import models as network

from ccm_azure.testing.arm import FakeArm

__all__ = ["AzureWorld", "azure_json"]


def azure_json(arm: FakeArm, **fields: Any) -> str:
    """An ``azure.json`` for ``arm`` with a service principal; ``fields`` override keys."""
    doc: dict[str, Any] = {
        "cloud": "AzurePublicCloud",
        "tenantId": arm.tenant_id,
        "subscriptionId": "sub-1",
        "resourceGroup": "rg-1",
        "location": "eastus",
        "vnetName": "vnet-1",
        "subnetName": "subnet-1",
        "securityGroupName": "nsg-1",
        "routeTableName": "rt-1",
        "vmType": "standard",
        "loadBalancerSku": "standard",
        "aadClientId": arm.client_id,
        "aadClientSecret": arm.client_secret,
        "resourceManagerEndpoint": arm.url,
    }
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}, indent=2)


class AzureWorld:
    """The tests' and the conformance driver's own hand on the fake cloud (never through the
    provider)."""

    def __init__(
        self, arm: FakeArm, subscription: str = "sub-1", resource_group: str = "rg-1",
        location: str = "eastus",
    ) -> None:  # fmt: skip
        self.arm = arm
        self.subscription = subscription
        self.resource_group = resource_group
        self.location = location

    def resource_id(self, provider: str, kind: str, name: str, group: str | None = None) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{group or self.resource_group}"
            f"/providers/{provider}/{kind}/{name}"
        )

    def vm_id(self, name: str, group: str | None = None) -> str:
        return self.resource_id("Microsoft.Compute", "virtualMachines", name, group)

    def create_vm(
        self,
        name: str,
        *,
        zone: str | None = None,
        fault_domain: int = 0,
        size: str = "Standard_D2s_v3",
        private_ip: str | None = None,
        public_ip: str | None = "",
        group: str | None = None,
        extra_nics: int = 0,
        private_ipv6: str | None = None,
    ) -> dict[str, Any]:
        """A running VM with a primary NIC (``private_ip``, random by default) and a public IP
        (``public_ip``: random when empty, none when None)."""
        private_ip = private_ip or f"10.0.{secrets.randbelow(250)}.{secrets.randbelow(250) + 2}"
        pip_ref = None
        if public_ip is not None:
            address = public_ip or f"20.1.{secrets.randbelow(250)}.{secrets.randbelow(250) + 2}"
            pip_id = self.resource_id(
                "Microsoft.Network", "publicIPAddresses", f"{name}-pip", group
            )
            pip = network.PublicIPAddress(
                location=self.location,
                public_ip_allocation_method="Static",
                ip_address=address,
                sku=network.PublicIPAddressSku(name="Standard"),
            )
            self.arm.put_resource(pip_id, pip.serialize(keep_readonly=True))
            pip_ref = network.PublicIPAddress(id=pip_id)
        subnet_id = (
            self.resource_id("Microsoft.Network", "virtualNetworks", "vnet-1", group)
            + "/subnets/subnet-1"
        )
        nic_refs = []
        v6 = []
        if private_ipv6:
            v6 = [
                network.NetworkInterfaceIPConfiguration(
                    name="ipconfig-v6",
                    primary=False,
                    private_ip_address=private_ipv6,
                    private_ip_address_version="IPv6",
                    subnet=network.Subnet(id=subnet_id),
                )
            ]
        for i in range(1 + extra_nics):
            nic_id = self.resource_id(
                "Microsoft.Network", "networkInterfaces", f"{name}-nic{i}", group
            )
            nic = network.NetworkInterface(
                location=self.location,
                ip_configurations=[
                    network.NetworkInterfaceIPConfiguration(
                        name="ipconfig1",
                        primary=True,
                        private_ip_address=private_ip if i == 0 else f"10.9.{i}.{i + 3}",
                        private_ip_allocation_method="Dynamic",
                        subnet=network.Subnet(id=subnet_id),
                        public_ip_address=pip_ref if i == 0 else None,
                    ),
                    *(v6 if i == 0 else []),
                ],
            )
            self.arm.put_resource(nic_id, nic.serialize(keep_readonly=True))
            nic_refs.append(
                compute.NetworkInterfaceReference(
                    id=nic_id,
                    properties=compute.NetworkInterfaceReferenceProperties(primary=i == 0),
                )
            )
        vm = compute.VirtualMachine(
            location=self.location,
            zones=[zone] if zone else None,
            properties=compute.VirtualMachineProperties(
                hardware_profile=compute.HardwareProfile(vm_size=size),
                network_profile=compute.NetworkProfile(network_interfaces=nic_refs),
            ),
        )
        vm_id = self.vm_id(name, group)
        body = vm.as_dict()
        # The instance view is read-only in the model: ARM's own part of the body.
        view = compute.VirtualMachineInstanceView(platform_fault_domain=fault_domain)
        body["properties"]["instanceView"] = view.as_dict()
        stored = self.arm.put_resource(vm_id, body)
        self.arm.set_power(vm_id, "running")
        return stored

    def vmss_vm_id(self, scale_set: str, instance: str, group: str | None = None) -> str:
        ss = self.resource_id("Microsoft.Compute", "virtualMachineScaleSets", scale_set, group)
        return f"{ss}/virtualMachines/{instance}"

    def create_vmss_vm(
        self,
        scale_set: str,
        instance: str,
        *,
        computer_name: str | None = None,
        zone: str | None = None,
        fault_domain: int = 0,
        sku: str = "Standard_D4s_v3",
        private_ip: str | None = None,
        public_ip: str | None = None,
        group: str | None = None,
    ) -> dict[str, Any]:
        """A running scale set instance (the scale set created if missing) with its NIC
        (``private_ip``) and, when given, an instance public IP; ARM's computer name is
        ``<scale_set>`` and the instance ID in six base-36 digits unless ``computer_name``."""
        ss_id = self.resource_id("Microsoft.Compute", "virtualMachineScaleSets", scale_set, group)
        nic_config = compute.VirtualMachineScaleSetNetworkConfiguration(
            {
                "name": f"{scale_set}-nic",
                "properties": {
                    "primary": True,
                    "ipConfigurations": [{"name": "ipconfig1", "properties": {"primary": True}}],
                },
            }
        ).as_dict()
        if self.arm.get_resource(ss_id) is None:
            body = compute.VirtualMachineScaleSet(
                location=self.location, sku=compute.Sku(name=sku, capacity=1)
            ).as_dict()
            body["properties"] = {
                "virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": [
                    nic_config]}}
            }  # fmt: skip
            self.arm.put_resource(ss_id, body)
        vm_id = self.vmss_vm_id(scale_set, instance, group)
        private_ip = private_ip or f"10.2.{secrets.randbelow(250)}.{secrets.randbelow(250) + 2}"
        nic_id = f"{vm_id}/networkInterfaces/{scale_set}-nic"
        pip_ref = None
        if public_ip:
            pip_id = f"{nic_id}/ipConfigurations/ipconfig1/publicIPAddresses/{scale_set}-pip"
            pip = network.PublicIPAddress(location=self.location, ip_address=public_ip)
            self.arm.put_resource(pip_id, pip.serialize(keep_readonly=True))
            pip_ref = network.PublicIPAddress(id=pip_id)
        subnet_id = (
            self.resource_id("Microsoft.Network", "virtualNetworks", "vnet-1", group)
            + "/subnets/subnet-1"
        )
        nic = network.NetworkInterface(
            location=self.location,
            ip_configurations=[
                network.NetworkInterfaceIPConfiguration(
                    name="ipconfig1",
                    primary=True,
                    private_ip_address=private_ip,
                    subnet=network.Subnet(id=subnet_id),
                    public_ip_address=pip_ref,
                )
            ],
        )
        self.arm.put_resource(nic_id, nic.serialize(keep_readonly=True))
        name = computer_name or f"{scale_set}{int(instance):06x}"
        vm = compute.VirtualMachineScaleSetVM(
            location=self.location,
            properties=compute.VirtualMachineScaleSetVMProperties(
                os_profile=compute.OSProfile(computer_name=name),
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
        stored_body = vm.as_dict()
        # The SKU, zones and instance ID are read-only in the model: ARM's part of the body.
        stored_body.update(instanceId=instance, sku=compute.Sku(name=sku).as_dict())
        if zone:
            stored_body["zones"] = [zone]
        view = compute.VirtualMachineScaleSetVMInstanceView(platform_fault_domain=fault_domain)
        stored_body["properties"]["instanceView"] = view.as_dict()
        stored_body["properties"]["networkProfileConfiguration"] = {
            "networkInterfaceConfigurations": [nic_config]
        }
        stored = self.arm.put_resource(vm_id, stored_body)
        self.arm.set_power(vm_id, "running")
        return stored

    def backend_pools(self, scale_set: str, instance: str | None = None) -> list[str]:
        """The backend pool IDs of the scale set's model (or of one instance), as ARM holds them."""
        ss_id = self.resource_id("Microsoft.Compute", "virtualMachineScaleSets", scale_set)
        if instance is None:
            body = self.arm.get_resource(ss_id)
            assert body is not None
            network = body["properties"]["virtualMachineProfile"]["networkProfile"]
        else:
            body = self.arm.get_resource(f"{ss_id}/virtualMachines/{instance}")
            assert body is not None
            network = body["properties"]["networkProfileConfiguration"]
        (nic,) = network["networkInterfaceConfigurations"]
        (config,) = nic["properties"]["ipConfigurations"]
        return [p["id"] for p in config["properties"].get("loadBalancerBackendAddressPools", [])]

    def create_security_group(self, name: str = "nsg-1", group: str | None = None) -> str:
        sg_id = self.resource_id("Microsoft.Network", "networkSecurityGroups", name, group)
        body = network.NetworkSecurityGroup(location=self.location, security_rules=[])
        self.arm.put_resource(sg_id, body.serialize(keep_readonly=True))
        return sg_id

    def security_rules(self, name: str = "nsg-1", group: str | None = None) -> dict[str, Any]:
        """The group's rules by name, as ARM holds them."""
        sg = self.arm.get_resource(
            self.resource_id("Microsoft.Network", "networkSecurityGroups", name, group)
        )
        assert sg is not None, name
        return {r["name"]: r for r in sg["properties"].get("securityRules", [])}

    def create_route_table(self, name: str = "rt-1", group: str | None = None) -> str:
        table_id = self.resource_id("Microsoft.Network", "routeTables", name, group)
        self.arm.put_resource(
            table_id, network.RouteTable(location=self.location).serialize(keep_readonly=True)
        )
        return table_id

    def routes(self, table: str = "rt-1", group: str | None = None) -> dict[str, dict[str, Any]]:
        """The table's routes by name, as ARM holds them."""
        prefix = self.resource_id("Microsoft.Network", "routeTables", table, group).lower()
        return {
            str(r["name"]): r
            for k, r in self.arm.resources.items()
            if k.startswith(prefix + "/routes/")
        }

    def set_power(self, name: str, state: str, group: str | None = None) -> None:
        self.arm.set_power(self.vm_id(name, group), state)

    def set_provisioning_state(self, name: str, state: str, group: str | None = None) -> None:
        vm = self.arm.get_resource(self.vm_id(name, group))
        assert vm is not None, name
        vm["properties"]["provisioningState"] = state

    def delete_vm(self, name: str, group: str | None = None) -> None:
        self.arm.delete_resource(self.vm_id(name, group))
