"""What a conformance scenario works with: :class:`Context` (the observed provider, the driver, an
admin client, bounded calls and waits) and views of Nodes and Services as the controllers hand
them to a provider."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ccm import errors, wellknown
from ccm.cloudprovider import CloudProvider, Node, NodeAddress, Service
from ccm.kube import client as kclient
from ccm.testing.conformance.driver import ConformanceDriver, Machine
from ccm.testing.conformance.observe import ObservedProvider, Observer
from ccm.testing.conformance.results import RuleViolation, SuiteConfig


class Context:
    """What a scenario gets: the provider (observed), the driver, an admin client, helpers."""

    def __init__(
        self,
        provider: CloudProvider,
        driver: ConformanceDriver | None,
        client: kclient.KubeClient,
        config: SuiteConfig,
        observer: Observer,
    ) -> None:
        #: The provider, through the observer (every call is watched, as the controllers' are).
        self.provider = (
            provider
            if isinstance(provider, ObservedProvider)
            else ObservedProvider(provider, observer)
        )
        self.driver = driver
        self.client = client
        self.config = config
        self.observer = observer
        self.run_id = secrets.token_hex(3)
        self._seq = 0
        self.nodes: set[str] = set()
        self.services: set[tuple[str, str]] = set()
        #: Findings shared between the scenarios of one run (e.g. ``init-failed``).
        self.notes: dict[str, str] = {}
        #: Checks of the current scenario that could not be verified in the cloud.
        self.unverified_checks: list[str] = []

    def unverified(self, check: str, why: str) -> None:
        """Record that ``check`` rests on the provider's own word because ``why`` (the driver
        cannot inspect that part of the cloud). The scenario still passes; the report lists it."""
        self.unverified_checks.append(f"{check} ({why})")

    def name(self, prefix: str) -> str:
        self._seq += 1
        return f"cf-{prefix}-{self.run_id}-{self._seq}"

    def need_driver(self) -> ConformanceDriver:
        """The driver; without one the scenario fails (it is never silently passed or skipped)."""
        if self.driver is None:
            raise RuleViolation(
                "driver-required",
                "this scenario creates machines: supply a conformance driver "
                "(--driver MODULE:ATTR)",
            )
        return self.driver

    async def call(self, what: str, awaitable: Awaitable[Any]) -> Any:
        """Await a provider call, bounded by ``call_timeout``; a timeout is a rule violation."""
        try:
            async with asyncio.timeout(self.config.call_timeout):
                return await awaitable
        except TimeoutError:
            raise RuleViolation(
                "calls-return-in-time", f"{what} did not return within {self.config.call_timeout}s"
            ) from None

    async def wait_for(self, check: Callable[[], Awaitable[Any]], rule: str, what: str) -> Any:
        """Poll ``check`` until it returns a truthy value; else raise RuleViolation(rule, what)."""
        deadline = time.monotonic() + self.config.wait_timeout
        last: Any = None
        while True:
            last = await check()
            if last:
                return last
            if time.monotonic() > deadline:
                raise RuleViolation(rule, f"{what} (waited {self.config.wait_timeout:g}s)")
            await asyncio.sleep(self.config.poll_interval)

    # ---- Kubernetes objects

    async def create_node(
        self, machine: Machine, *, provider_id: str = "", tainted: bool = True
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if tainted:
            spec["taints"] = [
                {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}
            ]
        if provider_id:
            spec["providerID"] = provider_id
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": machine.name, "labels": {"conformance.ccm.io/run": self.run_id}},
            "spec": spec,
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "conformance",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ]
            },
        }
        self.nodes.add(machine.name)
        return await self.client.create(kclient.NODES, body)

    async def get_node(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(kclient.NODES, name)
        except errors.NotFoundError:
            return None

    async def set_ready(self, name: str, ready: bool) -> None:
        cond = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "conformance",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": _now(),
        }
        await self.client.patch(
            kclient.NODES, name, {"status": {"conditions": [cond]}}, subresource="status"
        )

    async def delete_node(self, name: str) -> None:
        with contextlib.suppress(errors.NotFoundError):
            await self.client.delete(kclient.NODES, name)
        self.nodes.discard(name)

    async def cleanup(self) -> None:
        for name in list(self.nodes):
            with contextlib.suppress(Exception):
                await self.delete_node(name)
        for namespace, name in list(self.services):
            with contextlib.suppress(Exception):
                await self.client.delete(kclient.SERVICES, name, namespace=namespace)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_view(name: str, provider_id: str = "", addresses: Iterable[NodeAddress] = ()) -> Node:
    """A Node as the controllers hand it to a provider."""
    return Node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "uid": str(uuid.uuid4())},
            "spec": {"providerID": provider_id} if provider_id else {},
            "status": {"addresses": [a.to_dict() for a in addresses]},
        }
    )


def service_view(
    namespace: str, name: str, *, ports: Sequence[tuple[str, int, int]] = (("http", 80, 30080),)
) -> Service:
    """A ``type: LoadBalancer`` Service as the service controller hands it to a provider."""
    return Service(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": {
                "type": "LoadBalancer",
                "ports": [
                    {"name": n, "protocol": "TCP", "port": p, "targetPort": p, "nodePort": np}
                    for n, p, np in ports
                ],
            },
        }
    )
