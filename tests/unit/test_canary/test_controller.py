"""The controller in one process: assignment from the live state, statistics, steps, commands."""

from __future__ import annotations

import random
from typing import Any

import pytest

from backends.errors import NotFoundError
from policies.canary import (
    CanaryController,
    CanaryStateError,
    MemoryRolloutStore,
    MemoryStatsStore,
    Outcome,
    Transition,
)
from tests.unit.test_canary._support import canary_policy, outcome, plan


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def controller_for(canary: dict[str, Any], events: list[Transition] | None = None,
                         clock: Clock | None = None) -> CanaryController:
    controller = CanaryController(MemoryRolloutStore(), MemoryStatsStore(), clock=clock or Clock(),
                                  rng=random.Random(1), on_event=(events.append if events is not None else None))
    await controller.activate(controller.bind(canary_policy(canary)))
    return controller


async def serve(controller: CanaryController, requests: int, rng: random.Random, *,
                canary_errors: float = 0.01, canary_latency: float = 0.2) -> dict[str, int]:
    """``requests`` users' requests through assign and record; how many each version served."""
    served = {"v1": 0, "v2": 0}
    for _ in range(requests):
        choice = controller.assign("chat", f"user-{rng.randrange(1_000_000)}")
        served[choice.version] += 1
        bad = choice.version == "v2"
        controller.record(choice, outcome(rng, error_rate=canary_errors if bad else 0.01,
                                          latency=canary_latency if bad else 0.2))
    return served


async def test_a_new_rollout_starts_at_its_first_step() -> None:
    events: list[Transition] = []
    controller = await controller_for(plan(), events)
    assert [e.kind for e in events] == ["start"]
    [status] = controller.status()["canaries"]
    assert (status["phase"], status["weight"], status["step"], status["mode"]) == ("running", 0.05, 1, "split")
    assert controller.weights() == {"chat": 0.05}
    users = [f"u{i}" for i in range(4_000)]
    share = sum(controller.assign("chat", u).role == "canary" for u in users) / len(users)
    assert 0.035 < share < 0.065
    assert controller.assign("other", "u1").version == "default"


async def test_a_healthy_canary_is_promoted_through_every_step() -> None:
    events: list[Transition] = []
    controller = await controller_for(plan(), events)
    rng = random.Random(2)
    for _ in range(60):
        await serve(controller, 200, rng)
        await controller.evaluate()
        if controller.status()["canaries"][0]["phase"] != "running":
            break
    assert [(e.kind, e.to_weight) for e in events] == [("start", 0.05), ("advance", 0.25), ("promote", 1.0)]
    assert {controller.assign("chat", f"u{i}").version for i in range(200)} == {"v2"}
    assert controller.assign("chat", "u1").role == "stable"
    status = controller.status()["canaries"][0]
    assert "set stable: v2" in status["next"]


async def test_a_failing_canary_is_rolled_back_and_gets_no_new_users() -> None:
    events: list[Transition] = []
    controller = await controller_for(plan(steps=[0.25, 0.5, 1.0]), events)
    rng = random.Random(3)
    canary_served = 0
    while controller.status()["canaries"][0]["phase"] == "running":
        canary_served += (await serve(controller, 20, rng, canary_errors=0.2))["v2"]
        await controller.evaluate()
        assert canary_served < 200
    assert events[-1].kind == "rollback" and events[-1].reason.startswith("error_rate")
    assert (await serve(controller, 2_000, rng))["v2"] == 0
    status = controller.status()["canaries"][0]
    assert status["phase"] == "rolled_back" and status["verdict"]["judgement"] == "breach"


async def test_a_slow_canary_is_rolled_back() -> None:
    events: list[Transition] = []
    controller = await controller_for(plan(steps=[0.25, 1.0]), events)
    rng = random.Random(4)
    for _ in range(50):
        await serve(controller, 20, rng, canary_latency=0.4)
        await controller.evaluate()
    assert events[-1].kind == "rollback" and "p95" in events[-1].reason


async def test_steps_wait_for_their_duration() -> None:
    clock = Clock()
    canary = plan()
    canary["plan"]["min_step_duration_s"] = 300
    controller = await controller_for(canary, clock=clock)
    rng = random.Random(5)
    await serve(controller, 3_000, rng)
    assert await controller.evaluate() == []
    clock.now += 301
    [step] = await controller.evaluate()
    assert (step.kind, step.to_weight) == ("advance", 0.25)
    # the new step is judged on its own traffic only
    assert controller.status()["canaries"][0]["window"] == {}
    assert await controller.evaluate() == []
    assert controller.status()["canaries"][0]["window"]["v2"]["requests"] == 0


