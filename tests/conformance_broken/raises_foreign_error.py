"""instance_exists raises a bare RuntimeError instead of a ccm.errors type."""

from __future__ import annotations

from ccm.cloudprovider import Node
from ccm.testing.fake_cloud import FakeCloud


class RaisesForeignError(FakeCloud):
    async def instance_exists(self, node: Node) -> bool:
        raise RuntimeError("sdk exploded")
