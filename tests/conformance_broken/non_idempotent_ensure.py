"""ensure_load_balancer creates a new load balancer on every call."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ccm.cloudprovider import LoadBalancerStatus, Node, Service
from ccm.testing.fake_cloud import FakeCloud


class NonIdempotentEnsure(FakeCloud):
    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        name = self.get_load_balancer_name(cluster_name, service)
        existing = self.load_balancers.pop(name, None)
        status = await super().ensure_load_balancer(cluster_name, service, nodes)
        if existing is not None:  # keep the old one under another name: a leak
            copy = dataclasses.replace(existing, name=f"{name}-{len(self.load_balancers)}")
            self.load_balancers[copy.name] = copy
        return status
