"""One contract for the rollout and statistics stores: in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from policies.canary import (
    MemoryRolloutStore,
    MemoryStatsStore,
    Outcome,
    RedisRolloutStore,
    RedisStatsStore,
    RolloutSpec,
    VersionStats,
    Window,
)
from policies.canary.stats import StatsStore
from policies.canary.store import RolloutStore
from tests.redis_support import connect_or_skip, unique_namespace
from tests.unit.test_canary._support import canary_policy, plan


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RolloutStore, StatsStore]]:
    if request.param == "memory":
        yield MemoryRolloutStore(), MemoryStatsStore()
        return
    client = await connect_or_skip()
    namespace = unique_namespace()
    rollouts = RedisRolloutStore(client, namespace)
    try:
        yield rollouts, RedisStatsStore(client, namespace, ttl_s=60)
    finally:
        await rollouts.aclose()
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def spec() -> RolloutSpec:
    found = RolloutSpec.from_model("chat", canary_policy(plan()).models["chat"])
    assert found is not None
    return found


async def test_compare_and_set_on_the_revision(stores: tuple[RolloutStore, StatsStore]) -> None:
    rollouts, _ = stores
    first = replace(spec().initial(now=1.0), revision=1)
    key = (first.model, first.rollout)
    assert await rollouts.load([key]) == {first.rollout: None}
    assert await rollouts.compare_and_set(first)
    assert not await rollouts.compare_and_set(first)  # someone stored revision 1 already
    second = replace(first, weight=0.25, revision=2)
    assert not await rollouts.compare_and_set(replace(second, revision=3))
    assert await rollouts.compare_and_set(second)
    assert (await rollouts.load([key]))[first.rollout] == second


async def test_of_two_racing_writers_exactly_one_wins(stores: tuple[RolloutStore, StatsStore]) -> None:
    rollouts, _ = stores
    base = replace(spec().initial(now=1.0), revision=1)
    assert await rollouts.compare_and_set(base)
    for revision in range(2, 12):
        results = await asyncio.gather(*(rollouts.compare_and_set(replace(base, weight=w, revision=revision))
                                          for w in (0.1, 0.2)))
        assert sorted(results) == [False, True]


async def test_a_change_wakes_a_waiter(stores: tuple[RolloutStore, StatsStore]) -> None:
    rollouts, _ = stores
    await rollouts.wait_for_change(0.05)  # subscribe first, as the follow loop does
    state = replace(spec().initial(now=1.0), revision=1)
    waiter = asyncio.ensure_future(rollouts.wait_for_change(5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await rollouts.compare_and_set(state)
    await asyncio.wait_for(waiter, 1.0)
    assert time.monotonic() - started < 0.5


async def test_statistics_add_up_per_window_and_version(stores: tuple[RolloutStore, StatsStore]) -> None:
    _, stats = stores
    window, later = Window("chat", "r1", 1), Window("chat", "r1", 2)
    one, two = VersionStats(), VersionStats()
    one.add(Outcome(ok=True, status=200, ttft_s=0.1, e2e_s=0.5))
    one.add(Outcome(ok=False, status=503))
    two.add(Outcome(ok=True, status=200, ttft_s=0.1, e2e_s=0.5, moderation_blocked=True))
    await stats.add({(window, "v1"): one})
    await stats.add({(window, "v1"): two, (later, "v2"): two})
    read = await stats.read(window, ["v1", "v2"])
    assert (read["v1"].requests, read["v1"].errors, read["v1"].blocks) == (3, 1, 1)
    assert read["v1"].ttft.total == 2 and read["v1"].e2e.total == 2
    assert read["v2"].requests == 0
    assert (await stats.read(later, ["v2"]))["v2"].requests == 1


async def test_redis_statistics_are_bounded_and_expire() -> None:
    client = await connect_or_skip()
    namespace = unique_namespace()
    store = RedisStatsStore(client, namespace, ttl_s=60)
    try:
        stats = VersionStats()
        for i in range(5_000):
            stats.add(Outcome(ok=True, status=200, ttft_s=0.0001 * 1.01**i, e2e_s=0.001 * 1.01**i))
        await store.add({(Window("chat", "r1", 1), "v1"): stats})
        key = store.key(Window("chat", "r1", 1), "v1")
        assert await client.hlen(key) <= 3 + 2 * 160
        assert 0 < await client.pttl(key) <= 60_000
    finally:
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
