"""Fixtures shared by the policy tests: the usage ledger, in memory and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from policies.spend import MemoryUsageLedger, UsageLedger
from policies.spend_redis import RedisUsageLedger
from tests.redis_support import connect_or_skip, unique_namespace


@pytest.fixture(params=["memory", "redis"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[UsageLedger]:
    """Each ledger implementation; the Redis one in a namespace of its own, removed after."""
    if request.param == "memory":
        yield MemoryUsageLedger()
        return
    client = await connect_or_skip()
    namespace = unique_namespace()
    try:
        yield RedisUsageLedger(client, namespace)
    finally:
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
