from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from router.base import RoutingRequest
from router.config import (
    CacheAwareConfig,
    ConsistentHashConfig,
    LeastLoadConfig,
    PowerOfTwoConfig,
    RandomConfig,
    RoundRobinConfig,
    SelectionConfig,
)
from router.policies import POLICIES, CacheAware, build_policy
from router.prefix_index import PrefixIndex, block_keys
from router.prompt_text import render_answer


@dataclass
class FakeWorker:
    """A WorkerView: plain data, as the pool's Worker exposes it."""

    id: str
    address: str
    load: int = 0
    capacity_tokens: int = 0


def workers(n: int) -> list[FakeWorker]:
    return [FakeWorker(f"pool/{i}", f"http://10.0.0.{i}:30000") for i in range(n)]


def request(prompt: str = "", head: int | None = None, sticky: str = "k") -> RoutingRequest:
    return RoutingRequest(model="m", tenant="t", sticky_key=sticky, prompt=prompt,
                          head_chars=len(prompt) if head is None else head)


CONFIGS: list[SelectionConfig] = [RoundRobinConfig(), RandomConfig(type="random"), LeastLoadConfig(type="least_load"),
           PowerOfTwoConfig(type="power_of_two"), ConsistentHashConfig(type="consistent_hash"),
           CacheAwareConfig(type="cache_aware")]


def test_every_policy_type_is_built_from_its_config() -> None:
    assert {c.type for c in CONFIGS} == set(POLICIES)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.type)
async def test_every_policy_picks_one_of_the_given_workers(config: object) -> None:
    policy = build_policy(config, random.Random(1))  # type: ignore[arg-type]
    pool = workers(3)
    for i in range(20):
        selection = await policy.select(request(f"prompt {i}" * 20), pool)
        assert selection.worker in pool and selection.reason
    single = workers(1)
    assert (await policy.select(request("x"), single)).worker is single[0]


async def test_round_robin_cycles() -> None:
    policy = build_policy(RoundRobinConfig())
    pool = workers(3)
    assert [(await policy.select(request(), pool)).worker.id for _ in range(6)] == [w.id for w in pool * 2]


async def test_least_load_and_power_of_two_avoid_the_busy_worker() -> None:
    pool = workers(3)
    pool[0].load, pool[1].load, pool[2].load = 9, 1, 5
    assert (await build_policy(LeastLoadConfig(type="least_load")).select(request(), pool)).worker is pool[1]
    p2c = build_policy(PowerOfTwoConfig(type="power_of_two"), random.Random(3))
    picks = Counter([(await p2c.select(request(), pool)).worker.id for _ in range(300)])
    assert picks["pool/0"] == 0, "the busiest worker loses every comparison it is sampled into"


async def test_consistent_hash_is_sticky_and_moves_only_the_removed_workers_keys() -> None:
    policy = build_policy(ConsistentHashConfig(type="consistent_hash"))
    pool = workers(5)
    keys = [f"user-{i}" for i in range(500)]
    before = {k: (await policy.select(request(sticky=k), pool)).worker.id for k in keys}
    assert before == {k: (await policy.select(request(sticky=k), pool)).worker.id for k in keys}
    assert min(Counter(before.values()).values()) > 60, "keys spread over every worker"
    after = {k: (await policy.select(request(sticky=k), pool[:2] + pool[3:])).worker.id for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "pool/2"}


# --- prefix index --------------------------------------------------------------------------


def test_block_keys_are_chained() -> None:
    a = block_keys("x" * 64 + "y" * 64, 64)
    b = block_keys("z" * 64 + "y" * 64, 64)
    assert len(a) == 2 and a[1] != b[1], "the same block after a different prefix is another key"
    assert block_keys("x" * 63, 64) == []


def test_index_matches_longest_prefix_per_worker_and_evicts_leaves_first() -> None:
    index = PrefixIndex(max_blocks_per_worker=4)
    keys = block_keys("abcd" * 16 * 6, 16)  # 24 blocks
    index.insert("w1", keys[:3])
    index.insert("w2", keys[:6])
    assert index.match(keys, ["w1", "w2", "w3"]) == {"w1": 3, "w2": 4, "w3": 0}, "w2 kept its 4 oldest-rooted blocks"
    index.remove_worker("w2")
    assert index.match(keys, ["w1", "w2"]) == {"w1": 3, "w2": 0}
    index.set_limit("w1", 1)
    assert index.match(keys, ["w1"]) == {"w1": 1}


# --- cache aware ---------------------------------------------------------------------------

SYSTEM = "You are a careful assistant for a GPU cluster. " * 30


def conversation(i: int, turns: int) -> str:
    text = SYSTEM + opening(i)
    for t in range(1, turns):
        text += render_answer(f"answer {t} for {i}") + f"follow-up {t} from {i}"
    return text


def opening(i: int) -> str:
    return f"user {i}: first question about node {i}?"


