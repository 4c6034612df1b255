"""The conformance scenarios and the runner that plays them on a real control plane.

How the provider runs: **in-process**. The runner wraps the provider in an observer
(:mod:`ccm.testing.conformance.observe`: it records every exception the controllers and the
scenarios see, to check that they are ``ccm.errors`` types, and times how long every call holds
the event loop) and runs the real :class:`~ccm.app.manager.ControllerManager` on it against the
real kube-apiserver — the same controllers, informers and event recorders as the ``ccm`` daemon,
only without leader election and the secure server, and with short periods so that the run stays
fast. In-process (rather than :class:`ccm.testing.daemon.Daemon`) lets the scenarios call the
provider directly too (idempotence, cancellation, mutation checks need the provider object),
shares one provider instance between the controllers and the driver of an in-memory test double,
and needs no packaging of the provider.

Each scenario belongs to a capability (``instances-v2``, ``load-balancer``, ``routes``,
``hygiene``) and checks one or more *rules*; a failure names the rule it broke
(:class:`RuleViolation`). A capability the provider does not offer is reported ``not offered``.
A failed scenario during which a provider call held the event loop is reported as that hold
(rule ``does-not-block-event-loop``, naming the method, the task and the time), with the symptom
it caused after it: a blocked loop makes unrelated waits and timeouts fail, and the symptom alone
would point at the wrong place. A check that needs the driver's own view of the cloud (a leaked
load balancer or route, a round trip) and could not get it (the driver returns ``None``) is listed
as *unverified* on the result: the scenario passes on the provider's word, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ccm import errors, names, wellknown
from ccm.app import manager as managermod
from ccm.app import options as optionsmod
from ccm.cloudprovider import (
    CloudProvider,
    LoadBalancerStatus,
    Node,
    NodeAddress,
    Route,
    Service,
)
from ccm.kube import client as kclient
from ccm.testing.conformance.driver import ConformanceDriver, Machine
from ccm.testing.conformance.observe import (
    DEFAULT_LOOP_HOLD_THRESHOLD,
    LoopHold,
    ObservedProvider,
    Observer,
)

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


BLOCKING_RULE = "does-not-block-event-loop"


def describe_holds(holds: Sequence[LoopHold], threshold: float) -> str:
    """One sentence on the longest hold (and how many more there were, by whom)."""
    more = ""
    if len(holds) > 1:
        others = dict.fromkeys(f"{h.method} from {h.task!r}" for h in holds[1:])
        shown = ", ".join(list(others)[:3]) + (", ..." if len(others) > 3 else "")
        more = f"; {len(holds) - 1} more hold(s) of the loop ({shown})"
    return (
        f"{holds[0].describe()} (limit {threshold:g}s): a synchronous call inside a coroutine "
        f"stops every controller; run it on a thread{more}"
    )


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
    #: A provider call holding the event loop this long in one step breaks a rule (see observe).
    loop_hold_threshold: float = DEFAULT_LOOP_HOLD_THRESHOLD


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    capability: str
    scenario: str
    outcome: Outcome
    reason: str = ""
    rule: str = ""
    seconds: float = 0.0
    #: Checks the scenario could not verify in the cloud, ``"check (why)"``: Context.unverified.
    unverified: tuple[str, ...] = ()


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

    def unverified(self) -> list[str]:
        """Every unverified check of the run, as ``scenario: check (why)``."""
        return [f"{r.scenario}: {u}" for r in self.results for u in r.unverified]


# ---------------------------------------------------------------- scenario context


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


def _controllers() -> dict[str, managermod.ControllerSpec]:
    """The controllers the suite runs: all but the route controller, whose scenarios call the
    provider's Routes directly (the suite allocates no pod CIDRs); leaving it out of the map, not
    disabling it, keeps the run's log from saying the route controller was skipped."""
    specs = managermod.default_controllers()
    specs.pop(names.NODE_ROUTE_CONTROLLER, None)
    return specs


async def play_scenario(
    sc: Scenario, ctx: Context, *, before: Callable[[], None] | None = None
) -> Result:
    """Run one scenario and turn its outcome into a :class:`Result` (never raises but for
    cancellation). A failure during which a provider call held the event loop is reported as that
    hold, the symptom after it."""
    config = ctx.config
    started = time.monotonic()
    ctx.unverified_checks = []
    rule, reason = "", ""
    outcome: Outcome = "failed"
    task = asyncio.current_task()
    task_name = task.get_name() if task is not None else ""
    if task is not None:  # a hold by the scenario's own calls names the scenario
        task.set_name(f"conformance/{sc.name}")
    try:
        if before is not None:
            before()
        async with asyncio.timeout(config.scenario_timeout):
            await sc.fn(ctx)
        outcome = "passed"
    except NotOffered as exc:
        outcome, reason = "not offered", str(exc)
    except RuleViolation as exc:
        rule, reason = exc.rule, str(exc)
    except TimeoutError:
        rule = "scenario-timeout"
        reason = f"[scenario-timeout] did not finish within {config.scenario_timeout:g}s"
    except Exception as exc:
        rule, reason = "unexpected-error", f"[unexpected-error] {type(exc).__name__}: {exc}"
    finally:
        if task is not None:
            task.set_name(task_name)
    ended = time.monotonic()
    if outcome == "failed" and rule != BLOCKING_RULE:
        holds = ctx.observer.holds_between(started, ended)
        if holds:
            symptom = reason
            rule = BLOCKING_RULE
            reason = (
                f"[{rule}] {describe_holds(holds, config.loop_hold_threshold)} "
                f"— which caused: {symptom}"
            )
    return Result(
        capability=sc.capability,
        scenario=sc.name,
        outcome=outcome,
        reason=reason,
        rule=rule,
        seconds=ended - started,
        unverified=tuple(ctx.unverified_checks) if outcome == "passed" else (),
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
    observer = Observer(loop_hold_threshold=config.loop_hold_threshold)
    observed = ObservedProvider(provider, observer)
    report = Report(provider=provider.provider_name)
    client = await kclient.KubeClient.connect(kubeconfig=kubeconfig, user_agent="ccm/conformance")
    ctx = Context(observed, driver, client, config, observer)
    mgr = managermod.ControllerManager(
        _options(kubeconfig, config), observed, controllers=_controllers()
    )
    manager_task = asyncio.create_task(mgr.run(), name="conformance/controller-manager")
    try:
        for sc in selected:

            def manager_alive() -> None:
                if manager_task.done():
                    manager_task.result()
                    raise RuntimeError("the controller manager stopped")

            result = await play_scenario(sc, ctx, before=manager_alive)
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
    "BLOCKING_RULE",
    "Context",
    "LoadBalancerStatus",
    "LoopHold",
    "NotOffered",
    "ObservedProvider",
    "Observer",
    "Route",
    "describe_holds",
    "node_view",
    "play_scenario",
    "scenario",
    "service_view",
]
