"""The replicas' shared conversation placements (``router.placement``) in Redis.

One string per conversation, ``switchyard:placement:{<pool>}:<conversation key>`` holding the
worker's address, expiring ``ttl_s`` after the conversation was last placed or moved; and one
stream per pool, ``switchyard:line:{<pool>}`` (capped near ``max_starts`` entries), of the new
conversations each replica started (group, worker), which the others count on their lines
before they place a new conversation, so every replica cuts the same slices. Each command
touches one key, so a Redis Cluster spreads them by pool. Routing never waits long on it: a
call slower than ``timeout_s`` or failing counts as "not known" (the replica's own line
decides) and is logged once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

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

    def __init__(self, client: RedisClient, pool: str, ttl_s: float = 3600.0, timeout_s: float = 0.05,
                 max_starts: int = 10_000) -> None:
        self._client = client
        self._prefix = "switchyard:placement:{" + pool + "}:"
        self._stream = "switchyard:line:{" + pool + "}"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._timeout_s = timeout_s
        self._max_starts = max_starts
        self._origin = uuid.uuid4().hex[:12]
        self._cursor: str | None = None
        self._failing = False
        # concurrent catch-ups read one after another from the cursor the last read left, so
        # each start is returned once; a caller whom a read begun after it arrived has covered
        # reads nothing (a burst of new conversations costs two reads, not one each)
        self._reading = asyncio.Lock()
        self._reads_started = 0

    async def publish_start(self, group: str, worker_id: str) -> None:
        await self.record(None, (group, worker_id))

    async def record(self, placement: tuple[str, str] | None, start: tuple[str, str] | None) -> None:
        """The placement's SET and the start's XADD in one pipeline (both keys carry the pool's
        hash tag, so a Redis Cluster sends them to one node): a new conversation paid two
        round trips for them."""
        if placement is None and start is None:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                if placement is not None:
                    pipe.set(self._prefix + placement[0], placement[1], px=self._ttl_ms)
                if start is not None:
                    pipe.xadd(self._stream, {"g": start[0], "w": start[1], "o": self._origin},
                              maxlen=self._max_starts, approximate=True)
                await asyncio.wait_for(pipe.execute(), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - another replica places it by its own line
            self._failed(exc)
        else:
            self._failing = False

    async def starts_elsewhere(self) -> list[tuple[str, str]]:
        arrived = self._reads_started
        async with self._reading:
            if self._reads_started > arrived:  # a read begun since (and done) returned them
                return []
            self._reads_started += 1
            return await self._read_starts()

    async def _read_starts(self) -> list[tuple[str, str]]:
        try:
            if self._cursor is None:  # joining: the recent starts, newest 1,000, oldest first
                reply = await asyncio.wait_for(
                    self._client.xrevrange(self._stream, "+", "-", count=1000), self._timeout_s)
                entries = list(reversed(reply or []))
            else:
                reply = await asyncio.wait_for(
                    self._client.xrange(self._stream, f"({self._cursor}", "+", count=1000), self._timeout_s)
                entries = list(reply or [])
        except Exception as exc:  # noqa: BLE001 - counted later, or never: the line drifts a little
            self._failed(exc)
            return []
        self._failing = False
        if entries and entries[-1][0] is not None:
            self._cursor = _text(entries[-1][0])
        elif self._cursor is None:
            self._cursor = "0-0"
        starts = []
        for _, fields in entries:
            values = {_text(k): _text(v) for k, v in (fields or {}).items()}
            if values.get("o") != self._origin and "g" in values and "w" in values:
                starts.append((values["g"], values["w"]))
        return starts

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
        await self.record((key, address), None)

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("shared placements unavailable (%r); replicas route new-to-them turns by their own line",
                        exc)
        self._failing = True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
