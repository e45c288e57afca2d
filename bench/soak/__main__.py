"""Soak: mixed traffic at a fixed rate through one gateway process, watching it for leaks.

Usage: ``python -m bench.soak [--minutes 10] [--rate 100] [--quick]``.

Two simulated SGLang workers (2 ms between tokens) and one ``switchyard serve`` process,
each its own process as operators run them; the gateway routes cache-aware, caches
deterministic answers, counts tokens, clamps to a context budget, keeps rate limits and
writes an access line per request. The soak sends the mix of ``bench/soak/traffic.py`` open
loop and samples the gateway's RSS, open file descriptors, threads and asyncio tasks every
few seconds. Bars (issue 9): zero errors, RSS after warm-up grows less than 10 %, descriptors
and tasks do not grow, nothing is left in flight once the traffic stops. Results:
``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml

from bench.overhead.__main__ import background_load, describe_code, run_header
from bench.overhead.loadgen import Recorder, percentiles
from bench.overhead.procs import (
    CLIENT_CORE,
    GATEWAY_CORE,
    REPO,
    Service,
    bin_path,
    free_port,
    pinned,
    start,
)
from bench.overhead.stack import SIM_MODEL, bench_policy, gateway_argv
from bench.soak.sampler import IN_FLIGHT, Sampler, gauges
from bench.soak.traffic import MIX, Traffic, new_session

RSS_BAR = 0.10
FD_TOLERANCE = 8
"""Descriptors may differ by a few pooled keep-alive connections between two minutes."""
TASK_TOLERANCE = 8
"""Tasks follow the requests in flight (about 5 at 100 req/s): two minutes' medians may differ
by a few."""


def soak_policy(sim_urls: list[str]) -> dict[str, Any]:
    """The overhead benchmark's policy, with the features whose state could grow turned on."""
    document: dict[str, Any] = bench_policy(sim_urls[0])
    document["version"] = "bench-soak"
    document["backends"]["sim"].update(workers=sim_urls, selection={"type": "cache_aware"})
    model = next(iter(document["models"].values()))
    model.update(response_cache={"enabled": True, "ttl_s": 30, "max_entries": 1000},
                 prices={"input": 0.15, "output": 0.6},
                 context={"context_window": 8192, "max_output_tokens": 64})
    tenant = next(iter(document["tenants"].values()))
    tenant["rate_limits"] = {"rpm": 1_000_000, "tpm": 1_000_000_000}
    return document


def start_services(stack: contextlib.ExitStack, workdir: Path) -> tuple[Service, list[Service]]:
    sims = []
    for i in range(2):
        port = free_port()
        argv = [bin_path("switchyard"), "sim", "--kind", "sglang", "--port", str(port), "--model", SIM_MODEL,
                "--worker-id", f"soak-{i}", "--itl-ms", "2", "--base-ttft-ms", "2", "--max-running", "256",
                "--enable-cache-report"]
        sim = start(f"sim-{i}", pinned(CLIENT_CORE, argv), f"http://127.0.0.1:{port}", workdir / "logs",
                    ready_path="/health")
        stack.callback(sim.stop)
        sims.append(sim)
    policy = workdir / "policy.yaml"
    policy.write_text(yaml.safe_dump(soak_policy([s.url for s in sims]), sort_keys=False), encoding="utf-8")
    port = free_port()
    gateway = start("gateway", pinned(GATEWAY_CORE, gateway_argv("uvicorn", policy, port)),
                    f"http://127.0.0.1:{port}", workdir / "logs", ready_path="/readyz",
                    env={"SWITCHYARD_ACCESS_LOG": str(workdir / "access.log")})
    stack.callback(gateway.stop)
    return gateway, sims


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def soak(gateway: Service, sims: list[Service], args: argparse.Namespace) -> dict[str, Any]:
    sampler = Sampler(gateway.pid, gateway.url + "/metrics")
    traffic = Traffic(gateway.url, args.rate, seed=args.seed)
    duration = args.minutes * 60
    async with new_session() as session, aiohttp.ClientSession() as probe:
        first = time.perf_counter()
        recorder = Recorder(first, first + duration + 120)  # every request counts, warm-up included
        sampler.restart_clock()
        await sampler.take(probe)

        async def sample_until_done(done: asyncio.Event) -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), args.interval)
                sample = await sampler.take(probe)
                if int(sample.t_s) % 60 < args.interval:
                    _log(f"t={sample.t_s:5.0f}s sent={traffic.sent} errors={recorder.errors} "
                         f"rss={sample.rss_kb / 1024:.1f} MiB fds={sample.fds} tasks={sample.tasks} in_flight={sample.in_flight} "
                         f"load={sample.loadavg_1m}")

        done = asyncio.Event()
        watcher = asyncio.create_task(sample_until_done(done))
        await traffic.run(session, recorder, first + duration)
        ended = time.perf_counter()
        await asyncio.sleep(args.idle)  # let streams finish, pools settle
        done.set()
        await watcher
        final = await sampler.take(probe)
        leftovers = await _leftovers(probe, gateway, sims)
    return report(args, traffic, recorder, sampler, first, ended - first, final.in_flight, leftovers)


