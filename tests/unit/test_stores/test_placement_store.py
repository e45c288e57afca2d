"""The replicas' shared conversation placements: in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as redis

from gateway.stores.placement_store import RedisPlacementStore
from router.placement import MemoryPlacementStore, PlacementStore
from tests.redis_support import connect_or_skip


@asynccontextmanager
async def _own_pool() -> AsyncIterator[tuple[redis.Redis, str]]:
    """A real Redis and a pool name of its own; the pool's placements and starts go after."""
    client = await connect_or_skip()
    name = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield client, name
    finally:
        keys = [k async for k in client.scan_iter(f"switchyard:placement:{{{name}}}:*")]
        await client.delete(*keys, f"switchyard:line:{{{name}}}")
        await client.aclose()


@pytest.fixture
async def pool() -> AsyncIterator[tuple[redis.Redis, str]]:
    async with _own_pool() as own:
        yield own


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PlacementStore]:
    if request.param == "memory":
        yield MemoryPlacementStore(max_entries=3)
        return
    async with _own_pool() as (client, name):
        yield RedisPlacementStore(client, name, ttl_s=60)


async def test_a_placement_is_read_back_and_replaced(store: PlacementStore) -> None:
    assert await store.get("conv-a") is None
    await store.put("conv-a", "http://10.0.0.1:30000")
    assert await store.get("conv-a") == "http://10.0.0.1:30000"
    await store.put("conv-a", "http://10.0.0.2:30000")  # moved
    assert await store.get("conv-a") == "http://10.0.0.2:30000"


async def test_a_routing_decision_is_recorded_in_one_call(store: PlacementStore) -> None:
    await store.record(("conv-b", "http://10.0.0.3:30000"), ("0b0b", "pool/3"))
    await store.record(None, None)  # nothing decided: nothing written
    assert await store.get("conv-b") == "http://10.0.0.3:30000"
    await store.record(("conv-b", "http://10.0.0.4:30000"), None)  # moved, not a start
    assert await store.get("conv-b") == "http://10.0.0.4:30000"


async def test_placements_expire() -> None:
    client = await connect_or_skip()
    try:
        store = RedisPlacementStore(client, f"test-{uuid.uuid4().hex[:8]}", ttl_s=0.2)
        await store.put("conv", "http://10.0.0.1:30000")
        assert await store.get("conv") == "http://10.0.0.1:30000"
        await asyncio.sleep(0.3)
        assert await store.get("conv") is None
    finally:
        await client.aclose()


async def test_an_unreachable_redis_is_unknown_not_an_error() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.05)  # nothing listens
    store = RedisPlacementStore(client, "pool", timeout_s=0.2)
    started = time.monotonic()
    await store.put("conv", "http://10.0.0.1:30000")
    assert await store.get("conv") is None
    assert time.monotonic() - started < 1.0
    await client.aclose()


async def test_replicas_see_each_others_starts_not_their_own(pool: tuple[redis.Redis, str]) -> None:
    client, name = pool
    a, b = RedisPlacementStore(client, name), RedisPlacementStore(client, name)
    assert await a.starts_elsewhere() == [] and await b.starts_elsewhere() == []
    await a.record(("conv", "http://10.0.0.1:30000"), ("0a0b", "pool/1"))  # one pipeline
    assert await b.get("conv") == "http://10.0.0.1:30000"
    await b.publish_start("0c0d", "pool/2")
    await a.publish_start("0e0f", "pool/3")
    assert await b.starts_elsewhere() == [("0a0b", "pool/1"), ("0e0f", "pool/3")]
    assert await b.starts_elsewhere() == [], "each start once"
    assert await a.starts_elsewhere() == [("0c0d", "pool/2")]
    late = RedisPlacementStore(client, name)  # started mid-traffic: the recent starts first
    assert await late.starts_elsewhere() == [("0a0b", "pool/1"), ("0c0d", "pool/2"), ("0e0f", "pool/3")]


async def test_concurrent_catch_ups_return_each_start_once(pool: tuple[redis.Redis, str]) -> None:
    # a replica places many new conversations at once: each asks for the others' starts before
    # it picks, and each start must be counted once on its line, or the replicas' lines drift
    client, name = pool
    a, b = RedisPlacementStore(client, name), RedisPlacementStore(client, name)
    for i in range(5):
        await b.publish_start(f"{i:04x}", "pool/1")
    first = await asyncio.gather(*(a.starts_elsewhere() for _ in range(4)))  # joining
    assert sorted(s for got in first for s in got) == [(f"{i:04x}", "pool/1") for i in range(5)]
    for i in range(5, 8):
        await b.publish_start(f"{i:04x}", "pool/2")
    later = await asyncio.gather(*(a.starts_elsewhere() for _ in range(6)))
    assert sorted(s for got in later for s in got) == [(f"{i:04x}", "pool/2") for i in range(5, 8)]
    await b.publish_start("0100", "pool/3")
    assert await a.starts_elsewhere() == [("0100", "pool/3")]


async def test_the_memory_starts_log_stays_bounded_and_views_read_what_others_published() -> None:
    alone = MemoryPlacementStore(max_entries=3)
    await alone.publish_start("g", "w0")
    assert not alone._starts.entries  # one replica: nobody else could read its starts
    table = MemoryPlacementStore(max_entries=3)
    other = table.view()
    for i in range(1_000):  # a replica serving for long: one start per new conversation
        await table.publish_start(f"g{i}", "w0")
    assert len(table._starts.entries) == 3  # was one entry per conversation, forever
    assert await other.starts_elsewhere() == [("g997", "w0"), ("g998", "w0"), ("g999", "w0")]
    await other.publish_start("g-other", "w1")
    assert await other.starts_elsewhere() == []  # its own start is not news to it
    assert await table.starts_elsewhere() == [("g-other", "w1")]
    assert await table.starts_elsewhere() == []
