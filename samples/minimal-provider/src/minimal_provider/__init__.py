"""The smallest useful ccm provider: InstancesV2 only, over an inventory file.

Its "cloud" is the ``--cloud-config`` YAML file, read once at start-up::

    machines:
      worker-1: {id: vm-001, type: small, zone: zone-a, region: region-1, ip: 10.0.0.11}

That is all a provider must write for ccm to initialize Nodes (providerID, instance type, zone and
region labels, addresses, taint removal) and to delete the Nodes of machines that are gone. Every
other capability is left to the base class, which returns ``None``: ccm logs each one it omits and
skips the controllers that need them.
"""

from __future__ import annotations

from typing import Any

import yaml

from ccm.cloudprovider import CloudProvider, InstanceMetadata, InstancesV2, Node, NodeAddress
from ccm.errors import ConfigError, InstanceNotFoundError

__all__ = ["MinimalProvider", "factory"]


class MinimalProvider(CloudProvider):
    name = "minimal"

    def __init__(self, machines: dict[str, dict[str, Any]]) -> None:
        self.machines = machines

    def instances_v2(self) -> InstancesV2 | None:
        return self

    def _machine(self, node: Node) -> dict[str, Any] | None:
        # spec.providerID, once set, names the machine: a machine re-created under the same name is
        # another machine, and the old Node must not be answered for by the new one.
        if node.provider_id:
            return next(
                (m for m in self.machines.values() if f"minimal://{m['id']}" == node.provider_id),
                None,
            )
        return self.machines.get(node.name)

    async def instance_exists(self, node: Node) -> bool:
        return self._machine(node) is not None

    async def instance_shutdown(self, node: Node) -> bool:
        return False  # this inventory has no power state

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        machine = self._machine(node)
        if machine is None:
            raise InstanceNotFoundError(f"{node.name} is not in the inventory")
        return InstanceMetadata(
            provider_id=f"minimal://{machine['id']}",
            instance_type=str(machine.get("type", "")),
            zone=str(machine.get("zone", "")),
            region=str(machine.get("region", "")),
            node_addresses=(NodeAddress(type="InternalIP", address=str(machine["ip"])),),
        )


def factory(config: bytes | None) -> MinimalProvider:
    """Entry point ``minimal`` (group ``ccm.cloud_providers``)."""
    doc = yaml.safe_load(config or b"") or {}
    machines = doc.get("machines") if isinstance(doc, dict) else None
    if not isinstance(machines, dict):
        raise ConfigError("the minimal provider needs --cloud-config with a 'machines' mapping")
    for name, machine in machines.items():
        if not isinstance(machine, dict) or not machine.get("id") or not machine.get("ip"):
            raise ConfigError(f"machine {name!r} needs at least an id and an ip")
    return MinimalProvider(machines)