async def test_cache_aware_keeps_a_conversation_on_one_worker() -> None:
    policy = CacheAware(CacheAwareConfig(type="cache_aware"))
    pool = workers(4)
    head = len(SYSTEM + opening(7))
    first = await policy.select(request(conversation(7, 1), head), pool)
    policy.on_outcome(first.worker.id, request(conversation(7, 1), head), "answer 1 for 7")
    for turns in (2, 3, 4):
        later = await policy.select(request(conversation(7, turns), head), pool)
        # turn 2: the short answer leaves the block past the head unfilled in the tree, so the
        # placement table finds the conversation; later turns match their history in the tree
        assert later.worker is first.worker and later.reason in {"conversation_match", "shared_placement"}


async def test_cache_aware_spreads_new_conversations_evenly() -> None:
    """SGLang's router sends misses to the smallest tree; hashing the head spreads them."""
    policy = CacheAware(CacheAwareConfig(type="cache_aware"))
    pool = workers(4)
    picks: Counter[str] = Counter()
    for i in range(400):
        text = f"A different system prompt number {i}. " * 10
        picks[(await policy.select(request(text), pool)).worker.id] += 1
    assert min(picks.values()) > 60


async def test_two_replicas_agree_without_sharing_state() -> None:
    a, b = CacheAware(CacheAwareConfig(type="cache_aware")), CacheAware(CacheAwareConfig(type="cache_aware"))
    pool_a, pool_b = workers(4), list(reversed(workers(4)))  # order must not matter
    for i in range(50):
        text = conversation(i, 1)
        head = len(text)
        assert (await a.select(request(text, head), pool_a)).worker.id == \
               (await b.select(request(text, head), pool_b)).worker.id


async def test_load_imbalance_overrides_affinity() -> None:
    policy = CacheAware(CacheAwareConfig(type="cache_aware", balance_abs_threshold=4, balance_rel_threshold=1.5))
    pool = workers(3)
    text = conversation(1, 1)
    home = pool[pool.index((await policy.select(request(text), pool)).worker)]  # type: ignore[arg-type]
    home.load = 20
    selection = await policy.select(request(text), pool)
    assert selection.worker is not home and selection.reason == "load_imbalance"


async def test_diverted_conversation_follows_its_cache() -> None:
    policy = CacheAware(CacheAwareConfig(type="cache_aware", balance_abs_threshold=2, balance_rel_threshold=1.0))
    pool = workers(3)
    text = conversation(3, 2)
    head = len(SYSTEM + opening(3))
    first = await CacheAware(CacheAwareConfig(type="cache_aware")).select(request(text, head), pool)
    home = pool[pool.index(first.worker)]  # type: ignore[arg-type]
    home.load = 10  # busy when the conversation starts: it goes elsewhere
    diverted = await policy.select(request(text, head), pool)
    assert diverted.worker is not home and diverted.reason == "load_imbalance"
    home.load = 0
    longer = text + render_answer("more") + "and one more question"
    selection = await policy.select(request(longer, head), pool)
    assert selection.worker is diverted.worker and selection.reason == "conversation_match"
    assert selection.scores[selection.worker.id] > 0.5


async def test_unhealthy_worker_tree_is_dropped() -> None:
    policy = CacheAware(CacheAwareConfig(type="cache_aware"))
    pool = workers(2)
    selection = await policy.select(request(conversation(1, 1)), pool)
    assert policy.tree_size(selection.worker.id) > 0
    policy.on_worker_removed(selection.worker.id)
    assert policy.tree_size(selection.worker.id) == 0


@pytest.mark.parametrize(("chars_per_token", "blocks"), [(4.0, 10), (6.0, 15)])
async def test_capacity_bounds_the_tree(chars_per_token: float, blocks: int) -> None:
    policy = CacheAware(CacheAwareConfig(type="cache_aware", block_chars=16, chars_per_token=chars_per_token))
    pool = workers(1)
    pool[0].capacity_tokens = 40  # 40 tokens * chars_per_token / 16 chars per block
    for i in range(20):
        await policy.select(request(f"conversation {i} " * 30), pool)
    assert policy.tree_size("pool/0") == blocks


def test_index_slots_are_reused_and_owners_are_exact() -> None:
    index = PrefixIndex(max_blocks_per_worker=100)
    keys = block_keys("shared system prompt " * 20, 16)
    for worker in ("a", "b", "c"):
        index.insert(worker, keys)
    assert index.match(keys, ["a", "b", "c"]) == {"a": len(keys), "b": len(keys), "c": len(keys)}
    index.remove_worker("b")
    index.insert("d", keys[:3])  # takes b's free slot
    assert index.match(keys, ["a", "b", "c", "d"]) == {"a": len(keys), "b": 0, "c": len(keys), "d": 3}
    index.remove_worker("a")
    index.remove_worker("c")
    index.remove_worker("d")
    assert index._owners == {}, "no block outlives its last owner"


async def test_templated_conversations_do_not_herd_onto_one_worker() -> None:
    """Identical heads (templated system prompt and first message) from different users."""
    policy = CacheAware(CacheAwareConfig(type="cache_aware"))
    pool = workers(4)
    text = SYSTEM + "Summarise today's incidents."
    homes = Counter([(await policy.select(request(text, sticky=f"user-{i}"), pool)).worker.id
                     for i in range(200)])
    assert len(homes) == 4 and min(homes.values()) > 25
    again = [(await policy.select(request(text, sticky="user-7"), pool)).worker.id for _ in range(3)]
    assert len(set(again)) == 1, "one user's conversation keeps its home"
