"""Affinity across replicas: a conversation's later turns reach its worker through any replica."""

from __future__ import annotations

import random

from router.base import RoutingRequest
from router.hashing import stable_hash
from router.placement import MemoryPlacementStore
from router.policies import CacheAware, build_policy
from tests.unit.test_router.test_cache_aware import (
    FakeWorker,
    cache_aware,
    first_turn,
    next_turn,
    system_prompt,
    workers,
)


def short_opening(group: int, user: int) -> RoutingRequest:
    """A first turn whose user message is a few characters: the head ends inside a block that
    is mostly the shared system prompt."""
    prompt = system_prompt(group) + f"\x1euser\x1fhi {user}"
    return RoutingRequest(model="m", tenant="t", sticky_key=f"user-{user}", prompt=prompt, head_chars=len(prompt))


def _replicas(count: int, shared: bool) -> list[CacheAware]:
    store = MemoryPlacementStore() if shared else None
    config = cache_aware()._config
    replicas = []
    for seed in range(count):
        policy = build_policy(config, random.Random(seed), store.view() if store else None)
        assert isinstance(policy, CacheAware)
        replicas.append(policy)
    return replicas


async def _second_turn_placement(replicas: list[CacheAware], pool: list[FakeWorker], opening: str) -> float:
    """Conversations opened on replica i % n, each second turn through the next replica: the
    share whose second turn reaches the worker that served its first."""
    make = short_opening if opening == "short" else first_turn
    firsts = [make(group, user) for user in range(240) for group in [user % 6]]
    homes = []
    for i, first in enumerate(firsts):
        homes.append((await replicas[i % len(replicas)].select(first, pool)).worker.id)
        # other traffic on the next replica: the same system prompts, other conversations
        await replicas[(i + 1) % len(replicas)].select(make(i % 6, 10_000 + i), pool)
    same = 0
    for i, (first, home) in enumerate(zip(firsts, homes, strict=True)):
        second = await replicas[(i + 1) % len(replicas)].select(next_turn(first, 1), pool)
        same += second.worker.id == home
    return same / len(firsts)


async def test_second_turns_through_another_replica_reach_their_worker() -> None:
    pool = workers(4)
    for count in (2, 3):
        for opening in ("short", "long"):
            share = await _second_turn_placement(_replicas(count, shared=True), pool, opening)
            assert share >= 0.95, (count, opening, share)


async def test_without_the_shared_table_replicas_disagree() -> None:
    """What the table fixes: each replica's own line places a conversation new to it."""
    share = await _second_turn_placement(_replicas(2, shared=False), workers(4), "short")
    assert share < 0.95


async def test_a_shared_system_prompt_is_not_a_conversations_history() -> None:
    """A short opening's head is almost all system prompt: a worker holding that prompt (for
    other conversations) does not hold this one, so the match does not count as its history."""
    pool = workers(4)
    replica = cache_aware()
    for user in range(40):  # the group's conversations, spread over the pool
        await replica.select(short_opening(3, user), pool)
    stranger = short_opening(3, 9_999)  # opened on another replica; this one never saw it
    second = await replica.select(next_turn(stranger, 1), pool)
    assert second.reason != "conversation_match"


async def test_a_replica_started_mid_traffic_follows_the_table() -> None:
    pool = workers(4)
    early, late = _replicas(2, shared=True)
    firsts = [short_opening(u % 5, u) for u in range(100)]
    homes = [(await early.select(first, pool)).worker.id for first in firsts]
    seconds = [next_turn(first, 1) for first in firsts]
    picks = [(await late.select(second, pool)) for second in seconds]
    assert [p.worker.id for p in picks] == homes
    assert {p.reason for p in picks} == {"shared_placement"}
    again = [(await late.select(next_turn(second, 2), pool)).reason for second in seconds]
    assert set(again) == {"conversation_match"}, "then its own tree knows them"


async def test_a_moved_conversation_is_followed_and_a_gone_worker_ignored() -> None:
    pool = workers(4)
    a, b = _replicas(2, shared=True)
    first = short_opening(1, 1)
    home = (await a.select(first, pool)).worker
    rest = [w for w in pool if w is not home]
    moved = await b.select(next_turn(first, 1), rest)  # its worker left b's selection set
    assert moved.worker is not home and moved.reason != "shared_placement"
    a.on_worker_removed(home.id)
    followed = await a.select(next_turn(next_turn(first, 1), 2), rest)  # the table says where
    assert followed.worker is moved.worker


async def test_replicas_sharing_starts_cut_the_same_slices() -> None:
    """Each replica counts the conversations the others started, so their lines agree: new
    conversations land alike whichever replica places them (a group stays on its workers)."""
    pool = workers(4)
    for shared, floor in ((True, 0.99), (False, 0.0)):
        replicas = _replicas(3, shared=shared)
        requests = [first_turn(g, u) for u in range(300) for g in [u % 7 if u % 3 else 0]]
        for i, request in enumerate(requests):  # each replica sees a third of the traffic
            await replicas[i % 3].select(request, pool)
        for replica in replicas:
            await replica._catch_up()
        probes = [(stable_hash(f"group {g}"), i / 97) for g in range(7) for i in range(97)]
        picks = [[r._line.pick(group, point, pool).id for group, point in probes] for r in replicas]
        agree = sum(a == b == c for a, b, c in zip(*picks, strict=True)) / len(probes)
        if shared:
            assert agree >= floor, agree
        else:
            assert agree < 0.99, "without shared starts each line has its own cuts"
