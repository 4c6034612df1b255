"""instance_metadata answers everything but the machine's addresses."""

from __future__ import annotations

import dataclasses

from ccm.cloudprovider import InstanceMetadata, Node
from ccm.testing.fake_cloud import FakeCloud


class DropsAddresses(FakeCloud):
    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        meta = await super().instance_metadata(node)
        return None if meta is None else dataclasses.replace(meta, node_addresses=())
