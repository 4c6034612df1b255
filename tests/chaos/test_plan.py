"""The seeded plan of a chaos run: repeatable, valid targets, faults that never overlap."""

from __future__ import annotations

import pytest

from chaos import plan as planmod


def test_same_seed_gives_the_same_plan_and_another_seed_a_different_one() -> None:
    settings = planmod.PlanSettings(seed=7, duration=120)
    assert planmod.make_plan(settings) == planmod.make_plan(settings)
    other = planmod.make_plan(planmod.PlanSettings(seed=8, duration=120))
    assert other.actions != planmod.make_plan(settings).actions


def test_faults_do_not_overlap_and_every_kind_is_used_before_one_repeats() -> None:
    settings = planmod.PlanSettings(seed=3, duration=600, fault_duration=(2, 4), fault_gap=(1, 2))
    faults = planmod.make_plan(settings).faults()
    active = None
    started: list[str] = []
    for action in faults:
        if action.kind == "fault-start":
            assert active is None, f"{action.target} starts while {active} is on"
            active = action.target
            started.append(action.target)
        else:
            assert action.target == active
            active = None
    assert active is None
    kinds = len(planmod.FAULT_KINDS)
    assert sorted(started[:kinds]) == sorted(planmod.FAULT_KINDS)
    assert faults[-1].at <= settings.duration - settings.quiet_tail


def test_leader_pause_outlasts_the_lease() -> None:
    settings = planmod.PlanSettings(seed=1, duration=300, faults=("leader-pause",))
    faults = planmod.make_plan(settings).faults()
    assert faults
    for start, end in zip(faults[::2], faults[1::2], strict=True):
        assert end.at - start.at >= settings.pause_min - 0.01


def test_workload_targets_only_nodes_and_services_that_exist() -> None:
    plan = planmod.make_plan(planmod.PlanSettings(seed=11, duration=600, faults=()))
    running = set(plan.initial_nodes)
    stopped: set[str] = set()
    services = {name for name, _ in plan.initial_services}
    for a in plan.actions:
        if a.kind == "join":
            assert a.target not in running | stopped
            running.add(a.target)
        elif a.kind == "leave":
            assert a.target in running | stopped
            running.discard(a.target)
            stopped.discard(a.target)
        elif a.kind == "stop":
            running.remove(a.target)
            stopped.add(a.target)
        elif a.kind == "start":
            stopped.remove(a.target)
            running.add(a.target)
        elif a.kind in ("flap-down", "flap-up"):
            assert a.target in running
        elif a.kind == "svc-create":
            services.add(a.target)
        elif a.kind in ("svc-change", "svc-delete"):
            assert a.target in services
            if a.kind == "svc-delete":
                services.remove(a.target)
    kinds = {a.kind for a in plan.actions}
    assert kinds >= {"join", "leave", "stop", "start", "flap-down", "svc-create", "svc-delete"}


def test_fault_list_is_parsed_and_an_unknown_kind_is_named() -> None:
    assert planmod.parse_faults("all") == planmod.FAULT_KINDS
    assert planmod.parse_faults("none") == ()
    assert planmod.parse_faults("short") == planmod.SHORT_RUN_FAULTS
    assert planmod.parse_faults("throttle, leader-kill") == ("throttle", "leader-kill")
    with pytest.raises(ValueError, match="'nope'"):
        planmod.parse_faults("throttle,nope")
    assert set(planmod.SHORT_RUN_FAULTS) <= set(planmod.FAULT_KINDS)
