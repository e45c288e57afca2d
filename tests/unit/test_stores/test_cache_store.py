"""One contract for every CacheStore: in memory and on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.stores import CacheStore, MemoryCacheStore, RedisCacheStore
from tests.redis_support import connect_or_skip, unique_namespace


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CacheStore]:
    if request.param == "memory":
        yield MemoryCacheStore(max_entries=3)
        return
    client = await connect_or_skip()
    namespace = unique_namespace()
    try:
        yield RedisCacheStore(client, namespace, max_entries=3)
    finally:
        keys = [k async for k in client.scan_iter(f"{{{namespace}}}:*")]  # the namespace is the hash tag
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_put_then_get(store: CacheStore) -> None:
    assert await store.get("a") is None
    await store.put("a", b"value-a", ttl_s=30)
    assert await store.get("a") == b"value-a"
    await store.put("a", b"value-a2", ttl_s=30)
    assert await store.get("a") == b"value-a2"


async def test_entries_expire(store: CacheStore) -> None:
    await store.put("short", b"x", ttl_s=0.2)
    await store.put("long", b"y", ttl_s=30)
    await asyncio.sleep(0.35)
    assert await store.get("short") is None
    assert await store.get("long") == b"y"


async def test_size_is_bounded_oldest_first(store: CacheStore) -> None:
    for i in range(5):
        await store.put(f"k{i}", str(i).encode(), ttl_s=30)
        await asyncio.sleep(0.002)  # distinct write times for Redis's index
    assert [await store.get(f"k{i}") for i in range(5)] == [None, None, b"2", b"3", b"4"]
