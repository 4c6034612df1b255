"""The fake cloud's instance capabilities: InstancesV2, InstancesBatch, Instances and Zones."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ccm.cloudprovider import InstanceMetadata, Node, NodeAddress, Zone, split_provider_id
from ccm.errors import CloudProviderError, NotImplementedByProviderError
from ccm.testing.fake_cloud.calls import FakeCloudCalls
from ccm.testing.fake_cloud.methods import _WILDCARD

_EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


class FakeCloudInstances(FakeCloudCalls):
    """InstancesV2, InstancesBatch, Instances (legacy) and Zones of :class:`FakeCloud`."""

    # ---- InstancesV2

    async def instance_exists(self, node: Node) -> bool:
        await self._call("instance-exists", node.name, node.provider_id)
        return self._exists_answer(node)

    async def instance_shutdown(self, node: Node) -> bool:
        await self._call("instance-shutdown", node.name, node.provider_id)
        return self._shutdown_answer(node)

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        await self._call("instance-metadata", node.name, node.provider_id)
        return self._metadata_answer(node)

    # ---- InstancesBatch: one call (one record, rate-limit charge and latency) per batch; the
    # per-Node answers are those of the single calls, and an error rule of the single method
    # (e.g. ``instance-metadata`` with a node key) makes that Node's result an exception.

    async def _batch(
        self, method: str, single: str, nodes: Sequence[Node], answer: Callable[[Node], Any]
    ) -> list[Any]:
        nodes = list(nodes)
        idents = [i for n in nodes for i in (n.name, n.provider_id) if i]
        await self._call(method, "", *idents)
        self.batch_items[method] += len(nodes)
        self._status_changed()
        results: list[Any] = []
        for node in nodes:
            failure = self._item_error(single, node.name, node.provider_id)
            if failure is not None:
                results.append(failure)
                continue
            try:
                results.append(answer(node))
            except Exception as exc:
                results.append(exc)
        return results

    def _item_error(self, method: str, *keys: str) -> Exception | None:
        present = {k for k in keys if k}
        for rule in self.errors:
            if rule.method != _WILDCARD and rule.matches(method, present):
                if rule.times is not None:
                    rule.times -= 1
                rule.fired += 1
                error = rule.build()
                if isinstance(error, Exception):
                    return error
                raise error
        return None

    def _exists_answer(self, node: Node) -> bool:
        instance = self.find_instance(node.name, node.provider_id, node)
        return instance is not None and instance.exists

    def _shutdown_answer(self, node: Node) -> bool:
        return self._existing(node.name, node.provider_id, node).shutdown

    def _metadata_answer(self, node: Node) -> InstanceMetadata | None:
        instance = self._existing(node.name, node.provider_id, node)
        return InstanceMetadata(
            provider_id=self.provider_id_of(instance),
            instance_type=instance.instance_type,
            node_addresses=tuple(instance.addresses),
            zone=instance.zone,
            region=instance.region,
            additional_labels=MappingProxyType(dict(instance.labels))
            if instance.labels
            else _EMPTY_LABELS,
        )

    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        return await self._batch(
            "instance-exists-batch", "instance-exists", nodes, self._exists_answer
        )

    async def instance_shutdown_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        return await self._batch(
            "instance-shutdown-batch", "instance-shutdown", nodes, self._shutdown_answer
        )

    async def instance_metadata_batch(
        self, nodes: Sequence[Node]
    ) -> Sequence[InstanceMetadata | Exception | None]:
        return await self._batch(
            "instance-metadata-batch", "instance-metadata", nodes, self._metadata_answer
        )

    # ---- Instances (legacy)

    async def node_addresses(self, name: str) -> Sequence[NodeAddress]:
        await self._call("node-addresses", name)
        return self._existing(name=name).addresses

    async def node_addresses_by_provider_id(self, provider_id: str) -> Sequence[NodeAddress]:
        await self._call("node-addresses-by-provider-id", provider_id)
        return self._existing(provider_id=provider_id).addresses

    async def instance_id(self, name: str) -> str:
        await self._call("instance-id", name)
        return split_provider_id(self.provider_id_of(self._existing(name=name)))[1]

    async def instance_type(self, name: str) -> str:
        await self._call("instance-type", name)
        return self._existing(name=name).instance_type

    async def instance_type_by_provider_id(self, provider_id: str) -> str:
        await self._call("instance-type-by-provider-id", provider_id)
        return self._existing(provider_id=provider_id).instance_type

    async def add_ssh_key_to_all_instances(self, user: str, key: bytes) -> None:
        await self._call("add-ssh-key-to-all-instances", user)
        raise NotImplementedByProviderError()

    async def current_node_name(self, hostname: str) -> str:
        await self._call("current-node-name", hostname)
        return hostname

    async def instance_exists_by_provider_id(self, provider_id: str) -> bool:
        await self._call("instance-exists-by-provider-id", provider_id)
        instance = self.find_instance(provider_id=provider_id)
        return instance is not None and instance.exists

    async def instance_shutdown_by_provider_id(self, provider_id: str) -> bool:
        await self._call("instance-shutdown-by-provider-id", provider_id)
        if not provider_id:
            raise CloudProviderError("cannot check shutdown state: empty provider ID")
        return self._existing(provider_id=provider_id).shutdown

    # ---- Zones

    async def get_zone(self) -> Zone:
        await self._call("get-zone", "")
        return self.local_zone

    async def get_zone_by_provider_id(self, provider_id: str) -> Zone:
        await self._call("get-zone-by-provider-id", provider_id)
        instance = self._existing(provider_id=provider_id)
        return Zone(failure_domain=instance.zone, region=instance.region)

    async def get_zone_by_node_name(self, name: str) -> Zone:
        await self._call("get-zone-by-node-name", name)
        instance = self._existing(name=name)
        return Zone(failure_domain=instance.zone, region=instance.region)
