"""Approximate prefix trees of what each worker holds in its KV cache, as chained block hashes.

A prompt is cut into blocks of ``block_chars``; a block's key hashes its text together with
the previous block's key, so one key stands for the whole prefix up to that block: a path
in a radix tree, stored as a flat dict. Matching walks the prompt's keys once for all
workers at the same time; its cost is O(blocks), whatever the number of cached prompts.

The keys use Python's per-process ``hash``: they never leave the process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


def block_keys(text: str, block_chars: int) -> list[int]:
    """Chained keys of the full blocks of ``text`` (a partial last block is not counted)."""
    keys: list[int] = []
    key = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        key = hash((key, text[start:start + block_chars]))
        keys.append(key)
    return keys


class PrefixIndex:
    """Which worker holds which prefix blocks; bounded per worker with LRU eviction.

    Args:
        max_blocks_per_worker: Memory bound of each worker's tree.
    """

    def __init__(self, max_blocks_per_worker: int) -> None:
        self._default_limit = max_blocks_per_worker
        self._owners: dict[int, set[str]] = {}
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._limits: dict[str, int] = {}

    def match(self, keys: list[int], workers: Iterable[str]) -> dict[str, int]:
        """Blocks of ``keys`` each worker already holds, counted from the start."""
        alive = set(workers)
        matched = dict.fromkeys(alive, 0)
        for depth, key in enumerate(keys):
            owners = self._owners.get(key)
            still = alive & owners if owners else set()
            for worker in alive - still:
                matched[worker] = depth
            alive = still
            if not alive:
                return matched
        for worker in alive:
            matched[worker] = len(keys)
        return matched

    def insert(self, worker: str, keys: list[int]) -> None:
        """Record that ``worker`` now holds the prefix ``keys``."""
        lru = self._lru.get(worker)
        if lru is None:
            lru = self._lru[worker] = OrderedDict()
        # newest last, root last: eviction takes a prefix's leaves before its root, as SGLang does
        for key in reversed(keys):
            if key in lru:
                lru.move_to_end(key)
            else:
                lru[key] = None
                self._owners.setdefault(key, set()).add(worker)
        self._evict(worker, lru)

    def set_limit(self, worker: str, blocks: int) -> None:
        """Bound one worker's tree (e.g. to its reported KV capacity)."""
        limit = min(blocks, self._default_limit)
        if self._limits.get(worker) != limit:
            self._limits[worker] = limit
            lru = self._lru.get(worker)
            if lru is not None:
                self._evict(worker, lru)

    def remove_worker(self, worker: str) -> None:
        """Forget a worker that left or turned unhealthy; its prefixes must be re-earned."""
        for key in self._lru.pop(worker, ()):
            self._drop(key, worker)
        self._limits.pop(worker, None)

    def size(self, worker: str) -> int:
        return len(self._lru.get(worker, ()))

    def _evict(self, worker: str, lru: OrderedDict[int, None]) -> None:
        limit = self._limits.get(worker, self._default_limit)
        while len(lru) > limit:
            key, _ = lru.popitem(last=False)
            self._drop(key, worker)

    def _drop(self, key: int, worker: str) -> None:
        owners = self._owners.get(key)
        if owners is not None:
            owners.discard(worker)
            if not owners:
                del self._owners[key]
