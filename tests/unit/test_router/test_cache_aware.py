"""Placement of new conversations: prompt groups on a line, one slice per worker, kept even."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from router.base import RoutingRequest
from router.config import CacheAwareConfig
from router.hashing import stable_hash
from router.policies import CacheAware
from router.policies.cache_aware import ConversationLine, _PrefixSums
from router.prompt_text import render_answer


@dataclass
class FakeWorker:
    id: str
    address: str
    load: int = 0
    capacity_tokens: int = 0


def workers(n: int) -> list[FakeWorker]:
    return [FakeWorker(f"pool/{i}", f"http://10.0.0.{i}:30000") for i in range(n)]


def system_prompt(group: int) -> str:
    return f"\x1esystem\x1fYou are assistant {group}. " + f"Rules of desk {group}, in detail. " * 80


def first_turn(group: int, user: int) -> RoutingRequest:
    prompt = system_prompt(group) + f"\x1euser\x1fquestion {user} for desk {group}?"
    return RoutingRequest(model="m", tenant="t", sticky_key=f"user-{user}", prompt=prompt,
                          head_chars=len(prompt))


def next_turn(first: RoutingRequest, turn: int) -> RoutingRequest:
    prompt = first.prompt + render_answer(f"answer {turn}") + f"\x1euser\x1ffollow-up {turn}"
    return RoutingRequest(model="m", tenant="t", sticky_key=first.sticky_key, prompt=prompt,
                          head_chars=first.head_chars)


def cache_aware(**options: object) -> CacheAware:
    return CacheAware(CacheAwareConfig(type="cache_aware", **options))  # type: ignore[arg-type]


async def place(policy: CacheAware, requests: list[RoutingRequest],
                pool: list[FakeWorker]) -> list[str]:
    return [(await policy.select(r, pool)).worker.id for r in requests]


def shuffled_first_turns(groups: list[int], seed: int = 0) -> list[RoutingRequest]:
    """One first turn per entry of ``groups`` (its prompt group), in a random order."""
    order = list(enumerate(groups))
    random.Random(seed).shuffle(order)
    return [first_turn(group, user) for user, group in order]


def on_top_two(requests: list[RoutingRequest], picks: list[str]) -> float:
    """Share of conversations on one of the two workers that serve the most of their group."""
    pairs = Counter((r.prompt[:40], w) for r, w in zip(requests, picks, strict=True))
    groups = {r.prompt[:40] for r in requests}
    kept = sum(sum(sorted((n for (g, _), n in pairs.items() if g == group), reverse=True)[:2])
               for group in groups)
    return kept / len(requests)


@pytest.mark.parametrize("seed", range(3))
async def test_a_prompt_group_stays_on_few_workers_and_the_pool_stays_even(seed: int) -> None:
    pool = workers(4)
    requests = shuffled_first_turns([g for g in range(8) for _ in range(40)], seed)
    picks = await place(cache_aware(), requests, pool)
    counts = Counter(picks)
    assert max(counts.values()) / min(counts.values()) <= 1.15, counts
    assert on_top_two(requests, picks) >= 0.95
    # each conversation on its own: every worker serves every prompt
    assert on_top_two(requests, await place(cache_aware(group_chars=0), requests, pool)) < 0.7


async def test_one_large_group_spreads_over_the_pool() -> None:
    """A single shared system prompt (or templated heads): grouping must not herd."""
    pool = workers(4)
    requests = shuffled_first_turns([0] * 300 + [1] * 20)
    counts = Counter(await place(cache_aware(), requests, pool))
    assert len(counts) == 4 and max(counts.values()) / min(counts.values()) <= 1.25, counts


async def test_slices_follow_what_each_worker_started() -> None:
    """Groups of very different sizes: a hash alone would leave a worker with a big share."""
    pool = workers(4)
    requests = shuffled_first_turns([0] * 130 + [1] * 50 + [2] * 10 + [3] * 10, seed=3)
    counts = Counter(await place(cache_aware(), requests, pool))
    assert max(counts.values()) / min(counts.values()) <= 1.25, counts
    even = Counter(await place(cache_aware(balance_gain=0), requests, pool))
    assert max(even.values()) / min(even.values()) > 1.25, "the correction did the work"


async def test_turns_stay_and_only_first_turns_count() -> None:
    policy, pool = cache_aware(), workers(4)
    first = first_turn(1, 7)
    home = (await policy.select(first, pool)).worker
    policy.on_outcome(home.id, first, "answer 1")  # the history past the head: what only it has
    started = dict(policy._line._started)
    request = first
    for turn in range(1, 4):
        request = next_turn(request, turn)
        later = await policy.select(request, pool)
        assert later.worker is home and later.reason == "conversation_match"
    assert policy._line._started == started, "a later turn is not a new conversation"


async def test_replicas_place_the_same_traffic_alike() -> None:
    """Same hashes, counts of their own traffic: replicas that each see half mostly agree."""
    pool = workers(4)
    requests = shuffled_first_turns([g for g in range(6) for _ in range(50)], seed=5)
    a, b = cache_aware(), cache_aware()
    for i, request in enumerate(requests):  # a and b each see every other request
        await (a if i % 2 else b).select(request, pool)
    probes = [first_turn(g, 10_000 + u) for g in range(6) for u in range(20)]
    agree = sum(x == y for x, y in zip(await place(a, probes, pool[::-1]), await place(b, probes, pool),
                                       strict=True))
    assert agree >= 0.85 * len(probes)


def test_line_picks_depend_on_addresses_not_list_order() -> None:
    line_a, line_b = ConversationLine(1000, 3.0), ConversationLine(1000, 3.0)
    pool = workers(5)
    group = stable_hash("group")
    for i in range(100):
        point = i / 100
        a, b = line_a.pick(group, point, pool), line_b.pick(group, point, pool[::-1])
        assert a is b
        line_a.count(group, a.id)
        line_b.count(group, b.id)


def test_line_counts_fade_and_survive_rescaling() -> None:
    line = ConversationLine(10, 3.0)
    for _ in range(400):  # the unit grows by 10/9 a time: rescaled several times
        line.count(stable_hash("g"), "pool/0")
    assert line._unit < 1e12
    # 400 on pool/0 long ago, fading by 0.9 a conversation, then 30 recent ones on pool/1
    for _ in range(30):
        line.count(stable_hash("g"), "pool/1")
    assert line._started["pool/1"] > 20 * line._started["pool/0"]


def test_a_removed_worker_is_forgotten() -> None:
    line, pool = ConversationLine(1000, 3.0), workers(3)
    for _ in range(50):
        line.count(stable_hash("g"), "pool/2")
    line.forget("pool/2")
    assert "pool/2" not in line._started
    picks = {line.pick(stable_hash("g"), i / 50, pool[:2]).id for i in range(50)}
    assert picks == {"pool/0", "pool/1"}


@pytest.mark.parametrize("options", [{"balance_window": 5}, {"balance_gain": -1}, {"chars_per_token": 0.5},
                                     {"group_chars": -1}])
def test_placement_options_are_validated(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CacheAwareConfig(type="cache_aware", **options)  # type: ignore[arg-type]


def test_cache_threshold_is_deprecated_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="switchyard.policy"):
        CacheAwareConfig.model_validate({"type": "cache_aware"})
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="switchyard.policy"):
        config = CacheAwareConfig.model_validate({"type": "cache_aware", "cache_threshold": 0.7})
    assert config.cache_threshold == 0.7  # still loads
    assert "cache_threshold is deprecated and ignored" in caplog.text


async def test_a_retried_first_turn_counts_one_start() -> None:
    policy, pool = cache_aware(), workers(3)
    request = first_turn(1, 1)
    first = await policy.select(request, pool)
    before = dict(policy._line._started)
    retry = dataclasses.replace(request, retry=True)  # the first worker failed it
    second = await policy.select(retry, [w for w in pool if w.id != first.worker.id])
    assert second.worker.id != first.worker.id
    assert policy._line._started == before  # started once, not once per attempt
    await policy.select(first_turn(1, 2), pool)  # a new conversation still counts
    assert sum(policy._line._started.values()) > sum(before.values())


async def test_a_worker_that_joins_takes_new_conversations_first() -> None:
    """Issue 19: a new worker's cache is empty, so new conversations go to it first (its slice
    of the line widens while it has started fewer than its share), until it has caught up."""
    policy = cache_aware()
    pool = workers(3)
    before = [first_turn(group, user) for group, user in enumerate(range(60))]
    await place(policy, before, pool[:2])
    after = await place(policy, [first_turn(100 + i, 1000 + i) for i in range(30)], pool)
    counts = Counter(after)
    assert counts["pool/2"] > 2 * max(counts["pool/0"], counts["pool/1"]), counts


@given(st.lists(st.tuples(st.integers(0, 1023), st.floats(0.0, 1e6)), max_size=300), st.integers(0, 1024))
def test_the_lines_prefix_sums_equal_the_plain_sums(updates: list[tuple[int, float]], upto: int) -> None:
    buckets = [0.0] * 1024
    sums = _PrefixSums(1024)
    for index, value in updates:
        buckets[index] += value
        sums.add(index, value)
    expected = sum(buckets[:upto])
    assert abs(sums.before(upto) - expected) <= 1e-9 * max(1.0, expected)
    rebuilt = _PrefixSums(1024, buckets)
    assert abs(rebuilt.before(upto) - expected) <= 1e-9 * max(1.0, expected)
