"""InstancesV2 and InstancesBatch for Azure virtual machines (availability sets and standalone
VMs: ``vmType: standard``, and the standalone VMs of ``vmType: vmss``).

A Node's VM is named by its provider ID
``azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>``
(the resource group in lower case, as upstream writes it), else by the Node's name in the
configured ``resourceGroup``. As upstream:

- a provider ID outside ``azure:///subscriptions/.../providers/Microsoft.Compute/`` belongs to an
  unmanaged node: it exists, is not shut down, and its metadata is its provider ID alone; one
  inside it that names no virtual machine is an error;
- a VM that ARM does not find (404), or whose provisioning state is ``Deleting``, is gone;
- shut down: provisioning state ``Succeeded`` and power state ``stopped``, ``deallocated`` or
  ``deallocating`` (a VM without a power state in its instance view counts as ``stopped``);
- addresses: the primary NIC's IP configurations' private addresses (InternalIP, the primary
  configuration's first), the Node name (Hostname), then the address of the public IP the
  configurations reference (ExternalIP);
- zone ``<location>-<zone>`` for a zonal VM, else its platform fault domain; region: location.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from enum import Enum
from typing import Any

from ccm import errors, wellknown
from ccm.cloudprovider import InstanceMetadata, InstancesBatch, InstancesV2, Node, NodeAddress
from ccm_azure.api import AzureApi, is_not_found

__all__ = ["PROVIDER_NAME", "AzureInstances", "VmRef", "parse_provider_id", "provider_id"]

PROVIDER_NAME = "azure"

_MANAGED = re.compile(
    r"^azure:///subscriptions/(?:.*)/resourceGroups/(?:.*)/providers/Microsoft\.Compute/",
    re.IGNORECASE,
)
_VM = re.compile(
    r"^azure:///subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachines/([^/]+)$",
    re.IGNORECASE,
)
_SHUTDOWN_STATES = frozenset({"stopped", "deallocated", "deallocating"})


class VmRef(tuple[str, str, str]):
    """(subscription, resource group, VM name)."""

    __slots__ = ()

    @property
    def resource_group(self) -> str:
        return self[1]

    @property
    def name(self) -> str:
        return self[2]


def provider_id(subscription: str, resource_group: str, name: str) -> str:
    """Upstream's provider ID of a VM (resource group in lower case)."""
    return (
        f"azure:///subscriptions/{subscription}/resourceGroups/{resource_group.lower()}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def is_unmanaged(pid: str) -> bool:
    """A provider ID that is not an Azure compute resource's (upstream's unmanaged node)."""
    return not _MANAGED.match(pid)


def parse_provider_id(pid: str) -> VmRef:
    """The VM a provider ID names; a malformed one raises ``CloudProviderError``."""
    match = _VM.match(pid)
    if match is None:
        raise errors.CloudProviderError(
            f"providerID {pid!r} does not name an Azure virtual machine"
        )
    return VmRef((match[1], match[2], match[3]))


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    return "" if value is None else str(value)


text = _text


def power_state(vm: Any) -> str:
    """The VM's power state (``running``, ``deallocated``, ...) from its instance view."""
    view = vm.instance_view
    for status in (view.statuses if view is not None else None) or ():
        code = _text(status.code)
        if code.startswith("PowerState/"):
            return code.removeprefix("PowerState/").lower()
    return "stopped"


def is_shut_down(vm: Any) -> bool:
    succeeded = _text(vm.provisioning_state).lower() == "succeeded"
    return succeeded and power_state(vm) in _SHUTDOWN_STATES


def _is_deleting(vm: Any) -> bool:
    return _text(vm.provisioning_state).lower() == "deleting"


def zone_of(vm: Any) -> str:
    location = _text(vm.location).lower()
    if vm.zones:
        try:
            return f"{location}-{int(vm.zones[0])}"
        except ValueError as exc:
            raise errors.CloudProviderError(f"failed to parse zone {vm.zones!r}") from exc
    view = vm.instance_view
    domain = view.platform_fault_domain if view is not None else None
    return str(domain or 0)


class AzureInstances(InstancesV2, InstancesBatch):
    """Virtual machines of one subscription."""

    max_batch_size = 200

    def __init__(self, api: AzureApi, resource_group: str) -> None:
        self.api = api
        self.resource_group = resource_group

    # -- lookups -------------------------------------------------------------------------------

    def _ref(self, node: Node) -> VmRef | None:
        """The VM of ``node``; None for an unmanaged node."""
        if node.provider_id:
            if is_unmanaged(node.provider_id):
                return None
            return parse_provider_id(node.provider_id)
        return VmRef((self.api.subscription_id, self.resource_group, node.name))

    async def _vm(self, ref: VmRef) -> Any | None:
        """The VM with its instance view; None when ARM does not have it (or deletes it)."""
        try:
            vm = await self.api.call(
                "VirtualMachines.Get",
                lambda: self.api.compute.virtual_machines.get(
                    ref.resource_group, ref.name, expand="instanceView"
                ),
            )
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return None if _is_deleting(vm) else vm

    async def _by_id(self, what: str, resource_id: str, getter: Any) -> Any | None:
        parts = resource_id.strip("/").split("/")
        if len(parts) < 8:
            return None
        try:
            return await self.api.call(what, lambda: getter(parts[3], parts[-1]))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def _addresses(self, node: Node, vm: Any) -> tuple[NodeAddress, ...]:
        nic_id = primary_nic_id(vm)
        nic = None
        if nic_id:
            nic = await self._by_id(
                "NetworkInterfaces.Get", nic_id, self.api.network.network_interfaces.get
            )
        public: dict[str, str] = {}
        if nic is not None:
            for config in nic.ip_configurations or ():
                pip_id = config.public_ip_address.id if config.public_ip_address else None
                if pip_id:
                    pip = await self._by_id(
                        "PublicIPAddresses.Get", pip_id, self.api.network.public_ip_addresses.get
                    )
                    if pip is not None and pip.ip_address:
                        public[pip_id.lower()] = pip.ip_address
        return node_addresses(node.name, nic, public)

    # -- InstancesV2 ---------------------------------------------------------------------------

    async def instance_exists(self, node: Node) -> bool:
        ref = self._ref(node)
        if ref is None:
            return True
        return await self._vm(ref) is not None

    async def instance_shutdown(self, node: Node) -> bool:
        if not node.provider_id or is_unmanaged(node.provider_id):
            return False
        ref = parse_provider_id(node.provider_id)
        vm = await self._vm(ref)
        return vm is not None and is_shut_down(vm)

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        ref = self._ref(node)
        if ref is None:
            return InstanceMetadata(provider_id=node.provider_id)
        vm = await self._vm(ref)
        if vm is None:
            raise errors.InstanceNotFoundError(f"no virtual machine {ref.name} in {ref[1]}")
        return self._metadata(node, ref, vm, await self._addresses(node, vm))

    def _metadata(
        self, node: Node, ref: VmRef, vm: Any, addresses: tuple[NodeAddress, ...]
    ) -> InstanceMetadata:
        return InstanceMetadata(
            provider_id=provider_id(ref[0], ref.resource_group, _text(vm.name) or ref.name),
            instance_type=_text(vm.hardware_profile.vm_size if vm.hardware_profile else ""),
            node_addresses=addresses,
            zone=zone_of(vm),
            region=_text(vm.location).lower(),
        )

    # -- InstancesBatch: one list call per resource group --------------------------------------

    async def _list_vms(self, groups: set[str]) -> dict[tuple[str, str], Any]:
        found: dict[tuple[str, str], Any] = {}
        for group in sorted(groups):
            vms = await self.api.collect(
                "VirtualMachines.List",
                functools.partial(
                    self.api.compute.virtual_machines.list, group, expand="instanceView"
                ),
            )
            for vm in vms:
                if not _is_deleting(vm):
                    found[(group.lower(), _text(vm.name).lower())] = vm
        return found

    def _refs(self, nodes: Sequence[Node]) -> list[VmRef | Exception | None]:
        out: list[VmRef | Exception | None] = []
        for node in nodes:
            try:
                out.append(self._ref(node))
            except errors.CloudProviderError as exc:
                out.append(exc)
        return out

    @staticmethod
    def _key(ref: VmRef) -> tuple[str, str]:
        return (ref.resource_group.lower(), ref.name.lower())

    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        refs = self._refs(nodes)
        vms = await self._list_vms({r.resource_group for r in refs if isinstance(r, VmRef)})
        return [r if isinstance(r, Exception) else (r is None or self._key(r) in vms) for r in refs]

    async def instance_shutdown_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        refs: list[VmRef | Exception | None] = []
        for node in nodes:
            if not node.provider_id or is_unmanaged(node.provider_id):
                refs.append(None)
                continue
            try:
                refs.append(parse_provider_id(node.provider_id))
            except errors.CloudProviderError as exc:
                refs.append(exc)
        vms = await self._list_vms({r.resource_group for r in refs if isinstance(r, VmRef)})
        out: list[bool | Exception] = []
        for r in refs:
            if isinstance(r, Exception):
                out.append(r)
            else:
                vm = vms.get(self._key(r)) if r is not None else None
                out.append(vm is not None and is_shut_down(vm))
        return out

    async def instance_metadata_batch(
        self, nodes: Sequence[Node]
    ) -> Sequence[InstanceMetadata | Exception | None]:
        refs = self._refs(nodes)
        groups = {r.resource_group for r in refs if isinstance(r, VmRef)}
        vms = await self._list_vms(groups)
        nics: dict[str, Any] = {}
        pips: dict[str, str] = {}
        if vms:
            for group in sorted({g.lower() for g in groups}):
                for nic in await self.api.collect(
                    "NetworkInterfaces.List",
                    functools.partial(self.api.network.network_interfaces.list, group),
                ):
                    nics[_text(nic.id).lower()] = nic
                for pip in await self.api.collect(
                    "PublicIPAddresses.List",
                    functools.partial(self.api.network.public_ip_addresses.list, group),
                ):
                    if pip.ip_address:
                        pips[_text(pip.id).lower()] = pip.ip_address
        out: list[InstanceMetadata | Exception | None] = []
        for node, r in zip(nodes, refs, strict=True):
            if isinstance(r, Exception):
                out.append(r)
            elif r is None:
                out.append(InstanceMetadata(provider_id=node.provider_id))
            elif (vm := vms.get(self._key(r))) is None:
                out.append(errors.InstanceNotFoundError(f"no virtual machine {r.name} in {r[1]}"))
            else:
                nic = nics.get(primary_nic_id(vm).lower())
                out.append(self._metadata(node, r, vm, node_addresses(node.name, nic, pips)))
        return out


def primary_nic_id(vm: Any) -> str:
    """The ID of the VM's primary network interface (the only one, or the one marked primary)."""
    profile = vm.network_profile
    nics = list((profile.network_interfaces if profile is not None else None) or ())
    if len(nics) == 1:
        return _text(nics[0].id)
    for nic in nics:
        if nic.primary:
            return _text(nic.id)
    return ""


def node_addresses(
    node_name: str, nic: Any | None, public: dict[str, str]
) -> tuple[NodeAddress, ...]:
    """The Node's addresses from its primary NIC and the public IPs by (lower-case) ID."""
    internal = wellknown.ADDRESS_INTERNAL_IP
    configs = list((nic.ip_configurations if nic is not None else None) or ())
    configs.sort(key=lambda c: not (c.primary or len(configs) == 1))
    out: list[NodeAddress] = []
    external: list[NodeAddress] = []
    for config in configs:
        if config.private_ip_address:
            out.append(NodeAddress(type=internal, address=config.private_ip_address))
        pip = config.public_ip_address
        if pip is not None and pip.id and (address := public.get(pip.id.lower())):
            external.append(NodeAddress(type=wellknown.ADDRESS_EXTERNAL_IP, address=address))
    out.append(NodeAddress(type=wellknown.ADDRESS_HOSTNAME, address=node_name))
    return tuple(dict.fromkeys([*out, *external[:1]]))
