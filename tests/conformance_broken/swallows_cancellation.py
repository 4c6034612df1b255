"""list_routes swallows its cancellation and returns as if nothing happened."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ccm.cloudprovider import Route
from ccm.testing.fake_cloud import FakeCloud


class SwallowsCancellation(FakeCloud):
    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            return ()
        return await super().list_routes(cluster_name)
