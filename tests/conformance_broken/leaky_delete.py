"""ensure_load_balancer_deleted forgets the load balancer but leaves it in the cloud."""

from __future__ import annotations

from ccm.cloudprovider import LoadBalancerStatus, Service
from ccm.testing.fake_cloud import FakeCloud


class LeakyDelete(FakeCloud):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.forgotten: set[str] = set()

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        await self._call("delete", service.key)
        self.forgotten.add(self.get_load_balancer_name(cluster_name, service))

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        if self.get_load_balancer_name(cluster_name, service) in self.forgotten:
            return None
        return await super().get_load_balancer(cluster_name, service)
