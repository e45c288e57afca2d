from __future__ import annotations

import random
import time

from backends.sim.radix_cache import RadixCache


def test_match_after_insert() -> None:
    cache = RadixCache(100)
    assert cache.match_prefix([1, 2, 3]) == 0
    first = cache.insert([1, 2, 3, 4])
    assert first.length == 0
    assert cache.match_prefix([1, 2, 3, 4, 5]) == 4
    assert cache.match_prefix([1, 2, 9]) == 2
    assert cache.match_prefix([7]) == 0
    assert cache.total_tokens == 4


def test_insert_reports_already_cached_prefix_and_splits_edges() -> None:
    cache = RadixCache(100)
    cache.insert([1, 2, 3, 4])
    second = cache.insert([1, 2, 5, 6])
    assert second.length == 2
    assert cache.total_tokens == 6  # [1, 2] is shared after the split
    root_child = cache.root.children[1]
    assert root_child.key == [1, 2]
    assert sorted(root_child.children) == [3, 5]
    assert cache.match_prefix([1, 2, 3, 4]) == 4
    assert cache.match_prefix([1, 2, 5, 6]) == 4
    assert cache.insert([1, 2, 3, 4]).length == 4
    assert cache.total_tokens == 6


def test_match_in_the_middle_of_an_edge() -> None:
    cache = RadixCache(100)
    cache.insert([1, 2, 3, 4, 5])
    found = cache.match([1, 2, 3])
    assert found.length == 3
    assert found.node.key == [1, 2, 3]
    assert cache.total_tokens == 5


def test_lru_leaves_are_evicted_first() -> None:
    cache = RadixCache(12)
    cache.insert([1] * 4)
    cache.insert([2] * 4)
    cache.insert([3] * 4)
    cache.match_prefix([1] * 4)  # [1...] is now more recent than [2...]
    cache.insert([4] * 4)
    assert cache.match_prefix([2] * 4) == 0
    assert cache.match_prefix([1] * 4) == 4
    assert cache.match_prefix([3] * 4) == 4
    assert cache.match_prefix([4] * 4) == 4
    assert cache.total_tokens == 12


def test_inner_node_is_evicted_only_after_its_leaves() -> None:
    cache = RadixCache(10)
    cache.insert([1, 2, 3, 4])
    cache.insert([1, 2, 5, 6])  # [1, 2] is now an inner node with two leaves
    cache.insert([9] * 6)  # needs 2 more tokens: both leaves are older than [9...]
    assert cache.total_tokens <= 10
    assert cache.match_prefix([9] * 6) == 6
    assert cache.match_prefix([1, 2]) == 2  # the inner node survived its evicted leaf


def test_referenced_nodes_are_not_evicted() -> None:
    cache = RadixCache(8)
    pinned = cache.insert([1, 2, 3, 4])
    cache.inc_ref(pinned.node)
    assert cache.evictable_tokens == 0
    cache.insert([5, 6, 7, 8])
    cache.insert([9, 10, 11, 12])  # only [5..8] may go
    assert cache.match_prefix([1, 2, 3, 4]) == 4
    assert cache.match_prefix([5, 6, 7, 8]) == 0
    cache.dec_ref(pinned.node)
    assert cache.evictable_tokens == cache.total_tokens
    cache.insert([13, 14, 15, 16, 17, 18, 19])  # unpinned now, so [1..4] may go too
    assert cache.match_prefix([1, 2, 3, 4]) == 0
    assert cache.total_tokens <= 8


def test_reference_pins_the_whole_path() -> None:
    cache = RadixCache(8)
    cache.insert([1, 2, 3, 4])
    deep = cache.insert([1, 2, 3, 4, 5, 6])
    cache.inc_ref(deep.node)
    assert cache.evictable_tokens == 0
    cache.insert([7, 8, 9])  # nothing may be evicted: over capacity rather than drop a pin
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]) == 6
    cache.dec_ref(deep.node)
    assert cache.evictable_tokens == cache.total_tokens


def test_capacity_never_exceeded_after_eviction() -> None:
    rng = random.Random(7)
    cache = RadixCache(500)
    for _ in range(400):
        prefix = [rng.randrange(4) for _ in range(rng.randrange(0, 30))]
        cache.insert(prefix + [rng.randrange(1000) for _ in range(rng.randrange(1, 60))])
        assert cache.total_tokens <= 500
        assert cache.evictable_tokens == cache.total_tokens


def test_sequence_longer_than_capacity_is_cut() -> None:
    cache = RadixCache(10)
    cache.insert(list(range(25)))
    assert cache.total_tokens == 10
    assert cache.match_prefix(list(range(25))) == 10


def test_reset_empties_and_tolerates_old_references() -> None:
    cache = RadixCache(100)
    held = cache.insert([1, 2, 3])
    cache.inc_ref(held.node)
    cache.reset()
    assert cache.total_tokens == 0
    assert cache.match_prefix([1, 2, 3]) == 0
    cache.dec_ref(held.node)  # a request that outlived the flush
    assert cache.evictable_tokens == 0
    cache.insert([1, 2, 3])
    assert cache.evictable_tokens == 3


def test_four_thousand_token_prompt_is_fast() -> None:
    rng = random.Random(1)
    cache = RadixCache(200_000)
    system = [rng.randrange(100_000) for _ in range(3_000)]
    for _ in range(50):
        cache.insert(system + [rng.randrange(100_000) for _ in range(1_000)])
    prompt = system + [rng.randrange(100_000) for _ in range(1_000)]
    start = time.perf_counter()
    rounds = 100
    for _ in range(rounds):
        cache.match_prefix(prompt)
        cache.insert(prompt)
    per_call_ms = (time.perf_counter() - start) * 1000 / rounds
    assert per_call_ms < 1.0
