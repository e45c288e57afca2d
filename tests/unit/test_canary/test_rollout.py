"""The rollout state machine: steps, promotion, rollback, pause and resume."""

from __future__ import annotations

import pytest

from policies.canary import CanaryStateError, RolloutSpec, RolloutState, Verdict
from policies.canary.guards import GuardCheck
from policies.canary.rollout import act, decide
from tests.unit.test_canary._support import canary_policy, plan

PASS = Verdict("pass", ())
WAIT = Verdict("wait", ())
BREACH = Verdict("breach", (GuardCheck("error_rate", "breach", 0.01, 0.2, 2.0, 4.1, "error_rate: too many"),))


def spec_of(canary: dict[str, object]) -> RolloutSpec:
    spec = RolloutSpec.from_model("chat", canary_policy(canary).models["chat"])
    assert spec is not None
    return spec


def timed_plan() -> RolloutSpec:
    canary = plan()
    canary["plan"]["min_step_duration_s"] = 60
    return spec_of(canary)


def test_a_healthy_canary_goes_through_every_step_to_promotion() -> None:
    spec = timed_plan()
    state = spec.initial(now=1000.0)
    assert (state.phase, state.step, state.weight, state.epoch) == ("running", 0, 0.05, 1)
    weights = [state.weight]
    now = 1000.0
    while state.phase == "running":
        now += 61
        new = decide(spec, state, PASS, canary_requests=50, now=now)
        assert new is not None and new.revision == state.revision + 1 and new.epoch == state.epoch + 1
        state = new
        weights.append(state.weight)
    assert weights == [0.05, 0.25, 1.0]
    assert state.phase == "promoted" and state.last is not None and state.last.kind == "promote"
    assert decide(spec, state, BREACH, 1000, now + 100) is None  # promoted is final for the guards


def test_a_step_waits_for_its_duration_requests_and_guards() -> None:
    spec = timed_plan()
    state = spec.initial(now=0.0)
    assert decide(spec, state, PASS, canary_requests=50, now=59) is None
    assert decide(spec, state, PASS, canary_requests=49, now=61) is None
    assert decide(spec, state, WAIT, canary_requests=50, now=61) is None
    assert decide(spec, state, PASS, canary_requests=50, now=61) is not None


def test_a_breach_rolls_back_at_once_and_says_why() -> None:
    spec = timed_plan()
    state = spec.initial(now=0.0)
    new = decide(spec, state, BREACH, canary_requests=1, now=1)  # before the step's duration
    assert new is not None
    assert (new.phase, new.weight) == ("rolled_back", 0.0)
    assert new.last is not None and new.last.kind == "rollback" and new.last.actor == "auto"
    assert new.last.reason == "error_rate: too many"


def test_pause_stops_advancing_but_not_the_guards() -> None:
    spec = timed_plan()
    paused = act(spec, spec.initial(now=0.0), "pause", now=1)
    assert (paused.phase, paused.weight, paused.epoch) == ("paused", 0.05, 1)
    assert decide(spec, paused, PASS, canary_requests=500, now=1000) is None
    rolled = decide(spec, paused, BREACH, canary_requests=500, now=1000)
    assert rolled is not None and rolled.phase == "rolled_back"
    resumed = act(spec, paused, "resume", now=2)
    assert (resumed.phase, resumed.weight) == ("running", 0.05)
    assert decide(spec, resumed, PASS, canary_requests=50, now=1000) is not None


def test_resume_after_a_rollback_restarts_from_the_first_step() -> None:
    spec = timed_plan()
    state = decide(spec, spec.initial(now=0.0), PASS, 50, now=61)
    assert state is not None and state.weight == 0.25
    rolled = act(spec, state, "rollback", now=70, reason="bad answers")
    assert (rolled.phase, rolled.weight) == ("rolled_back", 0.0)
    assert rolled.last is not None and rolled.last.actor == "admin" and rolled.last.reason == "bad answers"
    restarted = act(spec, rolled, "resume", now=80)
    assert (restarted.phase, restarted.step, restarted.weight) == ("running", 0, 0.05)
    assert restarted.epoch > rolled.epoch and restarted.step_started_at == 80


def test_manual_promote_and_rollback_of_a_promotion() -> None:
    spec = timed_plan()
    promoted = act(spec, spec.initial(now=0.0), "promote", now=1)
    assert (promoted.phase, promoted.weight) == ("promoted", 1.0)
    with pytest.raises(CanaryStateError):
        act(spec, promoted, "promote", now=2)
    with pytest.raises(CanaryStateError):
        act(spec, promoted, "pause", now=2)
    with pytest.raises(CanaryStateError):
        act(spec, promoted, "resume", now=2)
    undone = act(spec, promoted, "rollback", now=3)
    assert (undone.phase, undone.weight) == ("rolled_back", 0.0)


def test_a_plan_stopping_below_one_holds_for_a_manual_promote() -> None:
    spec = spec_of(plan(steps=[0.1, 0.5]))
    state = spec.initial(now=0.0)
    state = decide(spec, state, PASS, 50, now=1)  # type: ignore[assignment]
    assert state.weight == 0.5
    held = decide(spec, state, PASS, 50, now=2)
    assert held is not None and held.held and held.weight == 0.5 and held.phase == "running"
    assert decide(spec, held, PASS, 50, now=3) is None
    assert act(spec, held, "promote", now=4).weight == 1.0


def test_fixed_and_shadow_canaries_never_step() -> None:
    for canary in ({"version": "v2", "weight": 0.2}, {"version": "v2", "shadow": True, "plan": {}}):
        spec = spec_of(canary)
        state = spec.initial(now=0.0)
        assert state.weight == (0.2 if "weight" in canary else 0.0)
        assert decide(spec, state, PASS, 10_000, now=10_000) is None
    shadow = spec_of({"version": "v2", "shadow": True, "plan": {}})
    stopped = decide(shadow, shadow.initial(now=0.0), BREACH, 100, now=1)
    assert stopped is not None and stopped.phase == "rolled_back"


def test_history_is_bounded_and_the_state_round_trips_through_json() -> None:
    spec = timed_plan()
    state = spec.initial(now=0.0)
    for i in range(30):
        state = act(spec, state, "pause" if state.phase == "running" else "resume", now=i)
    assert len(state.history) == 20
    assert RolloutState.from_json(state.to_json()) == state


def test_the_rollout_id_follows_the_canary_and_both_versions() -> None:
    a = spec_of(plan())
    assert a.rollout == spec_of(plan()).rollout
    assert a.rollout != spec_of(plan(steps=[0.1, 1.0])).rollout
    assert RolloutSpec.from_model("other", canary_policy(plan()).models["other"]) is None
