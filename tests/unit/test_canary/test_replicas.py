"""Two controllers sharing a real Redis, as two gateway replicas do."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from policies.canary import CanaryController, CanaryStateError, Transition
from tests.redis_support import REDIS_URL, connect_or_skip, unique_namespace
from tests.unit.test_canary._support import canary_policy, outcome, plan

Pair = tuple[CanaryController, CanaryController, list[Transition]]


@pytest.fixture
async def replicas() -> AsyncIterator[Pair]:
    first_client = await connect_or_skip()
    second_client = redis.Redis.from_url(REDIS_URL)
    cluster = unique_namespace()
    events: list[Transition] = []
    # no background judging or flushing: the tests drive those; following runs as in production
    options = {"on_event": events.append, "evaluate_interval_s": 3600, "flush_interval_s": 3600}
    pair = [CanaryController.create(client, cluster, rng=random.Random(i), **options)
            for i, client in enumerate((first_client, second_client))]
    policy = canary_policy(plan())
    for controller in pair:
        await controller.activate(controller.bind(policy))
        await controller.start()
    try:
        yield pair[0], pair[1], events
    finally:
        for controller in pair:
            await controller.aclose()
        keys = [k async for k in first_client.scan_iter(f"switchyard:{cluster}:*")]
        if keys:
            await first_client.delete(*keys)
        await first_client.aclose()
        await second_client.aclose()


def feed(controller: CanaryController, requests: int, rng: random.Random) -> None:
    for _ in range(requests):
        choice = controller.assign("chat", f"user-{rng.randrange(10**6)}")
        controller.record(choice, outcome(rng))


async def test_each_step_is_taken_once(replicas: Pair) -> None:
    first, second, events = replicas
    rng = random.Random(9)
    assert [e.kind for e in events] == ["start"]  # both activated; one stored the new rollout
    for _ in range(40):
        feed(first, 150, rng)
        feed(second, 150, rng)
        steps = await asyncio.gather(first.evaluate(), second.evaluate())
        assert sum(len(s) for s in steps) <= 1
        if first.status()["canaries"][0]["phase"] == "promoted":
            break
        await asyncio.sleep(0.02)
    assert [(e.kind, e.to_weight) for e in events] == [("start", 0.05), ("advance", 0.25), ("promote", 1.0)]
    await _until(lambda: second.status()["canaries"][0]["phase"] == "promoted", within_s=1.0)


async def test_both_sum_their_statistics(replicas: Pair) -> None:
    first, second, _ = replicas
    rng = random.Random(10)
    feed(first, 100, rng)
    feed(second, 100, rng)
    await asyncio.gather(first.flush(), second.flush())
    await first.evaluate()
    window = first.status()["canaries"][0]["window"]
    assert window["v1"]["requests"] + window["v2"]["requests"] == 200


async def test_a_rollback_reaches_the_other_replica_within_a_second(replicas: Pair) -> None:
    first, second, events = replicas
    await first.promote("chat")
    await _until(lambda: second.assign("chat", "u1").version == "v2", within_s=1.0)
    started = time.monotonic()
    await first.rollback("chat", "test")
    await _until(lambda: second.assign("chat", "u1").version == "v1", within_s=1.0)
    assert time.monotonic() - started < 1.0
    assert [e.kind for e in events][-2:] == ["promote", "rollback"]
    with pytest.raises(CanaryStateError, match="already rolled back"):
        await second.rollback("chat")


async def test_replicas_assign_the_same_users_alike(replicas: Pair) -> None:
    first, second, _ = replicas
    users = [f"session-{i}" for i in range(1_000)]
    assert [first.assign("chat", u) for u in users] == [second.assign("chat", u) for u in users]


async def _until(condition: object, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)
