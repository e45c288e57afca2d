"""``python -m bench.admission``: p50/p99 of ``Accounting.admit`` with and without Redis.

Prompts of ~1k and ~32k tokens; each figure is shown next to the cost of parsing the same
request body in the same run (the work every request already pays), as a ratio, since
machines are noisy. Redis must answer at ``--redis`` (127.0.0.1:6379 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from backends.types import ChatRequest
from gateway.accounting import Accounting, limit_stores, limits_client
from gateway.wire import parse_chat
from policies.document import Policy
from policies.keys import Caller, KeyRing, hash_key
from policies.loader import parse_policy
from policies.tokens import TokenCounter

WORDS = ("the gateway routes each request to a worker whose prefix cache holds its prompt while "
         "keeping load balanced across replicas and charging usage exactly once ").split()


def body(tokens: int, salt: str, last: str = "Summarise.", turns: int = 8) -> bytes:
    """A conversation of about ``tokens``; ``salt`` makes its history unique, ``last`` its new turn."""
    per_turn = max(1, tokens // turns)
    messages = [{"role": "system", "content": "You are a careful assistant."}]
    for i in range(turns):
        text = salt + " " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(per_turn))
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    messages.append({"role": "user", "content": last})
    return msgspec.json.encode({"model": "m", "messages": messages, "max_tokens": 256})


def policy_text(tenant_key: str) -> str:
    return f"""
backends: {{local: {{kind: sglang, workers: ["http://127.0.0.1:1"]}}}}
models:
  m:
    deployments: [{{backend: local, model: m}}]
    context: {{context_window: 200000, max_output_tokens: 4096, overflow_action: drop_oldest}}
    prices: {{input: 1.0, cached_input: 0.1, output: 4.0}}
tenants:
  t:
    rate_limits: {{rpm: 100000000, tpm: 100000000000}}
    budgets: {{daily_tokens: 100000000000, daily_usd: 100000000}}
    keys: [{{name: k, sha256: {hash_key(tenant_key)}}}]
"""


async def timed(inputs: list[Any], step: Callable[[Any], Awaitable[Any]]) -> list[float]:
    for item in inputs[:20]:  # warm-up on the first inputs
        await step(item)
    samples = []
    for item in inputs[20:]:
        start = time.perf_counter()
        await step(item)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    key = f"sy-bench-{uuid.uuid4().hex[:6]}"
    policy = parse_policy(policy_text(key))
    caller = KeyRing(policy).authenticate(f"Bearer {key}")
    counter = TokenCounter.load(["cl100k_base"])
    results: dict[str, Any] = {}
    stores: dict[str, Any] = {"memory": None}
    redis_client = limits_client(args.redis, policy.limits)
    try:
        await redis_client.ping()
        stores["redis"] = redis_client
    except Exception as exc:  # noqa: BLE001
        print(f"(no Redis at {args.redis}: {exc}; memory only)")
    for tokens in (1_000, 32_000):
        n = args.n if tokens < 10_000 else max(40, args.n // 8)
        # a new conversation every time (nothing remembered), and the next turn of one
        # conversation (its history resent, one new message): what multi-turn chat looks like
        fresh = [parse_chat(body(tokens, uuid.uuid4().hex)) for _ in range(n + 20)]
        history = uuid.uuid4().hex
        turns = [parse_chat(body(tokens, history, f"Turn {i}: what next?")) for i in range(n + 20)]
        raw = body(tokens, "parse")
        baseline = await timed([raw] * (n + 20), lambda b: asyncio.sleep(0, parse_chat(b)))
        counted = counter.count_chat(fresh[0].params.messages, None, policy.models["m"].tokens)
        row: dict[str, Any] = {"prompt_tokens": counted,
                               "parse_us": {"p50": pct(baseline, 50), "p99": pct(baseline, 99)}}
        for name, client in stores.items():
            for case, inputs in (("new", fresh), ("next_turn", turns)):
                counter = TokenCounter.load(["cl100k_base"])  # cold memory for each cell
                accounting = Accounting(counter, *limit_stores(client, policy.limits))
                samples = await timed(inputs, functools.partial(admit_once, accounting, policy, caller))
                row[f"{name}_{case}"] = {"p50": pct(samples, 50), "p99": pct(samples, 99),
                                         "ratio_p50_vs_parse": pct(samples, 50) / pct(baseline, 50)}
        results[f"{tokens}"] = row
    await redis_client.aclose()
    return results


async def admit_once(accounting: Accounting, policy: Policy, caller: Caller, call: ChatRequest) -> None:
    """Reserve (what is timed), then refund: an abandoned reservation would expire into a charge."""
    ticket = await accounting.admit(policy, caller, "m", call, uuid.uuid4().hex).reserve()
    ticket.refund()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=400, help="admissions per cell")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", default="bench/results/admission.json")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    columns = ("parse_us", "memory_new", "memory_next_turn", "redis_new", "redis_next_turn")
    print("| prompt | parse | memory, new conversation | memory, next turn | Redis, new conversation | Redis, next turn |")
    print("|---|---|---|---|---|---|")
    for row in results.values():
        cells = [f"{row[k]['p50']:.0f} / {row[k]['p99']:.0f} µs" if k in row else "-" for k in columns]
        print(f"| {row['prompt_tokens']} tokens | " + " | ".join(cells) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
