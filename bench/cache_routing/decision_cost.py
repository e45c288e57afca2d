"""What one cache-aware decision costs with 16 workers and 10k cached conversations on each.

``CacheAware.select`` is called directly (no HTTP, no event loop: it never awaits, so the
coroutine is driven by hand) on prompts of 2-8k characters. Beside it, in the same process
and on the same prompts: ``RoundRobin.select`` (the floor of any decision), computing the
block keys alone, and placing on the line alone (two stable hashes and the line's slices). The index is filled first, one
``insert`` per conversation, as ``select`` would leave it.

Three kinds of prompt are timed, because matching stops early on a miss:

* ``next_turn``: a cached conversation's prompt plus an answer and a new user turn;
* ``new_conversation``: a cached system prompt with a first user turn nobody has seen;
* ``unknown``: text no worker holds.

GC stays on, as in the gateway. A full collection over the filled index is timed on its own:
it is what the event loop stalls for when Python runs one (docs/routing.md). So is one before
the index is filled: the part that imported modules cost, whatever the index does.
"""

from __future__ import annotations

import base64
import gc
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from router.base import RoutingRequest, Selection
from router.config import CacheAwareConfig, RoundRobinConfig
from router.policies import CacheAware, RoundRobin
from router.policies.cache_aware import _point
from router.prefix_index import block_keys
from router.prompt_text import render_answer


@dataclass(frozen=True)
class FakeWorker:
    """What a policy sees of a worker."""

    id: str
    address: str
    load: int = 0
    capacity_tokens: int = 0
    """0: unknown, so only ``max_blocks_per_worker`` bounds the tree."""


def _call(coro: Coroutine[Any, Any, Selection]) -> Selection:
    """Run a coroutine that never suspends, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: Selection = done.value
        return result
    raise RuntimeError("select suspended; this benchmark needs a policy that does not await")


def _text(rng: random.Random, chars: int) -> str:
    """``chars`` characters nobody else has (the content does not matter to the cost)."""
    return base64.b64encode(rng.randbytes(chars * 3 // 4 + 3)).decode()[:chars]


def _turn(role: str, text: str) -> str:
    return f"\x1e{role}\x1f{text}"


def _request(prompt: str, head_chars: int) -> RoutingRequest:
    return RoutingRequest(model="m", tenant="t", sticky_key="k", prompt=prompt, head_chars=head_chars)


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"p50_us": at(0.50), "p99_us": at(0.99), "max_us": ordered[-1] / 1000, "n": len(ordered)}


def run(*, workers: int = 16, conversations_per_worker: int = 10_000, probes: int = 3_000,
        seed: int = 0, block_chars: int = 64) -> dict[str, Any]:
    """Fill the index, then time the decision and the baselines; figures in microseconds."""
    gc.collect()  # garbage left by whatever ran before (the model's radix trees) is not the index's
    # what a full collection costs before the index exists: the objects of imported modules
    started_cpu = time.thread_time()
    gc.collect()
    empty_gc_cpu_ms = round((time.thread_time() - started_cpu) * 1000, 1)
    rng = random.Random(seed)
    pool = [FakeWorker(f"pool/{i}", f"http://10.0.0.{i}:30000") for i in range(workers)]
    config = CacheAwareConfig(type="cache_aware", block_chars=block_chars, max_blocks_per_worker=10**7)
    policy = CacheAware(config)
    systems = [_turn("system", _text(rng, rng.randint(1_500, 6_000))) for _ in range(64)]
    cached: list[tuple[str, int]] = []  # (prompt, head_chars) of some cached conversations
    per_worker = dict.fromkeys((w.id for w in pool), 0)
    started = time.perf_counter()
    for index in range(workers * conversations_per_worker):
        system = rng.choice(systems)
        prompt = system + _turn("user", _text(rng, rng.randint(500, 2_000)))
        # straight into the index, on the worker the line gives a new conversation (where
        # select would put it): 160k selects would only take longer
        request = _request(prompt, len(prompt))
        home = policy._line.pick(policy._group(request), _point(request), pool)
        policy._line.count(policy._group(request), home.id)
        policy._index.insert(home.id, block_keys(prompt, block_chars))
        per_worker[home.id] += 1
        if index % 50 == 0:
            cached.append((prompt, len(prompt)))
    fill_s = time.perf_counter() - started
    tree_blocks = [policy.tree_size(w.id) for w in pool]
    probe_set = _probes(rng, cached, systems, probes)
    result: dict[str, Any] = {
        "workers": workers, "conversations_per_worker": conversations_per_worker,
        "block_chars": block_chars, "fill_s": round(fill_s, 1),
        "conversations_on_a_worker": {"min": min(per_worker.values()), "max": max(per_worker.values())},
        "tree_blocks_per_worker": {"min": min(tree_blocks), "max": max(tree_blocks)},
        "prompt_chars": {"min": min(len(p) for _, p, _ in probe_set),
                         "max": max(len(p) for _, p, _ in probe_set)},
    }
    result["cache_aware"] = _time_select(policy, pool, probe_set)
    # the same decisions on fresh probes with the collector off: what GC adds to the tail
    gc.disable()
    try:
        result["cache_aware_gc_off"] = _time_select(policy, pool, _probes(rng, cached, systems, probes))
    finally:
        gc.enable()
    rr = RoundRobin(RoundRobinConfig())
    result["round_robin"] = _time_select(rr, pool, probe_set)
    result["block_keys_only"] = _time(lambda p, h: block_keys(p, block_chars), probe_set)
    result["line_only"] = _time(lambda p, h: _line_pick(policy, _request(p, h), pool), probe_set)
    started, started_cpu = time.perf_counter(), time.thread_time()
    gc.collect()
    result["full_gc_ms"] = round((time.perf_counter() - started) * 1000, 1)
    # on a shared machine the wall time includes being descheduled; the CPU time does not
    result["full_gc_cpu_ms"] = round((time.thread_time() - started_cpu) * 1000, 1)
    result["empty_gc_cpu_ms"] = empty_gc_cpu_ms
    return result


def _line_pick(policy: CacheAware, request: RoutingRequest, pool: list[FakeWorker]) -> object:
    return policy._line.pick(policy._group(request), _point(request), pool)


def _probes(rng: random.Random, cached: list[tuple[str, int]], systems: list[str],
            count: int) -> list[tuple[str, str, int]]:
    """(kind, prompt, head_chars), a third of each kind, shuffled; prompts of 2-8k chars."""
    out: list[tuple[str, str, int]] = []
    for index in range(count):
        kind = ("next_turn", "new_conversation", "unknown")[index % 3]
        if kind == "next_turn":
            prompt, head = rng.choice(cached)
            prompt += render_answer(_text(rng, 200)) + _turn("user", _text(rng, rng.randint(100, 600)))
            prompt = prompt[:8_000]
        elif kind == "new_conversation":
            prompt = rng.choice(systems) + _turn("user", _text(rng, rng.randint(500, 2_000)))
            head = len(prompt)
        else:
            prompt = _turn("system", _text(rng, rng.randint(2_000, 8_000)))
            head = len(prompt)
        out.append((kind, prompt, min(head, len(prompt))))
    rng.shuffle(out)
    return out


def _time_select(policy: CacheAware | RoundRobin, pool: list[FakeWorker],
                 probe_set: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Wall and CPU time of each decision, by kind of prompt, and the rule that decided it.

    The machine is shared: wall time includes being descheduled (a 4 ms tick), thread CPU
    time does not; both are reported.
    """
    requests = [(kind, _request(p, h)) for kind, p, h in probe_set]
    for _, request in requests[:200]:  # warm-up on a changed first block: nothing the probes share
        _call(policy.select(_request("warm-up" + request.prompt, request.head_chars), pool))
    wall: dict[str, list[int]] = {}
    cpu: dict[str, list[int]] = {}
    reasons: dict[str, int] = {}
    for kind, request in requests:
        started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
        selection = _call(policy.select(request, pool))
        elapsed_cpu, elapsed = time.thread_time_ns() - started_cpu, time.perf_counter_ns() - started
        for key in (kind, "all"):
            wall.setdefault(key, []).append(elapsed)
            cpu.setdefault(key, []).append(elapsed_cpu)
        reasons[f"{kind}:{selection.reason}"] = reasons.get(f"{kind}:{selection.reason}", 0) + 1
    return {
        "wall": {k: _percentiles(v) for k, v in sorted(wall.items())},
        "cpu": {k: _percentiles(v) for k, v in sorted(cpu.items())},
        "reasons": dict(sorted(reasons.items())),
    }


