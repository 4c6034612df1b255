"""The ``private-cloud`` provider: InstancesV2, LoadBalancer and Routes over the cloud's HTTP API.

What a provider author must get right, and where this one does it:

* **Errors are ccm's** (:mod:`ccm.errors`): every HTTP or connection failure becomes a
  ``CloudProviderError`` (``raise ... from``), a 429 becomes ``RetryAfterError`` with the API's
  ``Retry-After`` delay, a machine that does not exist is ``instance_exists() -> False`` or
  ``InstanceNotFoundError`` as the contract says — and a *stopped* machine exists.
* **Retries are bounded** (:mod:`ccm.cloudprovider.retry`): connection errors, timeouts and 5xx
  answers are retried with exponential backoff and jitter, at most ``retries.attempts`` tries; a
  4xx is never retried (the request is wrong, trying again cannot help).
* **Calls are cancellable**: nothing here swallows ``CancelledError``; the controllers bound every
  call with ``--cloud-call-timeout``.
* **Cluster scoping**: load balancers are tagged with the cluster name, routes live in a
  per-cluster table; ``clusterName`` in the cloud config overrides ``--cluster-name``.

Provider IDs are ``private-cloud://<machine id>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from ccm.cloudprovider import (
    CloudProvider,
    InstanceMetadata,
    InstancesV2,
    LoadBalancer,
    LoadBalancerIngress,
    LoadBalancerStatus,
    Node,
    NodeAddress,
    Route,
    Routes,
    Service,
    default_load_balancer_name,
    retry,
    split_provider_id,
)
from ccm.errors import CloudProviderError, InstanceNotFoundError
from private_cloud.config import PrivateCloudConfig

__all__ = ["PROVIDER_NAME", "PrivateCloudProvider", "factory"]

PROVIDER_NAME = "private-cloud"

_log = logging.getLogger("private_cloud")


class _HttpError(Exception):
    """An error status from the API, before it is classified and translated."""

    def __init__(self, status: int, message: str, retry_after: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _NotFoundError(CloudProviderError):
    """The API answered 404."""


def _classify(exc: Exception) -> retry.Verdict | None:
    """HTTP statuses by the usual rules (5xx transient, 429 throttled with ``Retry-After``, 404
    not found, other 4xx fatal); aiohttp's connection errors transient; the rest by default."""
    if isinstance(exc, _HttpError):
        return retry.classify_http_status(exc.status, retry_after=exc.retry_after)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return retry.TRANSIENT
    return None


