"""Where the production policy's cost goes, one feature at a time: ``python -m bench.overhead.ablation``.

One ``switchyard serve`` on the gateway's core serves the production policy
(``stack.production_policy``) and variants of it that each turn one feature off (input
moderation, output moderation, both, the context budget, limits and budgets, cache-aware
selection, prices; the context budget with limits and budgets, the features that count a prompt
before it goes), and the bare policy, side by side in one policy: a model per variant (its
own moderation section, context and prices; cache-aware or round-robin backends on the same
simulated worker) and a tenant key with or without limits and budgets. The load generator, on
the other core, sends small non-streamed requests at concurrency 32 to one variant at a time in
short bursts, the variants in turn, many rounds: this machine's speed changes from minute to
minute, and bursts of a second or two, interleaved, see the same machine. Per variant: the
median over rounds of the gateway's CPU per request, and what turning the feature off saves
against the production policy's bursts of the same round.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.overhead.procs import CLIENT_CORE, pinned
from bench.overhead.stack import API_KEY, PUBLIC_MODEL, SIM_MODEL, production_policy, start_gateway, start_sim
from policies.keys import hash_key

RESULTS = Path(__file__).resolve().parents[1] / "results" / "overhead-ablation.json"
NO_LIMITS_KEY = API_KEY + "-no-limits"

VARIANTS: dict[str, tuple[str, str]] = {
    "production": ("prod", API_KEY),
    "- input moderation": ("prod-no-input-moderation", API_KEY),
    "- output moderation": ("prod-no-output-moderation", API_KEY),
    "- moderation (both)": ("prod-no-moderation", API_KEY),
    "- context budget": ("prod-no-context", API_KEY),
    "- limits and budgets": ("prod", NO_LIMITS_KEY),
    "- cache-aware (round robin)": ("prod-round-robin", API_KEY),
    "- prices": ("prod-no-prices", API_KEY),
    "- counting (context budget; limits and budgets)": ("prod-no-context", NO_LIMITS_KEY),
    "bare": ("bare", NO_LIMITS_KEY),
}
"""Variant -> (model, key) in ``policy``."""


def policy(sim_url: str) -> dict[str, Any]:
    """Every variant in one policy document (module doc)."""
    document: dict[str, Any] = copy.deepcopy(production_policy(sim_url))
    document["version"] = "bench-overhead-ablation"
    document["backends"]["sim-rr"] = {**document["backends"]["sim"], "selection": {"type": "round_robin"}}
    prod = document["models"].pop(PUBLIC_MODEL)
    round_robin = [{"backend": "sim-rr", "model": SIM_MODEL}]
    models = {"prod": prod, "prod-no-input-moderation": prod, "prod-no-output-moderation": prod,
              "prod-no-moderation": prod, "prod-no-context": {k: v for k, v in prod.items() if k != "context"},
              "prod-round-robin": {**prod, "deployments": round_robin},
              "prod-no-prices": {k: v for k, v in prod.items() if k != "prices"},
              "bare": {"deployments": round_robin}}
    document["models"] = copy.deepcopy(models)
    both: dict[str, Any] = {"input": {}, "output": {}}
    document["moderation"] = {"models": {
        "prod": both, "prod-no-input-moderation": {"input": None, "output": {}},
        "prod-no-output-moderation": {"input": {}, "output": None}, "prod-no-context": both,
        "prod-round-robin": both, "prod-no-prices": both}}
    document["tenants"]["bench-no-limits"] = {
        "models": ["*"], "keys": [{"name": "no-limits-key", "sha256": hash_key(NO_LIMITS_KEY)}]}
    return document


def _burst(url: str, pid: int, model: str, key: str, duration: float, warmup: float) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.overhead.loadgen", "--url", url, "--model", model, "--key", key,
            "--concurrency", "32", "--duration", str(duration), "--warmup", str(warmup), "--watch", f"gw={pid}"]
    out = subprocess.run(pinned(CLIENT_CORE, argv), capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    requests = result["requests"]
    return {"rps": result["rps"], "cpu_us": result["cpu_s"]["gw"] / requests * 1e6 if requests else float("nan"),
            "errors": float(result["errors"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--duration", type=float, default=1.5, help="measured seconds of each burst")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = list(VARIANTS)
    cells: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp:
        work = Path(tmp)
        sim = start_sim(work)
        path = work / "policy-ablation.yaml"
        path.write_text(yaml.safe_dump(policy(sim.url), sort_keys=False), encoding="utf-8")
        gateway = start_gateway(work, path)
        try:
            for name in names:  # warm every variant's path once
                _burst(gateway.url, gateway.pid, *VARIANTS[name], 0.5, 0.2)
            for round_ in range(args.rounds):
                for name in names:
                    cell = _burst(gateway.url, gateway.pid, *VARIANTS[name], args.duration, args.warmup)
                    cells[name].append(cell)
                    print(f"round {round_ + 1} {name:30} {cell['rps']:7.0f} req/s {cell['cpu_us']:7.0f} us CPU/req",
                          file=sys.stderr, flush=True)
        finally:
            gateway.stop()
            sim.stop()
    production = cells["production"]
    lines = [(f"Run {started}, {args.rounds} rounds of {args.duration:g} s bursts at c=32, one gateway (medians over "
             "rounds; saved: production's CPU per request minus the variant's, same round)."), "",
             "| policy | req/s | CPU µs / request | saved vs production, µs |", "|---|--:|--:|--:|"]
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        runs = cells[name]
        saved = statistics.median(p["cpu_us"] - r["cpu_us"] for p, r in zip(production, runs, strict=True))
        summary[name] = {"rps": statistics.median(r["rps"] for r in runs),
                         "cpu_us": statistics.median(r["cpu_us"] for r in runs), "saved_us": saved}
        row = summary[name]
        lines.append(f"| {name} | {row['rps']:,.0f} | {row['cpu_us']:,.0f} | "
                     f"{'' if name == 'production' else f'{saved:,.0f}'} |")
    report(lines, args, started, summary=summary, cells=cells)
    return 0


def report(lines: list[str], args: argparse.Namespace, started: str, **data: object) -> None:
    """Print the table ``lines`` and write ``args.results``: when it ran, how, and ``data``."""
    print("\n".join(lines))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"started": started, "args": {k: str(v) for k, v in vars(args).items()},
                                        **data}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