async def _leftovers(session: aiohttp.ClientSession, gateway: Service, sims: list[Service]) -> dict[str, float]:
    """What is still running after the traffic stopped: anything above zero is a leak."""
    out: dict[str, float] = {}
    async with session.get(gateway.url + "/metrics") as response:
        out["gateway_in_flight"] = gauges(await response.text(), (IN_FLIGHT,)).get(IN_FLIGHT, 0.0)
    for sim in sims:
        async with session.get(sim.url + "/metrics") as response:
            running = gauges(await response.text(), ("sglang:num_running_reqs", "sglang:num_queue_reqs"))
        out[f"{sim.name}_running"] = sum(running.values())
    return out


def report(args: argparse.Namespace, traffic: Traffic, recorder: Recorder, sampler: Sampler, first: float,
           sent_for_s: float, in_flight: float | None, leftovers: dict[str, float]) -> dict[str, Any]:
    warmup = args.warmup if args.warmup is not None else min(60.0, args.minutes * 60 / 5)
    memory = sampler.summary(warmup)
    by_minute: dict[int, list[float]] = {}
    for s in recorder.samples:
        by_minute.setdefault(int((s.done - first) // 60), []).append(s.latency)
    passed = {
        "zero_errors": recorder.errors == 0,
        "rss_growth_under_10pct": bool(memory.get("rss_growth", 1.0) < RSS_BAR),
        "no_fd_growth": bool(memory.get("fds_growth", FD_TOLERANCE + 1) <= FD_TOLERANCE),
        "no_task_growth": bool(memory.get("tasks_growth", TASK_TOLERANCE + 1) <= TASK_TOLERANCE),
        "nothing_left_in_flight": all(v == 0 for v in leftovers.values()),
        "load_generator_kept_up": traffic.lag_max_s < 1.0,
    }
    return {
        "requests_sent": traffic.sent, "achieved_rate": round(traffic.sent / sent_for_s, 1),
        "answered_ok": len(recorder.samples) + traffic.abandoned, "abandoned_streams": traffic.abandoned,
        "errors": recorder.errors, "first_error": recorder.first_error or None, "kinds": traffic.kinds,
        "latency_ms": percentiles([s.latency for s in recorder.samples]),
        "ttft_ms": percentiles([s.ttft for s in recorder.samples if s.ttft is not None]),
        "latency_ms_by_minute": {m: {k: round(v, 1) for k, v in percentiles(lat).items() if k in ("p50", "p99")}
                                 for m, lat in sorted(by_minute.items())},
        "send_lag_max_ms": round(traffic.lag_max_s * 1000, 1),
        "process": memory, "leftovers": leftovers, "in_flight_at_end": in_flight,
        "passed": passed, "samples": sampler.rows(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, open loop")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before growth is measured (default: 60, or a fifth of a shorter run)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to wait after the traffic stops")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 minute at 50 req/s")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON output (default bench/results/soak.json; soak-quick.json with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.rate = 1.0, 50.0
    if args.results is None:
        args.results = REPO / "bench/results" / ("soak-quick.json" if args.quick else "soak.json")
    started, code, background = time.time(), describe_code(), background_load()
    with tempfile.TemporaryDirectory(prefix="switchyard-soak-") as tmp, contextlib.ExitStack() as stack:
        gateway, sims = start_services(stack, Path(tmp))
        _log(f"soak: {args.minutes:g} min at {args.rate:g} req/s, mix {dict(MIX)}")
        measured = uvloop.run(soak(gateway, sims, args))
        access_lines = sum(1 for _ in (Path(tmp) / "access.log").open())
    result = {
        **run_header("bench/soak", started, code, background),
        "settings": {"minutes": args.minutes, "rate": args.rate, "interval_s": args.interval,
                     "seed": args.seed, "mix": dict(MIX)},
        "access_lines": access_lines, **measured,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    summary = {k: measured[k] for k in ("requests_sent", "errors", "first_error", "passed")}
    print(json.dumps({**summary, "process": {k: v for k, v in measured["process"].items()
                                             if not isinstance(v, dict)}}, indent=2))
    _log(f"results written to {args.results}")


if __name__ == "__main__":
    main()
