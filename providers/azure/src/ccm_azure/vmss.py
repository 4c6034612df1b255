"""Virtual machine scale set instances (``vmType: vmss``), as upstream's ``ScaleSet`` VM set.

- Provider ID: the instance's ARM ID with the resource group in lower case,
  ``azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<ss>/virtualMachines/<instanceId>``
  (an instance ID written ``<ss>_<id>`` is read as ``<id>``, as upstream does).
- A Node without provider ID is the instance whose computer name (lower case) is the Node's
  name, among the scale sets of ``resourceGroup``.
- Instance type: the instance's SKU name; addresses from its primary NIC (the scale set's NIC
  resources, ``.../virtualMachines/<id>/networkInterfaces/<nic>``) and the public IP its
  configurations reference; power, provisioning state and zone exactly as for VMs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from ccm import errors
from ccm.cloudprovider import InstanceMetadata, Node
from ccm_azure.api import AzureApi, is_not_found
from ccm_azure.instances import node_addresses, primary_nic_id, zone_of
from ccm_azure.instances import text as _text

__all__ = ["VmssInstances", "VmssRef", "is_vmss_provider_id", "parse_vmss_provider_id"]

_VMSS = re.compile(
    r"^azure:///subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachineScaleSets/([^/]+)/virtualMachines/([^/]+)$",
    re.IGNORECASE,
)


class VmssRef(tuple[str, str, str, str]):
    """(subscription, resource group, scale set, instance ID)."""

    __slots__ = ()

    @property
    def resource_group(self) -> str:
        return self[1]

    @property
    def scale_set(self) -> str:
        return self[2]

    @property
    def instance_id(self) -> str:
        return self[3]

    def key(self) -> tuple[str, str, str]:
        return (self[1].lower(), self[2].lower(), self[3])


def is_vmss_provider_id(pid: str) -> bool:
    return "/virtualmachinescalesets/" in pid.lower()


def parse_vmss_provider_id(pid: str) -> VmssRef:
    """The instance a VMSS provider ID names; a malformed one raises ``CloudProviderError``."""
    match = _VMSS.match(pid)
    if match is None:
        raise errors.CloudProviderError(
            f"providerID {pid!r} does not name a virtual machine scale set instance"
        )
    instance = match[4]
    if instance.lower().startswith(match[3].lower()) and "_" in instance:
        instance = instance.rsplit("_", 1)[1]
    return VmssRef((match[1], match[2], match[3], instance))


def vmss_provider_id(vm: Any) -> str:
    """The instance's provider ID (its ARM ID, the resource group in lower case)."""
    parts = _text(vm.id).split("/")
    if len(parts) > 4:
        parts[4] = parts[4].lower()
    return "azure://" + "/".join(parts)


def _ref_of(vm: Any) -> VmssRef:
    return parse_vmss_provider_id(vmss_provider_id(vm))


def computer_name(vm: Any) -> str:
    profile = vm.os_profile
    return _text(profile.computer_name if profile is not None else "").lower()


def _deleting(vm: Any) -> bool:
    return _text(vm.provisioning_state).lower() == "deleting"


