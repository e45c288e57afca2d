"""Time to first token of requests sent one at a time: ``python -m bench.overhead.alone``.

Section ``prefill`` of ``bench.overhead`` sends 10 requests a second, so what a request adds
there includes waiting behind the other requests' checks; here nothing else is in flight. A
simulator with SGLang's latency model (prefill, decode steps) on the client core, one gateway
on its own core serving every variant of ``bench.overhead.ablation`` (the production policy,
each feature off, the bare policy). Each round sends one streamed request straight to the
simulator, one through the featureless aiohttp proxy of ``bench.overhead.floor`` (relaying the
stream as it arrives, on the gateway's core) and one through each variant, in a shuffled
order, 50 ms apart, each with a prompt of ``--prompt-tokens`` tokens no other request
shares. Per target: the median over rounds of its time to first token minus that of the
direct request of the same round (a stream that ended without text, output moderation
blocking the simulator's word salad, is left out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from bench.overhead.ablation import VARIANTS, policy, report
from bench.overhead.loadgen import has_content, long_text, request_body
from bench.overhead.procs import CLIENT_CORE
from bench.overhead.stack import API_KEY, SIM_MODEL, start_floor, start_gateway, start_sim

RESULTS = Path(__file__).resolve().parents[1] / "results" / "overhead-alone.json"
DIRECT = "direct"
FLOOR = "featureless proxy (aiohttp)"


async def _ttft_ms(session: aiohttp.ClientSession, url: str, body: bytes, key: str) -> float | None:
    """Milliseconds from sending ``body`` to the first event with content; None when the stream
    had none (output moderation ended the simulator's word salad with ``content_filter``).

    The stream is read to its end, as a chat client reads it: a client that hangs up after
    the first token makes the gateway close its upstream connection mid-stream (as it must),
    so every next request through it would pay a new one."""
    started = time.perf_counter()
    first: float | None = None
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.content:
            if first is None and has_content(line):
                first = (time.perf_counter() - started) * 1000
    return first


async def _rounds(targets: dict[str, tuple[str, str, str]], rounds: int, prompt_tokens: int,
                  seed: int) -> dict[str, list[float | None]]:
    rng = random.Random(seed)
    times: dict[str, list[float | None]] = {name: [] for name in targets}
    async with aiohttp.ClientSession() as session:
        for round_ in range(-1, rounds):  # round -1 warms every path and is not kept
            order = list(targets)
            rng.shuffle(order)
            for name in order:
                url, model, key = targets[name]
                prompt = long_text(prompt_tokens, seed=rng.randrange(1 << 30))
                ttft = await _ttft_ms(session, url, request_body(model, True, 2, prompt), key)
                if round_ >= 0:
                    times[name].append(ttft)
                await asyncio.sleep(0.05)
            if round_ >= 0:
                print(f"round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1] or 0:.1f}" for n in order),
                      file=sys.stderr, flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead.alone", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--prompt-tokens", type=int, default=8000)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    if hasattr(os, "sched_setaffinity") and CLIENT_CORE < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {CLIENT_CORE})  # the client beside the simulator, as the load generator
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-alone-") as tmp:
        work = Path(tmp)
        sim = start_sim(work, zero_latency=False)
        path = work / "policy-alone.yaml"
        path.write_text(yaml.safe_dump(policy(sim.url), sort_keys=False), encoding="utf-8")
        gateway = start_gateway(work, path)
        floor = start_floor(work, "aiohttp", sim.url)
        try:
            targets = {DIRECT: (sim.url, SIM_MODEL, API_KEY), FLOOR: (floor.url, SIM_MODEL, API_KEY)}
            targets |= {name: (gateway.url, *VARIANTS[name]) for name in names}
            times = asyncio.run(_rounds(targets, args.rounds, args.prompt_tokens, args.seed))
        finally:
            floor.stop()
            gateway.stop()
            sim.stop()
    direct = times[DIRECT]
    summary = {DIRECT: {"ttft_p50_ms": statistics.median(t for t in direct if t is not None)}}
    lines = [(f"Run {started}, {args.rounds} rounds, one streamed request at a time, prompts of "
              f"{args.prompt_tokens} tokens (medians over rounds; added: the variant's TTFT minus the "
              "direct request's of the same round)."), "",
             "| target | TTFT p50 ms | added p50 ms | streams without text |", "|---|--:|--:|--:|",
             f"| direct to the simulator | {summary[DIRECT]['ttft_p50_ms']:.2f} | | {direct.count(None)} |"]
    for name in (FLOOR, *names):
        pairs = [(t, d) for t, d in zip(times[name], direct, strict=True) if t is not None and d is not None]
        added = statistics.median(t - d for t, d in pairs)
        without_text = times[name].count(None)
        summary[name] = {"ttft_p50_ms": statistics.median(t for t, _ in pairs), "added_p50_ms": added,
                         "without_text": without_text}
        lines.append(f"| {name} | {summary[name]['ttft_p50_ms']:.2f} | {added:.2f} | {without_text} |")
    report(lines, args, started, summary=summary, times_ms=times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
