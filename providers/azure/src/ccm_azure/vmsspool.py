"""Backend pool membership of scale set instances (``vmType: vmss``), through the scale set's
network profile as upstream does it.

A scale set instance joins a load balancer's backend pool by the pool's ID in the
``loadBalancerBackendAddressPools`` of its primary NIC configuration's primary IP configuration: in
the scale set's model (so that new instances join) and in each instance's own copy of it.
:meth:`ScaleSetPools.sync` makes that hold for exactly the instances of ``nodes``: it lists the
scale sets of the resource groups involved and their instances (two list calls per scale set) and
writes only what differs: the scale set (``PUT`` under its etag) when some or none of its instances
is a backend, each instance whose membership changes (``PUT`` under its etag). A lost race (HTTP
412) fails the call; the service controller retries it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ccm.cloudprovider import Node
from ccm_azure.api import AzureApi
from ccm_azure.instances import text
from ccm_azure.vmss import is_vmss_provider_id, parse_vmss_provider_id

__all__ = ["ScaleSetPools"]


def _primary(items: Any) -> Any | None:
    items = list(items or ())
    if len(items) == 1:
        return items[0]
    return next((i for i in items if i.primary), None)


def _ip_configuration(nic_configurations: Any) -> Any | None:
    nic = _primary(nic_configurations)
    return _primary(nic.ip_configurations) if nic is not None else None


def _set_member(config: Any, pool_id: str, member: bool) -> bool:
    """Add or remove ``pool_id`` in ``config``'s backend pools; whether it changed."""
    from azure.mgmt.compute import models as compute

    pools = list(config.load_balancer_backend_address_pools or ())
    has = any(text(p.id).lower() == pool_id.lower() for p in pools)
    if has == member:
        return False
    if member:
        pools.append(compute.SubResource(id=pool_id))
    else:
        pools = [p for p in pools if text(p.id).lower() != pool_id.lower()]
    config.load_balancer_backend_address_pools = pools
    return True


class ScaleSetPools:
    """Writes the scale sets' and instances' backend pool references."""

    def __init__(self, api: AzureApi, resource_group: str) -> None:
        self.api = api
        self.resource_group = resource_group

    async def sync(self, pool_id: str, nodes: Sequence[Node]) -> None:
        """Make the scale set instances of ``nodes``, and only them, members of ``pool_id``."""
        want: dict[tuple[str, str], set[str]] = {}
        for node in nodes:
            if node.provider_id and is_vmss_provider_id(node.provider_id):
                ref = parse_vmss_provider_id(node.provider_id)
                want.setdefault(ref.key()[:2], set()).add(ref.instance_id)
        groups = {self.resource_group.lower()} | {g for g, _ in want}
        compute = self.api.compute
        for group in sorted(groups):
            for ss in await self.api.collect(
                "VirtualMachineScaleSets.List",
                functools.partial(compute.virtual_machine_scale_sets.list, group),
            ):
                name = text(ss.name)
                members = want.get((group, name.lower()), set())
                await self._sync_scale_set(group, ss, pool_id, bool(members))
                await self._sync_instances(group, name, pool_id, members)

    async def _sync_scale_set(self, group: str, ss: Any, pool_id: str, member: bool) -> None:
        profile = ss.virtual_machine_profile
        network = profile.network_profile if profile is not None else None
        config = _ip_configuration(network.network_interface_configurations if network else None)
        if config is None or not _set_member(config, pool_id, member):
            return
        sets = self.api.compute.virtual_machine_scale_sets
        await self.api.wait(
            "VirtualMachineScaleSets.CreateOrUpdate",
            lambda: sets.begin_create_or_update(
                group, text(ss.name), ss, headers={"If-Match": ss.etag} if ss.etag else {}
            ),
        )

    async def _sync_instances(
        self, group: str, scale_set: str, pool_id: str, members: set[str]
    ) -> None:
        vms = self.api.compute.virtual_machine_scale_set_vms
        for vm in await self.api.collect(
            "VirtualMachineScaleSetVMs.List",
            functools.partial(vms.list, group, scale_set),
        ):
            profile = vm.network_profile_configuration
            config = _ip_configuration(
                profile.network_interface_configurations if profile is not None else None
            )
            if config is None or not _set_member(config, pool_id, text(vm.instance_id) in members):
                continue
            await self._update_instance(group, scale_set, vm)

    async def _update_instance(self, group: str, scale_set: str, vm: Any) -> None:
        vms = self.api.compute.virtual_machine_scale_set_vms
        headers = {"If-Match": vm.etag} if vm.etag else {}
        await self.api.wait(
            "VirtualMachineScaleSetVMs.Update",
            lambda: vms.begin_update(group, scale_set, text(vm.instance_id), vm, headers=headers),
        )
