"""The benchmark's workload through a model of the sims, in one process: seconds, not minutes.

The real benchmark draws new worker URLs (random ports) every run, and balance under hashing
depends on that draw, so five runs say little about the odds. This replays the same seeded
schedule against four in-process models of ``switchyard sim --kind sglang``: the same radix
cache (``backends.sim.radix_cache``), tokenizer, chat template, generated answers and latency
model (prefill per uncached token, inter-token latency stretched by the running batch,
``max_running`` slots). The routing is the real policy classes, one instance per gateway
replica, with the client alternating requests between replicas, and ``load`` as the gateway
computes it (its own requests in flight). What it leaves out: HTTP, the event loop, the
gateway's own latency and the sims' queue report.

Usage::

    python -m bench.cache_routing.offline --seeds 0,1,2,3,4      # ~1 min
    python -m bench.cache_routing.offline --options '{"balance_gain": 2}'   # try an option
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import random
import statistics
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
import tiktoken
from pydantic import TypeAdapter

from backends.sim.radix_cache import RadixCache, RadixNode
from backends.sim.textgen import generate_words
from backends.types import Message
from bench.cache_routing.stack import SimSettings
from bench.cache_routing.workload import (
    ENCODING,
    Workload,
    WorkloadConfig,
    balanced_pins,
    generate,
    grouped_pins,
)
from router.base import RoutingRequest, Selection, SelectionPolicy
from router.config import RoundRobinConfig, SelectionConfig
from router.placement import MemoryPlacementStore
from router.policies import build_policy
from router.prompt_text import render_chat

_BASE_TTFT_MS = 2.0  # SimConfig.base_ttft_ms
_ITL_BATCH_FACTOR = 0.05  # SimConfig.itl_batch_factor


@dataclass(eq=False)
class _Sim:
    """One simulated worker: its cache, running slots and counters."""

    settings: SimSettings
    cache: RadixCache
    running: int = 0
    queue: list[Callable[[], None]] = field(default_factory=list)
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(eq=False)
class _View:
    """A ``WorkerView`` of one sim as one gateway replica sees it."""

    id: str
    address: str
    capacity_tokens: int
    load: int = 0


def _call(coro: Coroutine[Any, Any, Selection]) -> Selection:
    try:
        coro.send(None)
    except StopIteration as done:
        result: Selection = done.value
        return result
    raise RuntimeError("select suspended")


class _Run:
    """One replay of a workload: an event queue over the sims and the replicas' policies."""

    def __init__(self, workload: Workload, urls: list[str], settings: SimSettings,
                 policies: list[SelectionPolicy] | None, pins: list[int] | None) -> None:
        self.workload, self.settings = workload, settings
        self.encoding = tiktoken.get_encoding(ENCODING)
        self.sims = [_Sim(settings, RadixCache(settings.capacity_tokens)) for _ in urls]
        self.views = [[_View(f"w{i}", url, settings.capacity_tokens) for i, url in enumerate(urls)]
                      for _ in policies or ()]
        self.policies, self.pins = policies or [], pins
        self.events: list[tuple[float, int, Callable[[float], None]]] = []
        self.seq = 0
        self.sent = 0
        self.answers: dict[tuple[int, int], str] = {}
        self.waiting: dict[tuple[int, int], float] = {}  # turns due before the previous answer
        self.records: list[dict[str, Any]] = []

    def at(self, when: float, action: Callable[[float], None]) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, action))

    def run(self) -> list[dict[str, Any]]:
        for arrival in self.workload.schedule:
            self.at(arrival.at_s, functools.partial(self.due, conv=arrival.conversation, turn=arrival.turn))
        while self.events:
            now, _, action = heapq.heappop(self.events)
            action(now)
        return self.records

    def due(self, now: float, conv: int, turn: int) -> None:
        if turn and (conv, turn - 1) not in self.answers:
            self.waiting[(conv, turn - 1)] = now
        else:
            self.send(now, conv, turn)

    def send(self, now: float, conv: int, turn: int) -> None:
        messages = self.workload.messages(conv, turn, self.answers)
        replica = self.sent % max(1, len(self.policies))
        self.sent += 1
        record: dict[str, Any] = {"conversation": conv, "turn": turn, "sent_s": now, "reason": "",
                                  "replica": replica}
        if self.pins is not None:
            worker = self.pins[conv]
            done: Callable[[str], None] = lambda answer: None
        else:
            prompt, head = render_chat(msgspec.convert(messages, list[Message]))
            request = RoutingRequest(model="m", tenant="t", sticky_key=self.workload.conversations[conv].user,
                                     prompt=prompt, head_chars=head)
            policy, views = self.policies[replica], self.views[replica]
            selection = _call(policy.select(request, views))
            view = selection.worker
            assert isinstance(view, _View)
            view.load += 1
            worker, record["reason"] = views.index(view), selection.reason

            def done(answer: str, view: _View = view, policy: SelectionPolicy = policy,
                     request: RoutingRequest = request) -> None:
                view.load -= 1
                policy.on_outcome(view.id, request, answer)
        record["worker"] = worker
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n"
        sim = self.sims[worker]
        ids = self.encoding.encode_ordinary(text)
        answer = "".join(generate_words(0, text, self.workload.config.max_tokens))

        def start(now: float = now) -> None:
            self.admit(now, sim, ids, answer, record, lambda t: self.finish(t, sim, conv, turn, answer, done))

        if sim.running < self.settings.max_running:
            start()
        else:
            sim.queue.append(start)
        self.records.append(record)

    def admit(self, now: float, sim: _Sim, ids: list[int], answer: str, record: dict[str, Any],
              end: Callable[[float], None]) -> None:
        sim.running += 1
        match = sim.cache.match(ids)
        sim.cache.inc_ref(match.node)
        sim.requests += 1
        sim.prompt_tokens += len(ids)
        sim.cached_tokens += match.length
        record["prompt_tokens"], record["cached_tokens"] = len(ids), match.length
        prefill = (_BASE_TTFT_MS + (len(ids) - match.length) * self.settings.prefill_us_per_token / 1000) / 1000
        record["ttft_s"] = prefill
        holder: list[RadixNode] = [match.node]

        def prefilled(t: float) -> None:
            inserted = sim.cache.insert(ids)
            sim.cache.inc_ref(inserted.node)
            sim.cache.dec_ref(holder[0])
            holder[0] = inserted.node
            batch = 1 + _ITL_BATCH_FACTOR * (sim.running - 1)
            decode = (self.workload.config.max_tokens - 1) * self.settings.itl_ms * batch / 1000
            self.at(t + decode, finished)

        def finished(t: float) -> None:
            sim.cache.insert(ids + self.encoding.encode_ordinary(answer))
            sim.cache.dec_ref(holder[0])
            sim.running -= 1
            if sim.queue:
                sim.queue.pop(0)()
            end(t)

        self.at(now + prefill, prefilled)

    def finish(self, now: float, sim: _Sim, conv: int, turn: int, answer: str,
               done: Callable[[str], None]) -> None:
        self.answers[(conv, turn)] = answer
        done(answer)
        if (conv, turn) in self.waiting:
            del self.waiting[(conv, turn)]
            self.send(now, conv, turn + 1)


