"""Approximate prefix trees of what each worker holds in its KV cache, as chained block hashes.

A prompt is cut into blocks of ``block_chars``; a block's key hashes its text together with
the previous block's key, so one key stands for the whole prefix up to that block: a path
in a radix tree, stored as a flat dict. Matching walks the prompt's keys once for all
workers at the same time; its cost is O(blocks), whatever the number of cached prompts.

The keys use Python's per-process ``hash``: they never leave the process.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

_EVICT_BATCH = 64
"""Evict down to ``limit - limit // _EVICT_BATCH`` at once: see ``PrefixIndex._evict``."""


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

    Owners of a block are a bitmask over worker slots (a plain ``int``), and each worker's LRU
    is a plain ``dict`` of block keys to ``None`` in recency order (a hit pops the key and
    inserts it again at the end). Neither holds anything but ints and ``None``, so the garbage
    collector does not track them at all. With a ``set`` per block a full collection over
    16 workers x 10k conversations took over a second, and with ``OrderedDict`` LRUs (which
    the collector tracks and walks) 409 ms: a stall of every stream in flight (docs/routing.md).

    Args:
        max_blocks_per_worker: Memory bound of each worker's tree.
    """

    def __init__(self, max_blocks_per_worker: int) -> None:
        self._default_limit = max_blocks_per_worker
        self._owners: dict[int, int] = {}
        self._lru: dict[str, dict[int, None]] = {}
        self._limits: dict[str, int] = {}
        self._slots: dict[str, int] = {}
        self._slot_workers: list[str | None] = []

    def match(self, keys: list[int], workers: Iterable[str]) -> dict[str, int]:
        """Blocks of ``keys`` each worker already holds, counted from the start."""
        matched: dict[str, int] = {}
        alive = 0
        for worker in workers:
            matched[worker] = 0
            slot = self._slots.get(worker)
            if slot is not None:
                alive |= 1 << slot
        owners = self._owners
        for depth, key in enumerate(keys):
            if not alive:
                return matched
            still = alive & owners.get(key, 0)
            if still != alive:
                self._record(alive & ~still, depth, matched)
                alive = still
        self._record(alive, len(keys), matched)
        return matched

    def _record(self, mask: int, depth: int, matched: dict[str, int]) -> None:
        while mask:
            low = mask & -mask
            worker = self._slot_workers[low.bit_length() - 1]
            if worker is not None:
                matched[worker] = depth
            mask ^= low

    def insert(self, worker: str, keys: list[int]) -> None:
        """Record that ``worker`` now holds the prefix ``keys``."""
        lru = self._lru.get(worker)
        if lru is None:
            lru = self._lru[worker] = {}
        bit = 1 << self._slot(worker)
        owners = self._owners
        # newest last, root last: eviction takes a prefix's leaves before its root, as SGLang does
        for key in reversed(keys):
            if key in lru:
                del lru[key]  # re-inserted below: a dict keeps insertion order, so this is recency
            else:
                owners[key] = owners.get(key, 0) | bit
            lru[key] = None
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
        slot = self._slots.pop(worker, None)
        if slot is not None:
            for key in self._lru.pop(worker, ()):
                self._drop(key, 1 << slot)
            self._slot_workers[slot] = None  # free for the next worker
        self._limits.pop(worker, None)

    def size(self, worker: str) -> int:
        return len(self._lru.get(worker, ()))

    def _slot(self, worker: str) -> int:
        slot = self._slots.get(worker)
        if slot is None:
            free = [i for i, w in enumerate(self._slot_workers) if w is None]
            slot = free[0] if free else len(self._slot_workers)
            if slot == len(self._slot_workers):
                self._slot_workers.append(worker)
            else:
                self._slot_workers[slot] = worker
            self._slots[worker] = slot
        return slot

    def _evict(self, worker: str, lru: dict[int, None]) -> None:
        """Evict the oldest blocks past the limit, a batch at a time.

        Iterating a dict from the front skips the slots its deletions left dead, until the
        next resize compacts it; evicting one key per insert would rescan them every time.
        A batch of ``limit // _EVICT_BATCH`` keys pays that scan once.
        """
        limit = self._limits.get(worker, self._default_limit)
        if len(lru) <= limit:
            return
        bit = 1 << self._slots[worker]
        excess = len(lru) - limit + limit // _EVICT_BATCH
        for key in list(islice(lru, excess)):
            del lru[key]
            self._drop(key, bit)

    def _drop(self, key: int, bit: int) -> None:
        owners = self._owners.get(key, 0) & ~bit
        if owners:
            self._owners[key] = owners
        else:
            self._owners.pop(key, None)
