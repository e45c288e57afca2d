"""The replicas' shared conversation placements (``router.placement``) in Redis.

One string per conversation, ``switchyard:placement:{<pool>}:<conversation key>`` holding the
worker's address, expiring ``ttl_s`` after the conversation was last placed or moved. Each
command touches one key, so a Redis Cluster spreads them by pool. Routing never waits long on
it: a call slower than ``timeout_s`` or failing counts as "not known" (the replica's own line
decides) and is logged once per outage.
"""

from __future__ import annotations

import asyncio
import logging

from policies.redis_client import RedisClient

log = logging.getLogger("switchyard.routing")


class RedisPlacementStore:
    """Conversation key to worker address, shared by every replica of a pool.

    Args:
        client: The process's Redis (or Redis Cluster) client.
        pool: The policy backend's name (part of the key: pools never share conversations).
        ttl_s: How long an idle conversation's placement is kept.
        timeout_s: Longest wait on the request path.
    """

    def __init__(self, client: RedisClient, pool: str, ttl_s: float = 3600.0, timeout_s: float = 0.05) -> None:
        self._client = client
        self._prefix = "switchyard:placement:{" + pool + "}:"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._timeout_s = timeout_s
        self._failing = False

    async def get(self, key: str) -> str | None:
        try:
            value = await asyncio.wait_for(self._client.get(self._prefix + key), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - unknown placement: the line decides
            self._failed(exc)
            return None
        self._failing = False
        if isinstance(value, bytes):
            return value.decode()
        return value if isinstance(value, str) else None

    async def put(self, key: str, address: str) -> None:
        try:
            await asyncio.wait_for(self._client.set(self._prefix + key, address, px=self._ttl_ms), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - another replica will place it by its own line
            self._failed(exc)
        else:
            self._failing = False

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("shared placements unavailable (%r); replicas route new-to-them turns by their own line",
                        exc)
        self._failing = True
