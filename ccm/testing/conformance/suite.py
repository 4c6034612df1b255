"""The conformance scenarios and the runner that plays them on a real control plane.

How the provider runs: **in-process**. The runner wraps the provider in an observer (it records
every exception the controllers see, to check that they are ``ccm.errors`` types) and runs the
real :class:`~ccm.app.manager.ControllerManager` on it against the real kube-apiserver — the same
controllers, informers and event recorders as the ``ccm`` daemon, only without leader election
and the secure server, and with short periods so that the run stays fast. In-process (rather than
:class:`ccm.testing.daemon.Daemon`) lets the scenarios call the provider directly too (idempotence,
cancellation, mutation checks need the provider object), shares one provider instance between the
controllers and the driver of an in-memory test double, and needs no packaging of the provider.

Each scenario belongs to a capability (``instances-v2``, ``load-balancer``, ``routes``,
``hygiene``) and checks one or more *rules*; a failure names the rule it broke
(:class:`RuleViolation`). A capability the provider does not offer is reported ``not offered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ccm import errors, wellknown
from ccm.app import manager as managermod
from ccm.app import options as optionsmod
from ccm.cloudprovider import (
    CloudProvider,
    InitContext,
    LoadBalancerStatus,
    Node,
    NodeAddress,
    Route,
    Service,
)
from ccm.kube import client as kclient
from ccm.testing.conformance.driver import ConformanceDriver, Machine

__all__ = [
    "CAPABILITIES",
    "SCENARIOS",
    "Outcome",
    "Report",
    "Result",
    "RuleViolation",
    "Scenario",
    "SuiteConfig",
    "run_suite",
]

_log = logging.getLogger("ccm.conformance")

CAPABILITIES = ("instances-v2", "load-balancer", "routes", "hygiene")
Outcome = Literal["passed", "failed", "not offered"]


class RuleViolation(AssertionError):
    """A scenario found the provider breaking ``rule`` (a short stable name)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"[{rule}] {message}")
        self.rule = rule
        self.message = message


class NotOffered(Exception):
    """Raised by a scenario when something it needs is not available (driver or provider)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteConfig:
    """Knobs of a run. Waits are bounded by ``wait_timeout``; provider calls by ``call_timeout``."""

    cluster_name: str = "conformance"
    namespace: str = "default"
    wait_timeout: float = 20.0
    call_timeout: float = 10.0
    scenario_timeout: float = 45.0
    poll_interval: float = 0.1
    period: float = 1.0  # node monitor / status update periods of the controllers


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    capability: str
    scenario: str
    outcome: Outcome
    reason: str = ""
    rule: str = ""
    seconds: float = 0.0


@dataclass(slots=True)
class Report:
    provider: str
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.outcome != "failed" for r in self.results)

    def by_capability(self) -> dict[str, list[Result]]:
        out: dict[str, list[Result]] = {}
        for r in self.results:
            out.setdefault(r.capability, []).append(r)
        return out

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.outcome == "failed"]


# ---------------------------------------------------------------- the observed provider


class _Observer:
    def __init__(self) -> None:
        self.foreign_errors: list[str] = []

    def wrap(self, capability: str, target: Any) -> Any:
        return _CapabilityProxy(capability, target, self)


class _CapabilityProxy:
    """Forwards every call to the provider's capability and records non-``ccm.errors`` raises."""

    def __init__(self, capability: str, target: Any, observer: _Observer) -> None:
        self._capability = capability
        self._target = target
        self._observer = observer

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attr(*args, **kwargs)
            except (errors.CCMError, asyncio.CancelledError, TimeoutError):
                raise
            except Exception as exc:
                self._observer.foreign_errors.append(
                    f"{self._capability}.{name} raised {type(exc).__name__}: {exc}"
                )
                raise

        return call


class ObservedProvider(CloudProvider):
    """The provider as the controllers see it during a run (``inner`` is the real one)."""

    def __init__(self, inner: CloudProvider, observer: _Observer) -> None:
        self.inner = inner
        self.name = inner.provider_name
        self._observer = observer

    async def initialize(self, context: InitContext) -> None:
        await self.inner.initialize(context)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def has_cluster_id(self) -> bool:
        return self.inner.has_cluster_id()

    def _wrap(self, name: str, cap: Any) -> Any:
        return None if cap is None else self._observer.wrap(name, cap)

    def instances_v2(self) -> Any:
        return self._wrap("InstancesV2", self.inner.instances_v2())

    def instances(self) -> Any:
        return self._wrap("Instances", self.inner.instances())

    def instances_batch(self) -> Any:
        return self._wrap("InstancesBatch", self.inner.instances_batch())

    def zones(self) -> Any:
        return self._wrap("Zones", self.inner.zones())

    def load_balancer(self) -> Any:
        return self._wrap("LoadBalancer", self.inner.load_balancer())

    def routes(self) -> Any:
        return self._wrap("Routes", self.inner.routes())

    def clusters(self) -> Any:
        return self._wrap("Clusters", self.inner.clusters())


# ---------------------------------------------------------------- scenario context


