"""The prefix index's LRU: recency by re-insertion, batched eviction, nothing for the GC to walk."""

from __future__ import annotations

import gc

from router.prefix_index import PrefixIndex, block_keys


def test_a_block_used_again_outlives_older_ones() -> None:
    index = PrefixIndex(max_blocks_per_worker=4)
    a = block_keys("a" * 32, 16)  # 2 blocks
    b = block_keys("b" * 32, 16)
    index.insert("w", a)
    index.insert("w", b)
    index.insert("w", a)  # a is the most recent again
    index.insert("w", block_keys("c" * 32, 16))
    assert index.match(a, ["w"]) == {"w": 2}
    assert index.match(b, ["w"]) == {"w": 0}, "b was the least recently used"


def test_eviction_takes_a_batch_of_the_oldest_blocks() -> None:
    index = PrefixIndex(max_blocks_per_worker=640)  # batches of 640 // 64 = 10 blocks
    prompts = [block_keys(f"{i:04d}" * 4, 16) for i in range(641)]  # one block each
    for keys in prompts:
        index.insert("w", keys)
    assert index.size("w") == 630
    assert [index.match(k, ["w"])["w"] for k in prompts[:11]] == [0] * 11
    assert all(index.match(k, ["w"])["w"] == 1 for k in prompts[11:])


def test_eviction_keeps_owners_exact() -> None:
    index = PrefixIndex(max_blocks_per_worker=128)
    for i in range(1000):
        keys = block_keys(f"conversation {i:05d} " * 8, 16)
        index.insert("a", keys)
        index.insert("b", keys[:2])
    assert index.size("a") <= 128 and index.size("b") <= 128
    assert all(index._owners.values()), "a block nobody holds is dropped, not left at 0"
    held = {key for lru in index._lru.values() for key in lru}
    assert held == set(index._owners)


def test_the_index_gives_the_garbage_collector_nothing_to_walk() -> None:
    """A tracked container per worker made a full collection take 409 ms (docs/routing.md)."""
    index = PrefixIndex(max_blocks_per_worker=1000)
    for i in range(200):
        index.insert(f"w{i % 4}", block_keys(f"prompt {i} " * 40, 16))
    gc.collect()
    assert not gc.is_tracked(index._owners)
    assert not any(gc.is_tracked(lru) for lru in index._lru.values())