def simulate(workload: Workload, *, selection: SelectionConfig | None = None, replicas: int = 1,
             pins: list[int] | None = None, urls: list[str] | None = None,
             settings: SimSettings | None = None, shared_placements: bool = True) -> dict[str, Any]:
    """Replay ``workload`` once; the benchmark's figures for it.

    Args:
        selection: The policy every replica runs; ignored when ``pins`` is given.
        pins: A worker index per conversation (the references), bypassing the gateway.
        urls: The workers' addresses (what rendezvous hashing sees); default four on fixed ports.
    """
    settings = settings or SimSettings()
    urls = urls or [f"http://127.0.0.1:{30_000 + i}" for i in range(settings.workers)]
    # the replicas share one placement table, as gateways sharing a Redis do
    shared = MemoryPlacementStore() if replicas > 1 and shared_placements else None
    policies = None if pins is not None else [
        build_policy(selection or RoundRobinConfig(), random.Random(r), shared.view() if shared else None)
        for r in range(replicas)]
    run = _Run(workload, urls, settings, policies, pins)
    records = run.run()
    prompt = sum(s.prompt_tokens for s in run.sims)
    cached = sum(s.cached_tokens for s in run.sims)
    per_worker = [s.requests for s in run.sims]
    reasons: dict[str, int] = {}
    for record in records:
        reasons[record["reason"]] = reasons.get(record["reason"], 0) + 1
    ttfts = sorted(r["ttft_s"] for r in records)
    placement = _placement(records)
    uncached = [(r["turn"], r["prompt_tokens"] - r["cached_tokens"]) for r in records]
    systems = {(r["worker"], workload.conversations[r["conversation"]].system) for r in records}
    return {
        "hit_rate": cached / prompt,
        "uncached_per_request": (prompt - cached) / len(records),
        "requests_per_worker": per_worker,
        "max_min": max(per_worker) / max(1, min(per_worker)),
        "ttft_p50_ms": ttfts[len(ttfts) // 2] * 1000,
        "reasons": reasons,
        "uncached_first_turn": statistics.mean(u for t, u in uncached if t == 0),
        "uncached_later_turns": statistics.mean(u for t, u in uncached if t > 0),
        "system_prompts_per_worker": len(systems) / len(run.sims),
        **placement,
    }


def _placement(records: list[dict[str, Any]]) -> dict[str, float]:
    """How often a later turn went to the worker that served the conversation's previous turn
    (the one holding its history): over all later turns, and over those sent through another
    replica than the previous turn (what replicas must agree on)."""
    last: dict[int, tuple[int, int]] = {}
    same = other = same_ok = other_ok = 0
    for record in sorted(records, key=lambda r: (r["conversation"], r["turn"])):
        conv = record["conversation"]
        if conv in last:
            worker, replica = last[conv]
            ok = record["worker"] == worker
            if record["replica"] == replica:
                same, same_ok = same + 1, same_ok + ok
            else:
                other, other_ok = other + 1, other_ok + ok
        last[conv] = (record["worker"], record["replica"])
    return {"history_placement": (same_ok + other_ok) / max(1, same + other),
            "history_placement_other_replica": other_ok / other if other else float("nan")}


def draw_urls(rng: random.Random, workers: int) -> list[str]:
    """Worker URLs as the benchmark's sims get them: random free ports on 127.0.0.1."""
    return [f"http://127.0.0.1:{port}" for port in rng.sample(range(30_000, 61_000), workers)]


ROUTINGS = ("round_robin", "reference", "reference_grouped", "cache_aware")


def run_routing(workload: Workload, name: str, *, replicas: int = 1, urls: list[str] | None = None,
                settings: SimSettings | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row: a reference (pinned placement) or a selection policy with default options."""
    settings = settings or SimSettings()
    if name.startswith("reference"):
        place = grouped_pins if name == "reference_grouped" else balanced_pins
        return simulate(workload, pins=place(workload, settings.workers), urls=urls, settings=settings)
    config = _config(name, options or {})
    return simulate(workload, selection=config, replicas=replicas, urls=urls, settings=settings)


def seed_table(seeds: list[int], *, settings: SimSettings | None = None,
               options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per workload seed: round robin, both references and ``cache_aware`` with 1 and 2 replicas."""
    rows = []
    for seed in seeds:
        workload = generate(WorkloadConfig(seed=seed))
        urls = draw_urls(random.Random(seed), (settings or SimSettings()).workers)
        for name, replicas in [(n, 1) for n in ROUTINGS] + [("cache_aware", 2)]:
            row = run_routing(workload, name, replicas=replicas, urls=urls, settings=settings, options=options)
            rows.append({"seed": seed, "name": name, "replicas": replicas,
                         **{k: v for k, v in row.items() if k != "reasons"}})
    return rows


def render_seed_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per seed, uncached prefill per request (and its ratio to round robin) and balance."""
    lines = [("| seed | round_robin | reference | reference, grouped | cache_aware | ratio to round_robin "
             "| max/min | cache_aware, 2 replicas: hit rate vs 1 | max/min |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed in sorted({r["seed"] for r in rows}):
        by = {(r["name"], r["replicas"]): r for r in rows if r["seed"] == seed}
        rr, ca, ca2 = by[("round_robin", 1)], by[("cache_aware", 1)], by[("cache_aware", 2)]
        lines.append(
            f"| {seed} | {rr['uncached_per_request']:.0f} | {by[('reference', 1)]['uncached_per_request']:.0f} | "
            f"{by[('reference_grouped', 1)]['uncached_per_request']:.0f} | {ca['uncached_per_request']:.0f} | "
            f"{ca['uncached_per_request'] / rr['uncached_per_request']:.2f} | {ca['max_min']:.2f} | "
            f"{ca2['hit_rate']:.3f} vs {ca['hit_rate']:.3f} | {ca2['max_min']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_routing.offline", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="workload seeds, comma-separated")
    parser.add_argument("--options", default="{}", help="JSON of CacheAwareConfig options to try")
    parser.add_argument("--capacity-tokens", type=int, default=SimSettings.capacity_tokens)
    args = parser.parse_args(argv)
    settings = SimSettings(capacity_tokens=args.capacity_tokens)
    rows = seed_table([int(s) for s in args.seeds.split(",")], settings=settings, options=json.loads(args.options))
    print(render_seed_table(rows))
    return 0


def _config(name: str, options: dict[str, Any]) -> SelectionConfig:
    adapter: TypeAdapter[SelectionConfig] = TypeAdapter(SelectionConfig)
    return adapter.validate_python({"type": name, **(options if name == "cache_aware" else {})})


if __name__ == "__main__":
    raise SystemExit(main())