class VmssInstances:
    """The scale set instances of one subscription (the InstancesV2/InstancesBatch calls of
    :class:`ccm_azure.nodes.AzureNodes` for VMSS Nodes)."""

    def __init__(self, api: AzureApi, resource_group: str) -> None:
        self.api = api
        self.resource_group = resource_group

    async def get(self, ref: VmssRef) -> Any | None:
        """The instance with its instance view; None when ARM does not have it (or deletes it)."""
        vms = self.api.compute.virtual_machine_scale_set_vms
        try:
            vm = await self.api.call(
                "VirtualMachineScaleSetVMs.Get",
                lambda: vms.get(
                    ref.resource_group, ref.scale_set, ref.instance_id, expand="instanceView"
                ),
            )
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return None if _deleting(vm) else vm

    async def list_group(self, group: str) -> dict[tuple[str, str, str], Any]:
        """Every instance of every scale set of ``group``: two list calls per scale set."""
        sets = await self.api.collect(
            "VirtualMachineScaleSets.List",
            functools.partial(self.api.compute.virtual_machine_scale_sets.list, group),
        )
        found: dict[tuple[str, str, str], Any] = {}
        for ss in sets:
            for vm in await self.api.collect(
                "VirtualMachineScaleSetVMs.List",
                functools.partial(
                    self.api.compute.virtual_machine_scale_set_vms.list,
                    group,
                    _text(ss.name),
                    expand="instanceView",
                ),
            ):
                if not _deleting(vm):
                    found[_ref_of(vm).key()] = vm
        return found

    async def find(self, node: Node) -> tuple[VmssRef, Any] | None:
        """The instance of ``node``: by provider ID, else by computer name in the group."""
        if node.provider_id:
            ref = parse_vmss_provider_id(node.provider_id)
            vm = await self.get(ref)
            return None if vm is None else (ref, vm)
        for vm in (await self.list_group(self.resource_group)).values():
            if computer_name(vm) == node.name.lower():
                return _ref_of(vm), vm
        return None

    async def _network(self, ref: VmssRef) -> tuple[dict[str, Any], dict[str, str]]:
        """The scale set's NICs by ID and its public IP addresses by ID (lower case)."""
        nics = await self.api.collect(
            "NetworkInterfaces.ListVirtualMachineScaleSetNetworkInterfaces",
            functools.partial(
                self.api.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces,
                ref.resource_group,
                ref.scale_set,
            ),
        )
        pips: dict[str, str] = {}
        if any(c.public_ip_address for n in nics for c in n.ip_configurations or ()):
            for pip in await self.api.collect(
                "PublicIPAddresses.ListVirtualMachineScaleSetPublicIPAddresses",
                functools.partial(
                    self.api.network.public_ip_addresses.list_virtual_machine_scale_set_public_ip_addresses,
                    ref.resource_group,
                    ref.scale_set,
                ),
            ):
                if pip.ip_address:
                    pips[_text(pip.id).lower()] = pip.ip_address
        return {_text(n.id).lower(): n for n in nics}, pips

    def metadata(
        self, node: Node, vm: Any, nics: dict[str, Any], pips: dict[str, str]
    ) -> InstanceMetadata:
        nic = nics.get(primary_nic_id(vm).lower())
        return InstanceMetadata(
            provider_id=vmss_provider_id(vm),
            instance_type=_text(vm.sku.name if vm.sku is not None else ""),
            node_addresses=node_addresses(node.name, nic, pips),
            zone=zone_of(vm),
            region=_text(vm.location).lower(),
        )

    async def instance_metadata(self, node: Node) -> InstanceMetadata:
        found = await self.find(node)
        if found is None:
            raise errors.InstanceNotFoundError(f"no scale set instance for node {node.name}")
        _, vm = found
        nics, pips = await self._instance_network(vm)
        return self.metadata(node, vm, nics, pips)

    async def _instance_network(self, vm: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """The instance's primary NIC and the public IPs it references (one read each)."""
        nic_id = primary_nic_id(vm)
        # .../virtualMachineScaleSets/<ss>/virtualMachines/<i>/networkInterfaces/<nic>
        parts = nic_id.strip("/").split("/")
        if len(parts) != 12:
            return {}, {}
        group, ss, index, name = parts[3], parts[7], parts[9], parts[11]
        network = self.api.network
        try:
            nic = await self.api.call(
                "NetworkInterfaces.GetVirtualMachineScaleSetNetworkInterface",
                lambda: network.network_interfaces.get_virtual_machine_scale_set_network_interface(
                    group, ss, index, name
                ),
            )
        except Exception as exc:
            if is_not_found(exc):
                return {}, {}
            raise
        pips: dict[str, str] = {}
        for config in nic.ip_configurations or ():
            pip_id = _text(config.public_ip_address.id if config.public_ip_address else "")
            pip_parts = pip_id.strip("/").split("/")
            if len(pip_parts) != 16:
                continue
            try:
                pip = await self.api.call(
                    "PublicIPAddresses.GetVirtualMachineScaleSetPublicIPAddress",
                    functools.partial(
                        network.public_ip_addresses.get_virtual_machine_scale_set_public_ip_address,
                        group, ss, index, name, pip_parts[13], pip_parts[15],
                    ),
                )  # fmt: skip
            except Exception as exc:
                if is_not_found(exc):
                    continue
                raise
            if pip.ip_address:
                pips[pip_id.lower()] = pip.ip_address
        return {nic_id.lower(): nic}, pips

    async def metadata_batch(
        self, nodes: Sequence[Node]
    ) -> list[InstanceMetadata | Exception | None]:
        """Metadata of VMSS Nodes with provider IDs: one listing per resource group, and the NICs
        and public IPs of each scale set involved."""
        refs: list[VmssRef | Exception] = []
        for node in nodes:
            try:
                refs.append(parse_vmss_provider_id(node.provider_id))
            except errors.CloudProviderError as exc:
                refs.append(exc)
        vms: dict[tuple[str, str, str], Any] = {}
        for group in sorted({r.resource_group.lower() for r in refs if isinstance(r, VmssRef)}):
            vms.update(await self.list_group(group))
        network: dict[tuple[str, str], tuple[dict[str, Any], dict[str, str]]] = {}
        out: list[InstanceMetadata | Exception | None] = []
        for node, ref in zip(nodes, refs, strict=True):
            if isinstance(ref, Exception):
                out.append(ref)
                continue
            vm = vms.get(ref.key())
            if vm is None:
                out.append(
                    errors.InstanceNotFoundError(f"no scale set instance {node.provider_id}")
                )
                continue
            where = ref.key()[:2]
            if where not in network:
                network[where] = await self._network(ref)
            out.append(self.metadata(node, vm, *network[where]))
        return out

    async def states_batch(self, nodes: Sequence[Node]) -> list[Any | Exception | None]:
        """Each Node's instance (None: gone), from one listing per resource group."""
        refs: list[VmssRef | Exception] = []
        for node in nodes:
            try:
                refs.append(parse_vmss_provider_id(node.provider_id))
            except errors.CloudProviderError as exc:
                refs.append(exc)
        vms: dict[tuple[str, str, str], Any] = {}
        for group in sorted({r.resource_group.lower() for r in refs if isinstance(r, VmssRef)}):
            vms.update(await self.list_group(group))
        return [r if isinstance(r, Exception) else vms.get(r.key()) for r in refs]
