"""The conformance driver of the private cloud: the suite's independent handle on the cloud.

``ccm conformance --cloud-provider private-cloud --cloud-config cloud.yaml
--driver private_cloud.driver:driver_factory`` — the factory receives the provider the suite built
and talks to the same API (``endpoint`` and token of its config), but never through the provider:
machines are created, stopped and deleted with the operator's API calls, and load balancers and
routes are read straight from the API, so a provider that lies about them is caught.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from ccm.cloudprovider import CloudProvider, NodeAddress
from ccm.testing.conformance.driver import (
    CloudLoadBalancer,
    CloudRoute,
    ConformanceDriverBase,
    Machine,
)
from private_cloud.provider import PROVIDER_NAME, PrivateCloudProvider

__all__ = ["PrivateCloudDriver", "driver_factory"]

_counter = itertools.count(1)


class PrivateCloudDriver(ConformanceDriverBase):
    """Creates machines in the private cloud and reads its load balancers and routes."""

    max_load_balancer_name_length = 63

    def __init__(self, endpoint: str, *, token: str | None = None) -> None:
        super().__init__()
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self._ids: dict[str, str] = {}
        self._index: dict[str, int] = {}
        self._generation: dict[str, int] = {}

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(headers=headers, timeout=timeout) as session,
            session.request(method, self.endpoint + path, json=body) as resp,
        ):
            text = await resp.text()
            if resp.status >= 300 and not (method == "DELETE" and resp.status == 404):
                raise RuntimeError(f"driver: {method} {path}: HTTP {resp.status}: {text[:200]}")
            return json.loads(text) if text else None

    def _addresses(self, name: str) -> tuple[NodeAddress, ...]:
        n = self._index.setdefault(name, next(_counter))
        gen = self._generation.get(name, 0)
        return (
            NodeAddress(
                type="InternalIP", address=f"10.{100 + gen % 100}.{n // 250 % 250}.{n % 250 + 1}"
            ),
            NodeAddress(type="Hostname", address=name),
        )

    async def create_machine(self, name: str) -> Machine:
        addresses = self._addresses(name)
        machine = await self._call(
            "POST",
            "/v1/machines",
            {
                "name": name,
                "type": "standard-2",
                "zone": "zone-a",
                "region": "region-1",
                "addresses": [{"type": a.type, "address": a.address} for a in addresses],
            },
        )
        self._ids[name] = str(machine["id"])
        result = Machine(
            name=name,
            provider_id=f"{PROVIDER_NAME}://{machine['id']}",
            addresses=addresses,
            instance_type="standard-2",
            zone="zone-a",
            region="region-1",
        )
        self.machines[name] = result
        return result

    def _id(self, name: str) -> str:
        try:
            return quote(self._ids[name], safe="")
        except KeyError:
            raise KeyError(f"driver: no machine {name!r} was created by this driver") from None

    async def stop_machine(self, name: str) -> None:
        await self._call("POST", f"/v1/machines/{self._id(name)}/stop")

    async def start_machine(self, name: str) -> None:
        await self._call("POST", f"/v1/machines/{self._id(name)}/start")

    async def delete_machine(self, name: str) -> None:
        if name in self._ids:
            await self._call("DELETE", f"/v1/machines/{self._id(name)}")

    async def change_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        self._generation[name] = self._generation.get(name, 0) + 1
        addresses = self._addresses(name)
        await self._call(
            "PATCH",
            f"/v1/machines/{self._id(name)}",
            {"addresses": [{"type": a.type, "address": a.address} for a in addresses]},
        )
        return addresses

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        found = await self._call("GET", "/v1/loadbalancers")
        return [
            CloudLoadBalancer(
                name=str(lb["name"]),
                service=str(lb.get("service") or ""),
                ips=(str(lb["vip"]),),
                nodes=tuple(str(n["name"]) for n in lb.get("nodes") or ()),
            )
            for lb in found["loadBalancers"]
        ]

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        found = await self._call("GET", f"/v1/clusters/{quote(cluster_name, safe='')}/routes")
        return [
            CloudRoute(
                cluster_name=cluster_name,
                target_node=str(r["target"]),
                destination_cidr=str(r["cidr"]),
                name=str(r["id"]),
            )
            for r in found["routes"]
        ]

    async def cleanup(self) -> None:
        await asyncio.gather(*(self.delete_machine(n) for n in list(self.machines)))
        self.machines.clear()


def driver_factory(provider: CloudProvider) -> PrivateCloudDriver:
    """``--driver private_cloud.driver:driver_factory``."""
    if not isinstance(provider, PrivateCloudProvider):
        raise TypeError(
            f"the private-cloud driver needs the private-cloud provider, not {provider}"
        )
    return PrivateCloudDriver(provider.config.endpoint, token=provider.config.token)
