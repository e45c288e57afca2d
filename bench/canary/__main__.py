"""Cost of the canary on the request path: ``python -m bench.canary [--redis URL]``.

Times ``assign`` (one split, mirror or plain model; with and without a sticky key) and
``record`` in a loop, next to a baseline measured in the same run: the dict lookup the
runtime does today for a model's version. Rounds alternate between the cases, so machine
noise hits each alike; medians are reported, in ns per call and as a ratio to the
baseline. With ``--redis``, also the background cost of flushing recorded outcomes to
Redis, per recorded request (CPU of this process, amortized over a batch, not on the
request path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from policies.canary import CanaryController, Outcome
from policies.loader import parse_policy

_POLICY = {
    "backends": {"api": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": {
        "plain": {"deployments": [{"backend": "api", "model": "p"}]},
        "split": {"versions": {"v1": {"deployments": [{"backend": "api", "model": "a"}]},
                               "v2": {"deployments": [{"backend": "api", "model": "b"}]}},
                  "stable": "v1", "canary": {"version": "v2", "plan": {}}},
        "mirror": {"versions": {"v1": {"deployments": [{"backend": "api", "model": "a"}]},
                                "v2": {"deployments": [{"backend": "api", "model": "b"}]}},
                   "stable": "v1", "canary": {"version": "v2", "shadow": True, "shadow_share": 0.1}},
    },
}


def _cases(controller: CanaryController, keys: list[str]) -> dict[str, Callable[[int], Any]]:
    versions = {"plain": "29c27e47ae3d", "split": "v1", "mirror": "v1"}
    assign, record = controller.assign, controller.record
    choice = assign("split", "some-user")
    ok = Outcome(ok=True, status=200, ttft_s=0.25, e2e_s=1.5)
    return {
        "baseline: versions[model] (dict lookup)": lambda i: versions["split"],
        "assign: model without a canary": lambda i: assign("plain", keys[i]),
        "assign: split, sticky key (hash)": lambda i: assign("split", keys[i]),
        "assign: split, no sticky key (random)": lambda i: assign("split", None),
        "assign: shadow mirror": lambda i: assign("mirror", keys[i]),
        "record: one outcome (batched in memory)": lambda i: record(choice, ok),
        "assign + record": lambda i: record(assign("split", keys[i]), ok),
    }


def _time(call: Callable[[int], Any], n: int) -> float:
    started = time.perf_counter_ns()
    for i in range(n):
        call(i)
    return (time.perf_counter_ns() - started) / n


async def _flush_cost(url: str, requests: int) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    cluster = f"bench-{uuid.uuid4().hex[:8]}"
    controller = CanaryController.create(client, cluster)
    try:
        await controller.activate(controller.bind(parse_policy(yaml.safe_dump(_POLICY))))
        rng = random.Random(0)
        for _ in range(requests):
            choice = controller.assign("split", f"user-{rng.randrange(10**6)}")
            controller.record(choice, Outcome(True, 200, rng.uniform(0.05, 2), rng.uniform(0.5, 20)))
        started = time.process_time_ns()
        await controller.flush()
        return (time.process_time_ns() - started) / requests
    finally:
        keys = [k async for k in client.scan_iter(f"switchyard:{cluster}:*")]
        if keys:
            await client.delete(*keys)
        await controller.aclose()
        await client.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    controller = CanaryController.create(None, rng=random.Random(0))
    await controller.activate(controller.bind(parse_policy(yaml.safe_dump(_POLICY))))
    keys = [f"session-{uuid.uuid4().hex}" for _ in range(args.calls)]
    cases = _cases(controller, keys)
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, call in cases.items():
            timings[name].append(_time(call, args.calls))
        controller._pending.clear()  # what the flush loop would do; keeps the batch small
    baseline = statistics.median(next(iter(timings.values())))
    rows = [{"case": name, "ns_per_call": round(statistics.median(v)), "ratio": round(statistics.median(v) / baseline, 1)}
            for name, v in timings.items()]
    result: dict[str, Any] = {"calls": args.calls, "rounds": args.rounds, "rows": rows}
    if args.redis:
        result["flush_to_redis_cpu_ns_per_request"] = round(await _flush_cost(args.redis, args.flush_requests))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians reported")
    parser.add_argument("--redis", help="also measure flushing to this Redis, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--flush-requests", type=int, default=2_000, help="outcomes per measured flush")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"{'case':<44} {'ns/call':>8} {'x baseline':>10}")
    for row in result["rows"]:
        print(f"{row['case']:<44} {row['ns_per_call']:>8} {row['ratio']:>10}")
    if "flush_to_redis_cpu_ns_per_request" in result:
        print(f"background flush to Redis: {result['flush_to_redis_cpu_ns_per_request']} ns CPU per recorded request")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
