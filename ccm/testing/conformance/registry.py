"""The conformance scenarios' registry: each scenario module registers its scenarios with
:func:`scenario` when imported (:mod:`ccm.testing.conformance.suite` imports them all)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ccm.testing.conformance.context import Context
from ccm.testing.conformance.results import NotOffered

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