async def test_commands() -> None:
    events: list[Transition] = []
    controller = await controller_for(plan(), events)
    assert (await controller.pause("chat"))["phase"] == "paused"
    with pytest.raises(CanaryStateError):
        await controller.pause("chat")
    assert (await controller.resume("chat"))["phase"] == "running"
    assert (await controller.rollback("chat", "looks wrong"))["weight"] == 0.0
    assert controller.assign("chat", "anyone").version == "v1"
    assert (await controller.promote("chat"))["weight"] == 1.0
    assert [e.kind for e in events] == ["start", "pause", "resume", "rollback", "promote"]
    assert events[3].actor == "admin" and events[3].reason == "looks wrong"
    with pytest.raises(NotFoundError):
        await controller.promote("other")


async def test_a_fixed_split_uses_its_weight() -> None:
    controller = await controller_for({"version": "v2", "weight": 0.5})
    share = sum(controller.assign("chat", f"u{i}").version == "v2" for i in range(4_000)) / 4_000
    assert 0.46 < share < 0.54
    assert await controller.evaluate() == []


async def test_shadow_mirrors_a_share_within_the_concurrency_bound() -> None:
    controller = await controller_for({"version": "v2", "shadow": True, "shadow_share": 0.5,
                                       "shadow_max_concurrency": 2, "plan": {"guards": {"min_samples": 50}}})
    choices = [controller.assign("chat", f"u{i}") for i in range(2_000)]
    assert {c.version for c in choices} == {"v1"}
    mirrored = [c for c in choices if c.shadow_version == "v2"]
    assert 0.45 < len(mirrored) / len(choices) < 0.55
    permits = [controller.try_shadow(c) for c in mirrored[:3]]
    assert permits[2] is None and permits[0] is not None
    permits[0].release()
    permits[0].release()  # twice is harmless
    assert controller.try_shadow(mirrored[3]) is not None
    status = controller.status()["canaries"][0]
    assert status["shadow"]["in_flight"] == 2 and status["shadow"]["dropped"] == 1
    # the mirror's outcomes are the canary's statistics; a breach stops mirroring
    for choice in choices:
        controller.record(choice, Outcome(ok=True, status=200, ttft_s=0.1, e2e_s=0.3))
        if choice.shadow_version:
            controller.record(choice, Outcome(ok=False, status=500), shadow=True)
    [rollback] = await controller.evaluate()
    assert rollback.kind == "rollback"
    assert all(controller.assign("chat", f"u{i}").shadow_version is None for i in range(100))


async def test_a_changed_canary_is_a_new_rollout_and_old_routes_keep_theirs() -> None:
    events: list[Transition] = []
    controller = await controller_for(plan(), events)
    old_routes = controller.routes
    await controller.rollback("chat")
    new_routes = controller.bind(canary_policy(plan(steps=[0.5, 1.0])))
    await controller.activate(new_routes)
    assert [e.kind for e in events] == ["start", "rollback", "start"]
    assert controller.status()["canaries"][0]["weight"] == 0.5
    assert old_routes.assign("chat", "u1").version == "v1"  # a request finishing under the old policy
    removed = controller.bind(canary_policy(None))
    await controller.activate(removed)
    assert controller.status() == {"canaries": []}
    assert removed.assign("chat", "u1").version == "v1"


async def test_state_unknown_means_stable() -> None:
    class DownStore(MemoryRolloutStore):
        async def load(self, keys: Any) -> Any:
            raise ConnectionError("redis is down")

    controller = CanaryController(DownStore(), MemoryStatsStore())
    await controller.activate(controller.bind(canary_policy({"version": "v2", "weight": 1.0})))
    assert controller.assign("chat", "u1").version == "v1"
    assert controller.status()["canaries"][0]["phase"] == "unknown"


async def test_a_store_that_lost_its_data_is_followed() -> None:
    store, stats = MemoryRolloutStore(), MemoryStatsStore()
    clock = Clock()
    first, second = (CanaryController(store, stats, clock=clock) for _ in range(2))
    policy = canary_policy(plan())
    for controller in (first, second):
        await controller.activate(controller.bind(policy))
    await first.pause("chat")
    await first.resume("chat")
    await second.refresh()
    store._states.clear()  # Redis flushed: the next reader stores a fresh rollout (revision 1)
    clock.now += 10
    await first.refresh()
    await second.refresh()
    assert first.status()["canaries"][0]["revision"] == second.status()["canaries"][0]["revision"] == 1
