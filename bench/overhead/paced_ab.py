"""Two source trees side by side on paced streams: ``python -m bench.overhead.paced_ab OLD NEW``.

A change to the relay moves a paced stream's CPU per chunk by a few per cent, while this
machine's speed moves from minute to minute by more. So both trees serve at once: one
``switchyard serve`` per tree (``PYTHONPATH`` set to the tree, which imports before the
installed package), both on the gateway's core, the bare (or production) policy of
``bench.overhead.stack`` in front of one simulator with SGLang's latency model (200 tokens, one
decode step, 5 ms, apart). One load generator per gateway, on the client core, at the same
time: ``--rate`` streams a second each. Per round and tree: the gateway's CPU over the
measured window divided by the chunks of the streams that ended in it. Rounds restart both
gateways, alternating which one starts first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.overhead.procs import CLIENT_CORE, Service, pinned
from bench.overhead.stack import API_KEY, PUBLIC_MODEL, start_gateway, start_sim, write_policy

TOKENS = 200
"""Chunks a stream carries (``--max-tokens``)."""


def _load(gateway: Service, rate: float, duration: float, warmup: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bench.overhead.loadgen", "--url", gateway.url, "--model", PUBLIC_MODEL,
            "--key", API_KEY, "--rate", str(rate), "--stream", "--max-tokens", str(TOKENS),
            "--duration", str(duration), "--warmup", str(warmup), "--watch", f"gw={gateway.pid}"]
    return subprocess.Popen(pinned(CLIENT_CORE, argv), stdout=subprocess.PIPE, text=True)


def cpu_us_per_chunk(result: dict[str, object]) -> float:
    """The gateway's CPU over the window per relayed chunk, from a load generator's result."""
    cpu = result["cpu_s"]
    requests = result["requests"]
    assert isinstance(cpu, dict) and isinstance(requests, int)
    return float(cpu["gw"]) / (requests * TOKENS) * 1e6 if requests else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead.paced_ab", description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path, help="a source tree (e.g. a git worktree of the baseline)")
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=6.0, help="streams a second to each gateway")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--production", action="store_true", help="the production policy, not the bare one")
    args = parser.parse_args(argv)
    trees = [args.old.resolve(), args.new.resolve()]
    figures: dict[str, list[float]] = {str(tree): [] for tree in trees}
    with tempfile.TemporaryDirectory(prefix="paced-ab-") as tmp:
        work = Path(tmp)
        sim = start_sim(work, zero_latency=False)
        try:
            policy = write_policy(work, sim.url, production=args.production)
            for round_ in range(args.rounds):
                order = trees if round_ % 2 == 0 else trees[::-1]
                gateways = {tree: start_gateway(work, policy, tree=tree, label=f"-{i}") for i, tree in enumerate(order)}
                try:
                    loads = {tree: _load(g, args.rate, args.duration, args.warmup) for tree, g in gateways.items()}
                    for tree, load in loads.items():
                        result = json.loads(load.communicate()[0].strip().splitlines()[-1])
                        figure = cpu_us_per_chunk(result)
                        figures[str(tree)].append(round(figure, 1))
                        print(f"round {round_ + 1}: {tree} {figure:.1f} µs of CPU a chunk, "
                              f"{result['requests']} streams, {result['errors']} errors", flush=True)
                finally:
                    for gateway in gateways.values():
                        gateway.stop()
        finally:
            sim.stop()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
