"""InstancesV2 and InstancesBatch of the provider: VMs (:mod:`ccm_azure.instances`) and scale set
instances (:mod:`ccm_azure.vmss`) behind one interface.

A Node whose provider ID names a scale set instance is answered from the scale sets (whatever
``vmType``); one without provider ID, with ``vmType: vmss``, is first looked up among the scale
set instances by computer name, then among the VMs by name (upstream's ``ScaleSet`` VM set falls
back to its availability sets the same way); everything else is a VM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ccm import errors
from ccm.cloudprovider import InstanceMetadata, InstancesBatch, InstancesV2, Node
from ccm_azure.instances import AzureInstances, is_shut_down
from ccm_azure.vmss import VmssInstances, is_vmss_provider_id

__all__ = ["AzureNodes"]

Batch = Callable[[Sequence[Node]], Awaitable[Sequence[Any]]]
Single = Callable[[Node], Awaitable[Any]]


class AzureNodes(InstancesV2, InstancesBatch):
    """VMs and scale set instances of one subscription."""

    max_batch_size = 200

    def __init__(self, vms: AzureInstances, scale_sets: VmssInstances, *, vmss: bool) -> None:
        self.vms = vms
        self.scale_sets = scale_sets
        self.vmss_mode = vmss

    def _is_vmss(self, node: Node) -> bool:
        return bool(node.provider_id) and is_vmss_provider_id(node.provider_id)

    def _by_name(self, node: Node) -> bool:
        """A Node that may be a scale set instance found by its computer name."""
        return self.vmss_mode and not node.provider_id

    async def instance_exists(self, node: Node) -> bool:
        if self._is_vmss(node) or self._by_name(node):
            if await self.scale_sets.find(node) is not None:
                return True
            if self._is_vmss(node):
                return False
        return await self.vms.instance_exists(node)

    async def instance_shutdown(self, node: Node) -> bool:
        if self._is_vmss(node):
            found = await self.scale_sets.find(node)
            return found is not None and is_shut_down(found[1])
        return await self.vms.instance_shutdown(node)

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        if self._is_vmss(node):
            return await self.scale_sets.instance_metadata(node)
        if self._by_name(node):
            try:
                return await self.scale_sets.instance_metadata(node)
            except errors.InstanceNotFoundError:
                pass
        return await self.vms.instance_metadata(node)

    # -- InstancesBatch: the VMSS Nodes and the others each in one batch ------------------------

    async def _split(
        self, nodes: Sequence[Node], vmss: Batch, by_name: Single, others: Batch
    ) -> list[Any]:
        """Answer the scale set Nodes with ``vmss``, the others with ``others`` and a Node that
        may be either (no provider ID, ``vmType: vmss``) with ``by_name``, else ``others``; in
        the order of ``nodes``."""
        mine = [i for i, n in enumerate(nodes) if self._is_vmss(n)]
        named = [i for i, n in enumerate(nodes) if self._by_name(n)]
        taken = set(mine) | set(named)
        rest = [i for i in range(len(nodes)) if i not in taken]
        out: list[Any] = [None] * len(nodes)
        for indexes, batch in ((mine, vmss), (rest, others)):
            if indexes:
                answers = await batch([nodes[i] for i in indexes])
                for i, answer in zip(indexes, answers, strict=True):
                    out[i] = answer
        for i in named:
            try:
                out[i] = await by_name(nodes[i])
            except errors.CloudProviderError as exc:
                out[i] = exc
            if out[i] is None:
                (out[i],) = await others([nodes[i]])
        return out

    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        async def vmss(batch: Sequence[Node]) -> list[bool | Exception]:
            vms = await self.scale_sets.states_batch(batch)
            return [v if isinstance(v, Exception) else v is not None for v in vms]

        async def by_name(node: Node) -> bool | None:
            return True if await self.scale_sets.find(node) is not None else None

        return await self._split(nodes, vmss, by_name, self.vms.instance_exists_batch)

    async def instance_shutdown_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        async def vmss(batch: Sequence[Node]) -> list[bool | Exception]:
            vms = await self.scale_sets.states_batch(batch)
            return [
                v if isinstance(v, Exception) else v is not None and is_shut_down(v) for v in vms
            ]

        async def by_name(node: Node) -> bool | None:
            return False  # a Node without provider ID is never shut down (as for VMs)

        return await self._split(nodes, vmss, by_name, self.vms.instance_shutdown_batch)

    async def instance_metadata_batch(
        self, nodes: Sequence[Node]
    ) -> Sequence[InstanceMetadata | Exception | None]:
        async def by_name(node: Node) -> InstanceMetadata | None:
            try:
                return await self.scale_sets.instance_metadata(node)
            except errors.InstanceNotFoundError:
                return None

        vmss = self.scale_sets.metadata_batch
        return await self._split(nodes, vmss, by_name, self.vms.instance_metadata_batch)
