"""A real Redis for the tests: 127.0.0.1:6379, which .ci/run starts when none answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def connect_or_skip() -> redis.Redis:
    """A client to the test Redis; outside CI a missing Redis skips, in CI it fails."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as exc:
        await client.aclose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); .ci/run starts one")
    return client


def unique_namespace() -> str:
    """Keys of one test never meet another's."""
    return f"switchyard-test:{uuid.uuid4().hex[:12]}"


async def redis_client() -> AsyncIterator[redis.Redis]:
    client = await connect_or_skip()
    try:
        yield client
    finally:
        await client.aclose()


def require_redis() -> None:
    """For synchronous tests: skip outside CI when the test Redis does not answer, fail in CI."""
    import redis as sync_redis

    try:
        sync_redis.Redis.from_url(REDIS_URL).ping()
    except sync_redis.ConnectionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); .ci/run starts one")
