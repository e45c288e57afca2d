"""Bounded key-value stores with expiry, for the response cache.

``MemoryCacheStore`` serves one process; ``RedisCacheStore`` is shared by every replica.
Both keep at most ``max_entries`` (least recently written go first) and expire entries after
their TTL. A store failure never fails a request: the cache answers "miss" and the
failure is logged and counted by the caller.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from policies.redis_client import RedisClient


class CacheStore(Protocol):
    """What the response cache needs from a store."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


class MemoryCacheStore:
    """An LRU dict with per-entry expiry, bounded in entries."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# One round trip: write the entry with its TTL, index it by time, drop the oldest over the bound.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  redis.call('DEL', unpack(old))
end
return excess
"""


class RedisCacheStore:
    """Entries as Redis strings with PX expiry; a sorted set per namespace bounds their number.

    Every key of a namespace carries the namespace as its hash tag (``{<namespace>}:<key>``,
    ``{<namespace>}:index``): the put script touches an entry and the index in one call, which a
    Redis Cluster runs only when both hash to one slot. A namespace (one model's cache, the
    stored responses) therefore lives on one cluster master; ``max_entries`` bounds its size.

    Args:
        client: A shared Redis or Redis Cluster client (its pool opens and closes with the app).
        namespace: Key prefix, e.g. ``switchyard:cache``; entries live at ``{<namespace>}:<key>``.
        max_entries: Bound over every replica together.
    """

    def __init__(self, client: RedisClient, namespace: str, max_entries: int) -> None:
        self._client = client
        self._namespace = "{" + namespace + "}"
        self._index = f"{self._namespace}:index"
        self._max_entries = max_entries
        self._put = client.register_script(_PUT)

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(f"{self._namespace}:{key}")
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._put(keys=[f"{self._namespace}:{key}", self._index],
                        args=[value, max(1, int(ttl_s * 1000)), time.time(), self._max_entries])
