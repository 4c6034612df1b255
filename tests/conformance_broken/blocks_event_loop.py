"""instance_exists calls a synchronous ``time.sleep(1)`` inside its coroutine: it holds the event
loop (every controller stops) for a second."""

from __future__ import annotations

import time

from ccm.cloudprovider import Node
from ccm.testing.fake_cloud import FakeCloud


class BlocksEventLoop(FakeCloud):
    async def instance_exists(self, node: Node) -> bool:
        time.sleep(1)  # noqa: ASYNC251 - the deliberate bug
        return await super().instance_exists(node)