class PrivateCloudProvider(CloudProvider):
    """One provider object implementing every capability it offers (``return self``)."""

    name = PROVIDER_NAME

    def __init__(self, config: PrivateCloudConfig) -> None:
        self.config = config
        self._retry = retry.RetryPolicy(
            attempts=config.retries.attempts,
            initial_backoff=config.retries.initial_backoff,
            max_backoff=config.retries.max_backoff,
            classify=_classify,
        )
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    # -- capabilities ---------------------------------------------------------------------------

    def instances_v2(self) -> InstancesV2 | None:
        return self

    def load_balancer(self) -> LoadBalancer | None:
        return self

    def routes(self) -> Routes | None:
        return self

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP with retries ----------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            headers = {"Accept": "application/json", "User-Agent": "ccm-private-cloud/0.1"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            self._session = aiohttp.ClientSession(
                base_url=self.config.endpoint + "/",
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=self.config.timeouts.request, connect=self.config.timeouts.connect
                ),
            )
            self._session_loop = loop
        return self._session

    async def _once(self, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        async with self._client().request(method, path.lstrip("/"), json=body) as resp:
            status = resp.status
            text = await resp.text()
            retry_after = resp.headers.get("Retry-After", "")
        if status < 300:
            return json.loads(text) if text else None
        try:
            message = str(json.loads(text).get("error", text))
        except (ValueError, AttributeError):
            message = text[:200]
        raise _HttpError(status, message, retry_after)

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One API call under the retry policy (``retries`` in the config); errors translated.

        5xx and connection errors are retried (then ``RetriesExhaustedError``), a 429 becomes
        ``RetryAfterError`` with the API's ``Retry-After``, a 404 ``_NotFoundError`` (each caller
        decides what it means), any other error status ``CloudProviderError``.
        """
        where = f"private cloud API {method} /{path.lstrip('/')}"
        try:
            return await self._retry.call(where, self._once, method, path, body)
        except _HttpError as exc:
            if exc.status == 404:
                raise _NotFoundError(f"{where}: {exc.message}") from exc
            raise CloudProviderError(f"{where}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise CloudProviderError(f"{where}: {type(exc).__name__}: {exc}") from exc

    # -- InstancesV2 ----------------------------------------------------------------------------

    async def _find_machine(self, node: Node) -> dict[str, Any] | None:
        """The machine backing ``node`` (by providerID, else by name); None when it is gone."""
        if node.provider_id:
            try:
                scheme, machine_id = split_provider_id(node.provider_id)
            except ValueError as exc:
                raise CloudProviderError(str(exc)) from exc
            if scheme != PROVIDER_NAME:
                raise CloudProviderError(
                    f"providerID {node.provider_id!r} does not belong to {PROVIDER_NAME}"
                )
            try:
                machine: dict[str, Any] = await self._call(
                    "GET", f"v1/machines/{quote(machine_id, safe='')}"
                )
            except _NotFoundError:
                return None
            return None if machine.get("state") == "deleted" else machine
        if not node.name:
            raise CloudProviderError("the Node has neither a providerID nor a name")
        found = await self._call("GET", f"v1/machines?name={quote(node.name, safe='')}")
        live = [m for m in found.get("machines", []) if m.get("state") != "deleted"]
        if len(live) > 1:
            raise CloudProviderError(
                f"{len(live)} machines are named {node.name!r}; set the Node's providerID"
            )
        return live[0] if live else None

    async def instance_exists(self, node: Node) -> bool:
        return await self._find_machine(node) is not None

    async def instance_shutdown(self, node: Node) -> bool:
        machine = await self._find_machine(node)
        if machine is None:
            raise InstanceNotFoundError(f"no machine for Node {node.name!r}")
        return machine.get("state") == "stopped"

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        machine = await self._find_machine(node)
        if machine is None:
            raise InstanceNotFoundError(f"no machine for Node {node.name!r}")
        return InstanceMetadata(
            provider_id=f"{PROVIDER_NAME}://{machine['id']}",
            instance_type=str(machine.get("type") or ""),
            zone=str(machine.get("zone") or ""),
            region=str(machine.get("region") or self.config.region),
            node_addresses=tuple(
                NodeAddress(type=str(a["type"]), address=str(a["address"]))
                for a in machine.get("addresses") or ()
            ),
        )

    # -- LoadBalancer ---------------------------------------------------------------------------

    def _cluster(self, cluster_name: str) -> str:
        return self.config.cluster_name or cluster_name

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        return default_load_balancer_name(service)

    @staticmethod
    def _status(lb: Mapping[str, Any]) -> LoadBalancerStatus:
        return LoadBalancerStatus(ingress=(LoadBalancerIngress(ip=str(lb["vip"])),))

    @staticmethod
    def _backends(nodes: Sequence[Node]) -> list[dict[str, str]]:
        out = []
        for node in nodes:
            internal = [a.address for a in node.addresses if a.type == "InternalIP"]
            out.append({"name": node.name, "address": internal[0] if internal else ""})
        return sorted(out, key=lambda b: b["name"])

    def _lb_path(self, cluster_name: str, service: Service) -> str:
        return f"v1/loadbalancers/{quote(self.get_load_balancer_name(cluster_name, service))}"

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        try:
            lb = await self._call("GET", self._lb_path(cluster_name, service))
        except _NotFoundError:
            return None
        return self._status(lb)

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        ports = [
            {
                "name": str(p.get("name", "")),
                "port": int(p.get("port", 0)),
                "protocol": str(p.get("protocol", "TCP")),
                "nodePort": int(p.get("nodePort", 0) or 0),
            }
            for p in service.ports
        ]
        lb = await self._call(
            "PUT",
            self._lb_path(cluster_name, service),
            {
                "cluster": self._cluster(cluster_name),
                "service": service.key,
                "ports": ports,
                "nodes": self._backends(nodes),
            },
        )
        _log.info("Load balancer %s for %s has VIP %s", lb["name"], service.key, lb["vip"])
        return self._status(lb)

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        path = self._lb_path(cluster_name, service)
        try:
            lb = await self._call("GET", path)
        except _NotFoundError as exc:
            raise CloudProviderError(
                f"load balancer for {service.key} does not exist; it must be ensured first"
            ) from exc
        await self._call(
            "PUT",
            path,
            {
                "cluster": lb["cluster"],
                "service": lb["service"],
                "ports": lb["ports"],
                "nodes": self._backends(nodes),
            },
        )

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        try:
            await self._call("DELETE", self._lb_path(cluster_name, service))
        except _NotFoundError:
            return

    # -- Routes ---------------------------------------------------------------------------------

    def _routes_path(self, cluster_name: str) -> str:
        return f"v1/clusters/{quote(self._cluster(cluster_name), safe='')}/routes"

    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        found = await self._call("GET", self._routes_path(cluster_name))
        return [
            Route(name=str(r["id"]), target_node=str(r["target"]), destination_cidr=str(r["cidr"]))
            for r in found.get("routes", [])
        ]

    async def create_route(self, cluster_name: str, name_hint: str, route: Route) -> None:
        await self._call(
            "POST",
            self._routes_path(cluster_name),
            {"cidr": route.destination_cidr, "target": route.target_node, "nameHint": name_hint},
        )

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        route_id = route.name
        if not route_id:
            # A route built by hand (not from list_routes): find it by its destination.
            for listed in await self.list_routes(cluster_name):
                if listed.destination_cidr == route.destination_cidr:
                    route_id = listed.name
                    break
            else:
                return
        try:
            await self._call(
                "DELETE", f"{self._routes_path(cluster_name)}/{quote(route_id, safe='')}"
            )
        except _NotFoundError:
            return


def factory(config: bytes | None) -> PrivateCloudProvider:
    """The entry point ``private-cloud`` (group ``ccm.cloud_providers``)."""
    return PrivateCloudProvider(PrivateCloudConfig.parse(config))