def _time(step: Any, probe_set: list[tuple[str, str, int]]) -> dict[str, Any]:
    wall, cpu = [], []
    for _, prompt, head in probe_set:
        started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
        step(prompt, head)
        cpu.append(time.thread_time_ns() - started_cpu)
        wall.append(time.perf_counter_ns() - started)
    return {"wall": {"all": _percentiles(wall)}, "cpu": {"all": _percentiles(cpu)}}


def render(result: dict[str, Any]) -> str:
    """A Markdown table of the decision-cost figures (wall time, and thread CPU time)."""
    lines = [
        (f"Decision cost: {result['workers']} workers x {result['conversations_per_worker']:,} cached "
         f"conversations (trees of {result['tree_blocks_per_worker']['min']:,}-"
         f"{result['tree_blocks_per_worker']['max']:,} blocks of {result['block_chars']} chars), "
         f"prompts of {result['prompt_chars']['min']:,}-{result['prompt_chars']['max']:,} chars"),
        "",
        "| step | prompts | p50 µs | p99 µs | max µs | CPU p50 µs | CPU p99 µs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("cache_aware", "cache_aware_gc_off", "round_robin", "block_keys_only", "line_only"):
        label = {"cache_aware_gc_off": "cache_aware.select, GC off", "cache_aware": "cache_aware.select",
                 "round_robin": "round_robin.select"}.get(name, name)
        for kind, wall in result[name]["wall"].items():
            cpu = result[name]["cpu"][kind]
            lines.append(f"| {label} | {kind} | {wall['p50_us']:.1f} | {wall['p99_us']:.1f} | "
                         f"{wall['max_us']:.1f} | {cpu['p50_us']:.1f} | {cpu['p99_us']:.1f} |")
    lines += ["", f"Rules that decided the probes: {result['cache_aware']['reasons']}",
              (f"A full `gc.collect()` over the filled index: {result['full_gc_ms']:.0f} ms "
              f"(thread CPU time {result.get('full_gc_cpu_ms', float('nan')):.0f} ms; "
              f"{result.get('empty_gc_cpu_ms', float('nan')):.0f} ms before the index was filled).")]
    return "\n".join(lines)
