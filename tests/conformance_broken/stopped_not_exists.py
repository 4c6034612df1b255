"""A stopped instance is reported as non-existent (its live Node would be deleted)."""

from __future__ import annotations

from ccm.cloudprovider import Node
from ccm.testing.fake_cloud import FakeCloud


class StoppedReportedGone(FakeCloud):
    async def instance_exists(self, node: Node) -> bool:
        exists = await super().instance_exists(node)
        instance = self.find_instance(node.name, node.provider_id, node)
        return exists and not (instance is not None and instance.shutdown)
