"""The conformance suite's vocabulary: capabilities, rules and their violations, the knobs of a run,
and the results and report it produces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ccm.testing.conformance.observe import DEFAULT_LOOP_HOLD_THRESHOLD, LoopHold

CAPABILITIES = ("instances-v2", "load-balancer", "routes", "hygiene")
Outcome = Literal["passed", "failed", "not offered", "not applicable"]


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


class NotApplicable(Exception):
    """Raised by a scenario whose rule does not apply to the cloud, as its driver declares (e.g.
    routes scoped by the route table, not by the cluster name); the message says why."""


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
