"""PolicySync stops when cancelled, wherever the cancel lands (shutdown must never hang)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.policy_sync import PolicySync, PublishedPolicy
from tests.redis_support import redis_client, unique_namespace


@pytest.fixture
async def client() -> AsyncIterator[redis.Redis]:
    async for c in redis_client():
        yield c


async def test_a_cancel_at_any_point_stops_the_follower(client: redis.Redis) -> None:
    # Under Python 3.11 redis-py can swallow a cancel that lands mid-read; before the fix about
    # 1 in 30 cancels left the task running forever.
    async def on_change(_: PublishedPolicy) -> None:
        return None

    rng = random.Random(7)
    cluster = unique_namespace()
    hung = 0
    for _ in range(150):
        task = asyncio.create_task(PolicySync(client, cluster, on_change, check_interval_s=0.05).run())
        await asyncio.sleep(rng.uniform(0.0, 0.12))  # subscribing, checking, or waiting
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            hung += 1
        elif not task.cancelled():
            pytest.fail(f"the follower ended with {task.exception()!r} instead of stopping")
    assert hung == 0, f"{hung} of 150 cancelled followers kept running"


async def test_a_published_change_still_reaches_a_follower(client: redis.Redis) -> None:
    seen: list[int] = []
    arrived = asyncio.Event()

    async def on_change(policy: PublishedPolicy) -> None:
        seen.append(policy.revision)
        arrived.set()

    cluster = unique_namespace()
    follower = asyncio.create_task(PolicySync(client, cluster, on_change, check_interval_s=5.0).run())
    await asyncio.sleep(0.2)  # subscribed
    revision = await PolicySync(client, cluster, on_change).publish("version: 1\n", "d1", "test")
    await asyncio.wait_for(arrived.wait(), 2.0)  # by the channel: well before the 5 s check
    follower.cancel()
    await asyncio.wait({follower}, timeout=1.0)
    assert follower.done() and seen == [revision]
