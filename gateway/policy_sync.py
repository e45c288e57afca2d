"""Policy changes shared through Redis, so every replica serves the same policy.

The latest change lives in one hash (text, digest, revision, time, source); a change bumps
the revision atomically with the hash and is announced on a channel. Each replica listens on
the channel and also checks the revision every second, so a message missed while Redis or
the connection was down is caught up within a second of recovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from policies.redis_client import RedisClient

log = logging.getLogger("switchyard.policy")


# INCR and HSET in one step: the stored document is always the one of the highest revision
_PUBLISH = """
local rev = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'rev', rev, 'text', ARGV[1], 'digest', ARGV[2], 'ts', ARGV[3], 'source', ARGV[4])
redis.call('PUBLISH', ARGV[5], rev)
return rev
"""


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    revision: int
    text: str
    digest: str
    published_at: float
    """Unix time of the change."""
    source: str


class PolicySync:
    """Publish policy changes to Redis and follow the ones other replicas publish.

    Args:
        client: The process's Redis client.
        cluster: Replicas with the same name share a policy (``SWITCHYARD_CLUSTER``); one
            Redis can hold several clusters.
        on_change: Called with each newer published policy (the caller applies it).
        check_interval_s: The revision check that backs up the channel.
    """

    def __init__(self, client: RedisClient, cluster: str,
                 on_change: Callable[[PublishedPolicy], Awaitable[None]], check_interval_s: float = 1.0) -> None:
        self._client = client
        # the cluster name is the hash tag: the publish script writes the revision and the
        # document together, which a Redis Cluster allows only within one slot
        self._key = "switchyard:{" + cluster + "}:policy"
        self._channel = f"{self._key}:changed"
        self._on_change = on_change
        self._interval = check_interval_s
        self._publish = client.register_script(_PUBLISH)
        self.seen_revision = 0
        """The highest revision handed to ``on_change`` (or published by this replica)."""
        self._healthy = True

    async def publish(self, text: str, digest: str, source: str) -> int:
        """Store and announce a change; its revision."""
        revision = int(await self._publish(keys=[f"{self._key}:rev", self._key],
                                           args=[text, digest, repr(time.time()), source, self._channel]))
        self.seen_revision = max(self.seen_revision, revision)
        return revision

    async def latest(self) -> PublishedPolicy | None:
        """The last published policy, if any."""
        fields = await self._client.hgetall(self._key)
        if not fields:
            return None
        value = {_text(k): _text(v) for k, v in fields.items()}
        return PublishedPolicy(int(value["rev"]), value["text"], value["digest"], float(value["ts"]),
                               value["source"])

    async def run(self) -> None:
        """Follow changes until cancelled; Redis outages are logged and waited out."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down or restarted: serve on, retry
                _stop_if_cancelled()  # a swallowed cancel can surface as a connection error
                if self._healthy:
                    log.warning("policy sync: Redis unavailable (%s); retrying", exc)
                self._healthy = False
                await asyncio.sleep(self._interval)

    async def _follow(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            await self._check()  # anything published while we were not listening
            _stop_if_cancelled()
            if not self._healthy:
                log.info("policy sync: Redis is back")
            self._healthy = True
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._interval)
                _stop_if_cancelled()
                if message is None or int(message["data"]) > self.seen_revision:
                    await self._check()
                    _stop_if_cancelled()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed in newer redis-py

    async def _check(self) -> None:
        raw = await self._client.get(f"{self._key}:rev")
        if raw is None or int(raw) <= self.seen_revision:
            return
        published = await self.latest()
        if published is None or published.revision <= self.seen_revision:
            return
        self.seen_revision = published.revision
        await self._on_change(published)


def _stop_if_cancelled() -> None:
    """Raise the cancel redis-py may have swallowed.

    Under Python 3.11, a cancel that lands while redis-py reads a reply can be absorbed by the
    timeout it wraps its reconnect in; the read then returns (or retries) and the loop would
    run on forever, hanging shutdown (measured: 10 of 300 cancels at random points). The task
    still counts the request, so check it after every Redis call of the loop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
