"""Shared state: in memory for one process, in Redis when replicas must agree."""

from __future__ import annotations

from gateway.stores.cache_store import CacheStore, MemoryCacheStore, RedisCacheStore

__all__ = ["CacheStore", "MemoryCacheStore", "RedisCacheStore"]
