"""Stored responses of the Responses door, per tenant, bounded and expiring.

A stored entry is what a later ``previous_response_id`` continues from: the conversation as
Responses input items (every earlier turn, flattened, so one read is enough) and the response
object itself (``GET /v1/responses/{id}`` answers it). Entries live in a ``gateway.stores``
key-value store: Redis when the gateway has one (every replica reads them), else this
process's memory. The key holds a digest of the tenant's name, so a tenant asking for another
tenant's id finds nothing: 404, the same answer as for an id that never existed.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec

from gateway.stores import CacheStore, MemoryCacheStore, RedisCacheStore
from policies.redis_client import RedisClient
from policies.responses_config import ResponsesConfig

__all__ = ["ResponseStore", "StoredResponse"]

log = logging.getLogger("switchyard.gateway")
NAMESPACE = "switchyard:responses"


class StoredResponse(msgspec.Struct, frozen=True):
    """One stored response and the conversation that led to it."""

    items: list[Any]
    """The input items the response answered, earlier turns included (Responses' shape)."""
    response: dict[str, Any]
    """The response object as the client received it."""

    def conversation(self) -> list[Any]:
        """What a request continuing from this response starts with: the input, then the output."""
        output = self.response.get("output")
        return [*self.items, *(output if isinstance(output, list) else [])]


_DECODER = msgspec.json.Decoder(StoredResponse)
_ENCODER = msgspec.json.Encoder()


class ResponseStore:
    """Per-tenant stored responses over a memory or Redis ``CacheStore``.

    Built once per app (its memory outlives policy reloads); the policy's ``responses``
    section is read on every call, so a reload changes the TTL and bounds. A changed
    ``max_entries`` starts a new memory store (Redis keeps its entries and trims to the bound).

    Args:
        client: The gateway's Redis client, or None for memory.
    """

    def __init__(self, client: RedisClient | None) -> None:
        self._client = client
        self._stores: dict[int, CacheStore] = {}

    def _store(self, config: ResponsesConfig) -> CacheStore:
        store = self._stores.get(config.max_entries)
        if store is None:
            self._stores = {config.max_entries: (
                RedisCacheStore(self._client, NAMESPACE, config.max_entries) if self._client is not None
                else MemoryCacheStore(config.max_entries))}
            store = self._stores[config.max_entries]
        return store

    async def get(self, tenant: str, response_id: str, config: ResponsesConfig) -> StoredResponse | None:
        """The tenant's stored response, or None (never stored, expired, or another tenant's)."""
        raw = await self._store(config).get(_key(tenant, response_id))
        if raw is None:
            return None
        try:
            return _DECODER.decode(raw)
        except msgspec.DecodeError:  # written by an incompatible version: as good as gone
            log.warning("stored response %s could not be read; treated as missing", response_id)
            return None

    async def put(self, tenant: str, stored: StoredResponse, config: ResponsesConfig) -> bool:
        """Keep ``stored`` for ``config.ttl_s``; False when it is larger than the bound."""
        response_id = str(stored.response.get("id", ""))
        data = _ENCODER.encode(stored)
        if len(data) > config.max_entry_bytes:
            log.warning("response %s not stored: %d bytes over responses.max_entry_bytes (%d)",
                        response_id, len(data), config.max_entry_bytes)
            return False
        await self._store(config).put(_key(tenant, response_id), data, config.ttl_s)
        return True


def _key(tenant: str, response_id: str) -> str:
    # a digest: tenant names may hold ':' and must not be readable from Redis key names
    return hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:32] + ":" + response_id
