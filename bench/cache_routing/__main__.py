"""Run the cache-routing benchmark: every policy, one and two replicas, the reference, SGLang's router.

Usage::

    python -m bench.cache_routing                    # everything (~25 min), then the chart
    python -m bench.cache_routing --quick            # a small workload, to try the harness
    python -m bench.cache_routing --decision-cost    # only the per-decision micro-benchmark
    python -m bench.cache_routing --policies cache_aware,round_robin --replicas 1
    python -m bench.cache_routing --seed 3 --policies round_robin,cache_aware --replicas 1 \
        --no-sglang-router --skip-decision-cost --out bench/results/cache_routing-seed3.json
    python -m bench.cache_routing --seed-table bench/results/cache_routing.json bench/results/cache_routing-seed*.json

Starts four ``switchyard sim`` SGLang workers once, then for each run flushes their caches,
starts fresh gateway processes (cold prefix trees), replays the same seeded schedule and
reads the sims' counters. Prints Markdown tables, writes ``bench/results/cache_routing.json``
(after every run, so an interrupted run keeps what it measured) and ``docs/img/cache_routing.png``.
Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cache_routing import decision_cost, offline
from bench.cache_routing.balance import home_spread
from bench.cache_routing.replay import Route, replay
from bench.cache_routing.report import (
    judge,
    plot,
    render_bars,
    render_seed_rows,
    render_table,
    summarise,
)
from bench.cache_routing.stack import (
    API_KEY,
    POLICIES,
    PUBLIC_MODEL,
    SIM_MODEL,
    SimSettings,
    flush,
    has_sglang_router,
    running,
    sim_stats,
    start_gateways,
    start_sglang_routers,
    start_sims,
)
from bench.cache_routing.workload import (
    Workload,
    WorkloadConfig,
    balanced_pins,
    generate,
    grouped_pins,
)
from bench.overhead.procs import REPO, Service, core_busy_seconds

RESULTS = REPO / "bench" / "results"
CHART = REPO / "docs" / "img" / "cache_routing.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_routing", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=WorkloadConfig.rate, help="requests/s (Poisson)")
    parser.add_argument("--conversations", type=int, default=WorkloadConfig.conversations)
    parser.add_argument("--capacity-tokens", type=int, default=SimSettings.capacity_tokens)
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated selection types")
    parser.add_argument("--replicas", default="1,2", help="gateway replica counts to run, e.g. 1,2")
    parser.add_argument("--no-reference", action="store_true", help="skip the pinned reference")
    parser.add_argument("--no-sglang-router", action="store_true", help="skip SGLang's router")
    parser.add_argument("--capacity-sweep", default="",
                        help="comma-separated sim capacities: instead of the main runs, run both "
                             "references, round_robin and cache_aware (1 replica) at each")
    parser.add_argument("--decision-cost", action="store_true", help="only the micro-benchmark")
    parser.add_argument("--skip-decision-cost", action="store_true")
    parser.add_argument("--skip-model", action="store_true",
                        help="skip the five-seed run of the in-process model (bench.cache_routing.offline)")
    parser.add_argument("--seed-table", nargs="+", type=Path, default=None, metavar="JSON",
                        help="only print the per-seed table of these results files")
    parser.add_argument("--quick", action="store_true", help="40 conversations: try the harness")
    parser.add_argument("--first-user-tokens", default="",
                        help="LOW,HIGH tokens of each conversation's opening user turn (e.g. 3,12: "
                             "short openings); default: like every other user turn")
    parser.add_argument("--redis-url", default="",
                        help="REDIS_URL for the gateway replicas (shared placements); its "
                             "switchyard:placement:* and switchyard:line:* keys are deleted before each run")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--chart", type=Path, default=None, help="PNG chart (full runs only by default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed_table:
        print(render_seed_rows([json.loads(p.read_text()) for p in args.seed_table]))
        return 0
    out = args.out or RESULTS / ("cache_routing-quick.json" if args.quick else "cache_routing.json")
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results["environment"] = environment()
    if args.capacity_sweep:
        run_capacity_sweep(args, results, out)
    elif not args.decision_cost:
        run_end_to_end(args, results, out)
        workload = generate(_workload_config(args))
        results["home_spread"] = home_spread(workload)
        print(f"\nconsistent_hash on user, over random worker URLs: {results['home_spread']}")
        if not (args.quick or args.skip_model):
            print("\n## The same workload through the model of the sims, five seeds\n", flush=True)
            results["model_seeds"] = offline.seed_table(list(range(5)))
            print(offline.render_seed_table(results["model_seeds"]))
    if args.decision_cost or not (args.capacity_sweep or args.skip_decision_cost):
        print("\n## Decision cost (this takes a minute and ~2 GB)\n", flush=True)
        results["decision_cost"] = decision_cost.run(
            conversations_per_worker=300 if args.quick else 10_000)
        print(decision_cost.render(results["decision_cost"]))
    results["bars"] = judge(results.get("runs", []), results.get("decision_cost"))
    save(results, out)
    print("\n## Bars\n\n" + render_bars(results["bars"]))
    # only the main results file owns the chart: a run with another --seed or --out must not
    # replace it
    chart = args.chart or (CHART if out == RESULTS / "cache_routing.json" else None)
    if chart and results.get("runs"):
        plot(results["runs"], chart)
        print(f"\nchart: {chart}")
    print(f"results: {out}")
    return 0


def _workload_config(args: argparse.Namespace) -> WorkloadConfig:
    first = tuple(int(t) for t in args.first_user_tokens.split(",")) if args.first_user_tokens else None
    return WorkloadConfig(seed=args.seed, rate=args.rate,
                          conversations=40 if args.quick else args.conversations,
                          first_user_tokens=first)  # type: ignore[arg-type]


def run_capacity_sweep(args: argparse.Namespace, results: dict[str, Any], out: Path) -> None:
    """The same workload at several cache sizes: how much the bars depend on capacity."""
    workload = generate(_workload_config(args))
    pins = {"reference": balanced_pins(workload, SimSettings.workers),
            "reference_grouped": grouped_pins(workload, SimSettings.workers)}
    sweep = results["capacity_sweep"] = []
    for capacity in (int(c) for c in args.capacity_sweep.split(",") if c):
        settings = SimSettings(capacity_tokens=capacity)
        with tempfile.TemporaryDirectory(prefix="bench-cache-routing-") as tmp, \
                running(start_sims(settings, Path(tmp) / "logs")) as sims:
            sim_urls = [s.url for s in sims]
            for name in ("reference", "reference_grouped", "round_robin", "cache_aware"):
                start = list if name in pins else _gateways(sim_urls, name, 1, Path(tmp))
                run = measure(name, 1, start, sims, workload, pins.get(name, []))
                run["capacity_tokens"] = capacity
                sweep.append(run)
                save(results, out)
                print(f"capacity {capacity}: " + render_table([run]).splitlines()[-1], flush=True)


def run_end_to_end(args: argparse.Namespace, results: dict[str, Any], out: Path) -> None:
    config = _workload_config(args)
    workload = generate(config)
    sims_settings = SimSettings(capacity_tokens=args.capacity_tokens)
    policies = [p for p in args.policies.split(",") if p]
    replica_counts = [int(r) for r in args.replicas.split(",") if r]
    setup = {"workload": {**dataclasses.asdict(config), **workload.summary()},
             "sims": dataclasses.asdict(sims_settings)}
    # a partial invocation (some policies, some replica counts) updates its rows in place
    # when the workload and sims are the same; otherwise the results start over
    same = all(json.loads(json.dumps(v)) == results.get(k) for k, v in setup.items())
    results.update(setup)
    if not same:
        results["runs"] = []
    print(f"workload: {json.dumps(workload.summary())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-cache-routing-") as tmp, \
            running(start_sims(sims_settings, Path(tmp) / "logs")) as sims:
        workdir = Path(tmp)
        sim_urls = [s.url for s in sims]
        plan: list[tuple[str, int, Callable[[], list[Service]]]] = []
        if not args.no_reference:
            plan += [("reference", 1, list), ("reference_grouped", 1, list)]
        for replicas in replica_counts:
            plan += [(p, replicas, _gateways(sim_urls, p, replicas, workdir, args.redis_url)) for p in policies]
            if not args.no_sglang_router and has_sglang_router():
                plan.append(("sglang_router", replicas, _sglang_routers(sim_urls, replicas, workdir)))
        pins = {"reference": balanced_pins(workload, len(sims)),
                "reference_grouped": grouped_pins(workload, len(sims))}
        for name, replicas, start in plan:
            run = measure(name, replicas, start, sims, workload, pins.get(name, pins["reference"]))
            results["runs"] = _merged(results.get("runs", []), run)
            save(results, out)
            print(render_table([run]).splitlines()[-1], flush=True)
    print("\n## Results\n\n" + render_table(results["runs"]))


ORDER = ("reference", "reference_grouped", *POLICIES, "sglang_router")


def _merged(runs: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """``runs`` with ``run`` in place of any earlier run of the same routing and replicas."""
    kept = [r for r in runs if (r["name"], r["replicas"]) != (run["name"], run["replicas"])]
    return sorted([*kept, run], key=lambda r: (r["replicas"], ORDER.index(r["name"])))


def _sglang_routers(sim_urls: list[str], replicas: int, workdir: Path) -> Callable[[], list[Service]]:
    return lambda: start_sglang_routers(sim_urls, replicas, workdir)


def _gateways(sim_urls: list[str], policy: str, replicas: int, workdir: Path,
              redis_url: str = "") -> Callable[[], list[Service]]:
    def start() -> list[Service]:
        if redis_url:  # a run starts cold: no placement left by an earlier run
            import redis as sync_redis
            client = sync_redis.Redis.from_url(redis_url)
            stale = [*client.scan_iter("switchyard:placement:*"), *client.scan_iter("switchyard:line:*")]
            if stale:
                client.delete(*stale)
            client.close()
        return start_gateways(sim_urls, policy, replicas, workdir, redis_url or None)
    return start


def measure(name: str, replicas: int, start: Callable[[], list[Service]], sims: list[Service],
            workload: Workload, pins: list[int]) -> dict[str, Any]:
    """One run from cold caches: flush, start the routers, replay, read the counters, stop."""
    flush(sims)
    with running(start()) as routers:
        route: Route
        if routers:
            urls = [r.url for r in routers]
            model = SIM_MODEL if name == "sglang_router" else PUBLIC_MODEL
            route = lambda order, arrival: urls[order % len(urls)]  # the client balances replicas
        else:
            model = SIM_MODEL
            route = lambda order, arrival: sims[pins[arrival.conversation]].url
        before = sim_stats(sims)
        busy_before, cpu_before = core_busy_seconds(), _own_cpu(sims + routers)
        started = time.monotonic()
        records = asyncio.run(replay(workload, route, model=model, api_key=API_KEY))
        wall = time.monotonic() - started
        after = sim_stats(sims)
        busy = sum(core_busy_seconds().values()) - sum(busy_before.values())
        own = _own_cpu(sims + routers) - cpu_before
    run = summarise(name, replicas, records, before, after)
    # the machine is shared: how many cores were busy, and how much of that was this benchmark
    run["cores_busy"] = round(busy / wall, 2)
    run["cores_busy_ours"] = round(own / wall, 2)
    return run


def _own_cpu(services: list[Service]) -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + sum(s.cpu_seconds() for s in services)


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def save(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
