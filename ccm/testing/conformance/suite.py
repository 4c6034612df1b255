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

Each scenario belongs to a capability (``instances-v2``, ``load-balancer``, ``routes``, ``hygiene``)
and checks one or more *rules*; a failure names the rule it broke (:class:`RuleViolation`). A
capability the provider does not offer is reported ``not offered``; a rule the driver declares does
not hold for its cloud (``route_scope = "route-table"``: routes scoped by the configured route
table, not by the cluster name) is reported ``not applicable`` with the reason, for that scenario
only. Neither is ever ``passed``, and neither fails the run. A failed scenario during which a
provider call held the event loop is reported as that hold (rule ``does-not-block-event-loop``,
naming the method, the task and the time), with the symptom it caused after it: a blocked loop makes
unrelated waits and timeouts fail, and the symptom alone would point at the wrong place. A check
that needs the driver's own view of the cloud (a leaked load balancer or route, a round trip) and
could not get it (the driver returns ``None``) is listed as *unverified* on the result: the scenario
passes on the provider's word, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence

from ccm import errors, names
from ccm.app import manager as appmanager
from ccm.app import options as appoptions
from ccm.cloudprovider import CloudProvider, LoadBalancerStatus, Route
from ccm.kube import client as kclient

# Importing the scenario modules registers their scenarios, in this order within a capability.
from ccm.testing.conformance import (
    scenarios_hygiene,
    scenarios_instances,
    scenarios_lb,
    scenarios_routes,
)
from ccm.testing.conformance.context import Context, node_view, service_view
from ccm.testing.conformance.driver import ConformanceDriver, declared_route_scope
from ccm.testing.conformance.observe import LoopHold, ObservedProvider, Observer
from ccm.testing.conformance.registry import SCENARIOS, Scenario, scenario
from ccm.testing.conformance.results import (
    BLOCKING_RULE,
    CAPABILITIES,
    NotApplicable,
    NotOffered,
    Outcome,
    Report,
    Result,
    RuleViolation,
    SuiteConfig,
    describe_holds,
)

__all__ = [
    "BLOCKING_RULE",
    "CAPABILITIES",
    "SCENARIOS",
    "Context",
    "LoadBalancerStatus",
    "LoopHold",
    "NotApplicable",
    "NotOffered",
    "ObservedProvider",
    "Observer",
    "Outcome",
    "Report",
    "Result",
    "Route",
    "RuleViolation",
    "Scenario",
    "SuiteConfig",
    "describe_holds",
    "node_view",
    "play_scenario",
    "run_suite",
    "scenario",
    "service_view",
]

#: The scenario modules whose import registered :data:`SCENARIOS`.
_SCENARIO_MODULES = (scenarios_hygiene, scenarios_instances, scenarios_lb, scenarios_routes)


def _options(kubeconfig: str, config: SuiteConfig) -> appoptions.Options:
    return appoptions.Options(
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


def _controllers() -> dict[str, appmanager.ControllerSpec]:
    """The controllers the suite runs: all but the route controller, whose scenarios call the
    provider's Routes directly (the suite allocates no pod CIDRs); leaving it out of the map, not
    disabling it, keeps the run's log from saying the route controller was skipped."""
    specs = appmanager.default_controllers()
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
    except NotApplicable as exc:
        outcome, reason = "not applicable", str(exc)
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
    declared_route_scope(driver)  # a bad declaration is a usage error, before anything runs
    selected = sorted(
        (s for s in (scenarios or SCENARIOS) if s.capability in wanted),
        key=lambda s: CAPABILITIES.index(s.capability),
    )
    observer = Observer(loop_hold_threshold=config.loop_hold_threshold)
    observed = ObservedProvider(provider, observer)
    report = Report(provider=provider.provider_name)
    client = await kclient.KubeClient.connect(kubeconfig=kubeconfig, user_agent="ccm/conformance")
    ctx = Context(observed, driver, client, config, observer)
    mgr = appmanager.ControllerManager(
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