class Context:
    """What a scenario gets: the provider (direct), the driver, an admin client, helpers."""

    def __init__(
        self,
        provider: CloudProvider,
        driver: ConformanceDriver | None,
        client: kclient.KubeClient,
        config: SuiteConfig,
        observer: _Observer,
    ) -> None:
        self.provider = provider
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


# ---------------------------------------------------------------- scenarios

ScenarioFn = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Scenario:
    capability: str
    name: str
    doc: str
    fn: ScenarioFn


SCENARIOS: list[Scenario] = []


def scenario(capability: str, name: str) -> Callable[[ScenarioFn], ScenarioFn]:
    def register(fn: ScenarioFn) -> ScenarioFn:
        SCENARIOS.append(Scenario(capability, name, (fn.__doc__ or "").strip(), fn))
        return fn

    return register


def _offered(ctx: Context, capability: str) -> Any:
    cap = {
        "instances-v2": ctx.provider.instances_v2,
        "load-balancer": ctx.provider.load_balancer,
        "routes": ctx.provider.routes,
    }[capability]()
    if cap is None:
        raise NotOffered(f"the provider does not offer {capability}")
    return cap


# Importing the scenario modules registers them (order = report order).
from ccm.testing.conformance import (  # noqa: E402
    scenarios_hygiene,  # noqa: F401
    scenarios_instances,  # noqa: F401
    scenarios_lb,  # noqa: F401
    scenarios_routes,  # noqa: F401
)

# ---------------------------------------------------------------- the runner


def _options(kubeconfig: str, config: SuiteConfig) -> optionsmod.Options:
    return optionsmod.Options(
        cloud_provider="conformance",
        kubeconfig=kubeconfig,
        cluster_name=config.cluster_name,
        configure_cloud_routes=False,  # routes are checked by direct calls (no pod CIDR allocator)
        leader_elect=False,
        secure_port=0,
        node_monitor_period=config.period,
        node_status_update_frequency=config.period,
        cloud_call_timeout=config.call_timeout,
        shutdown_grace_period=1.0,
    )


async def run_suite(
    provider: CloudProvider,
    driver: ConformanceDriver | None,
    *,
    kubeconfig: str,
    only: Iterable[str] | None = None,
    config: SuiteConfig | None = None,
    scenarios: Sequence[Scenario] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Run the scenarios (of the capabilities in ``only``, default all) and return the report.

    The provider is run by the real controllers in-process against the apiserver of
    ``kubeconfig``; ``driver`` acts on the cloud behind it. The driver is cleaned up and every
    Node/Service the run created is deleted at the end, also on failure.
    """
    config = config or SuiteConfig()
    wanted = set(only) if only else set(CAPABILITIES)
    unknown = wanted - set(CAPABILITIES)
    if unknown:
        raise errors.ConfigError(
            f"--only: unknown capability {sorted(unknown)[0]!r} (one of {', '.join(CAPABILITIES)})"
        )
    selected = sorted(
        (s for s in (scenarios or SCENARIOS) if s.capability in wanted),
        key=lambda s: CAPABILITIES.index(s.capability),
    )
    observer = _Observer()
    observed = ObservedProvider(provider, observer)
    report = Report(provider=provider.provider_name)
    client = await kclient.KubeClient.connect(kubeconfig=kubeconfig, user_agent="ccm/conformance")
    ctx = Context(provider, driver, client, config, observer)
    mgr = managermod.ControllerManager(_options(kubeconfig, config), observed)
    manager_task = asyncio.create_task(mgr.run(), name="conformance/controller-manager")
    try:
        for sc in selected:
            started = time.monotonic()
            try:
                if manager_task.done():
                    manager_task.result()
                    raise RuntimeError("the controller manager stopped")
                async with asyncio.timeout(config.scenario_timeout):
                    await sc.fn(ctx)
                result = Result(capability=sc.capability, scenario=sc.name, outcome="passed")
            except NotOffered as exc:
                result = Result(
                    capability=sc.capability,
                    scenario=sc.name,
                    outcome="not offered",
                    reason=str(exc),
                )
            except RuleViolation as exc:
                result = Result(
                    capability=sc.capability,
                    scenario=sc.name,
                    outcome="failed",
                    rule=exc.rule,
                    reason=str(exc),
                )
            except TimeoutError:
                result = Result(
                    capability=sc.capability,
                    scenario=sc.name,
                    outcome="failed",
                    rule="scenario-timeout",
                    reason=f"[scenario-timeout] did not finish within {config.scenario_timeout:g}s",
                )
            except Exception as exc:
                result = Result(
                    capability=sc.capability,
                    scenario=sc.name,
                    outcome="failed",
                    rule="unexpected-error",
                    reason=f"[unexpected-error] {type(exc).__name__}: {exc}",
                )
            result = Result(
                capability=result.capability,
                scenario=result.scenario,
                outcome=result.outcome,
                reason=result.reason,
                rule=result.rule,
                seconds=time.monotonic() - started,
            )
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        manager_task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(manager_task), 10)
        with contextlib.suppress(BaseException):
            await ctx.cleanup()
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.cleanup()
        await client.aclose()
    return report


def ip_version(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


__all__ += [
    "Context",
    "LoadBalancerStatus",
    "NotOffered",
    "ObservedProvider",
    "Route",
    "node_view",
    "scenario",
    "service_view",
]
