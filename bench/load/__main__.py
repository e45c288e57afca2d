"""Load: the highest request rate the gateway sustains before its p99 added latency passes 10 ms.

Usage: ``python -m bench.load [--rates 200,400,...] [--duration S] [--stream] [--quick]``.

Steps an open-loop rate up, for one gateway process and for two (``switchyard serve
--workers 2``), each in front of one zero-latency simulated SGLang worker. At every rate the
same load goes first to the simulator directly, then through the gateway, in the same run:
the added latency is the difference of the two p99s. A rate is sustained when the gateway
answers everything (no error), keeps up (answers at least 95 % of the offered rate) and adds
at most 10 ms at p99; the load generator must keep up too (p99 send lag under 5 ms), or the
cell says so and does not count. A failing rate is measured again before the stepping stops
(more than once while other processes took over ``--max-noise`` of a core during it), so one
noisy cell on a shared machine does not end the search; the table shows the noise per row.

Processes and cores (2 here): the simulator and the load generator share core 1; one gateway
process runs alone on core 0; two gateway processes are not pinned (they share the machine
with the simulator and the load generator, which is what two processes on two cores means).
Results: ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.overhead.__main__ import background_load, describe_code, run_header
from bench.overhead.procs import (
    CLIENT_CORE,
    GATEWAY_CORE,
    REPO,
    Service,
    free_port,
    pinned,
    start,
)
from bench.overhead.runner import Load, Target, run_cell
from bench.overhead.stack import (
    PUBLIC_MODEL,
    SIM_MODEL,
    gateway_argv,
    start_sim,
    write_policy,
)

ADDED_P99_BAR_MS = 10.0
KEEP_UP = 0.95
"""Share of the offered rate that must be answered within the window."""
SEND_LAG_P99_MS = 5.0
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1600, 2000)


def start_gateway(workdir: Path, policy: Path, processes: int) -> Service:
    """``switchyard serve --workers N``: pinned to core 0 alone, unpinned when N > 1."""
    port = free_port()
    argv = gateway_argv("uvicorn", policy, port)
    argv[argv.index("--workers") + 1] = str(processes)
    if processes == 1:
        argv = pinned(GATEWAY_CORE, argv)
    return start(f"gateway-x{processes}", argv, f"http://127.0.0.1:{port}", workdir / "logs",
                 ready_path="/readyz", env={"SWITCHYARD_ACCESS_LOG": "off"})


def others(cell: dict[str, Any], direct: bool) -> float:
    """Cores that processes outside the benchmark kept busy during a cell, machine-wide.

    (``run_cell``'s own ``noise`` assumes the target alone on core 0, which two unpinned
    gateway processes are not.)
    """
    cpu: dict[str, float] = cell["cpu_s"]
    busy = sum(v for k, v in cpu.items() if k.startswith("cpu"))
    ours = cpu["sim"] + cpu["loadgen"] + (0.0 if direct else cpu["target"])  # direct: target is the sim
    duration: float = cell["duration_s"]
    return round(max(0.0, busy - ours) / duration, 3)


def judge(direct: dict[str, Any], gateway: dict[str, Any], rate: float) -> dict[str, Any]:
    """One rate's row: the two p99s, what the gateway added, and whether it held."""
    added = gateway["latency_ms"].get("p99", float("inf")) - direct["latency_ms"].get("p99", 0.0)
    lag = max((cell["send_lag_ms"] or {}).get("p99", 0.0) for cell in (direct, gateway))
    reasons = []
    if gateway["errors"]:
        reasons.append(f"{gateway['errors']} errors ({gateway['first_error']})")
    if gateway["rps"] < KEEP_UP * rate:
        reasons.append(f"answered {gateway['rps']:.0f} of {rate:g} req/s")
    if added > ADDED_P99_BAR_MS:
        reasons.append(f"p99 added {added:.1f} ms")
    valid = lag <= SEND_LAG_P99_MS and not direct["errors"] and direct["rps"] >= KEEP_UP * rate
    return {
        "rate": rate, "direct_p99_ms": round(direct["latency_ms"].get("p99", 0.0), 2),
        "gateway_p99_ms": round(gateway["latency_ms"].get("p99", 0.0), 2),
        "added_p99_ms": round(added, 2),
        "added_p50_ms": round(gateway["latency_ms"].get("p50", 0.0) - direct["latency_ms"].get("p50", 0.0), 2),
        "gateway_rps": round(gateway["rps"], 1), "errors": gateway["errors"],
        "gateway_cpu_s_per_1k": gateway["cpu_s_per_1k"], "send_lag_p99_ms": round(lag, 2),
        "noise": max(others(direct, True), others(gateway, False)),
        "valid": valid, "sustained": valid and not reasons,
        "why_not": reasons if valid else [*reasons, (f"load generator lagged (p99 {lag:.1f} ms) or the "
                                          "simulator could not keep up: this cell measures the client")],
    }


def measure(sim: Service, gateway: Target, rate: float, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """One rate's row. A failing cell is measured again while other processes took more than
    ``--max-noise`` of a core during it (up to ``--retries`` times), and once more in any
    case; a held attempt wins, else the quietest failing one."""
    direct = Target("direct", SIM_MODEL, lambda: sim, core=CLIENT_CORE, service=sim)
    load = Load(f"r{rate:g}{'_stream' if args.stream else ''}", rate=rate, stream=args.stream)
    attempts: list[dict[str, Any]] = []
    while True:
        gateway.ready()  # a fresh process per cell: no cell inherits the last one's state
        reference = run_cell(direct, load, sim, args.duration, args.warmup)
        row = judge(reference, run_cell(gateway, load, sim, args.duration, args.warmup), rate)
        attempts.append(row)
        log(f"{gateway.name:12} {rate:6g} req/s  direct p99 {row['direct_p99_ms']:6.2f}  gateway p99 "
            f"{row['gateway_p99_ms']:7.2f}  added {row['added_p99_ms']:7.2f} ms  others took "
            f"{100 * row['noise']:3.0f}% of a core  "
            f"{'ok' if row['sustained'] else 'FAIL ' + '; '.join(row['why_not'])}")
        noisy = row["noise"] > args.max_noise and len(attempts) <= args.retries
        if row["sustained"] or (len(attempts) >= 2 and not noisy):
            break
    held = [a for a in attempts if a["sustained"]]
    best = held[0] if held else min(attempts, key=lambda a: a["noise"])
    best["discarded"] = [{"added_p99_ms": a["added_p99_ms"], "noise": a["noise"], "sustained": a["sustained"]}
                         for a in attempts if a is not best]
    return best


def step_up(sim: Service, gateway: Target, args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    """Rows for rising rates until one is not held."""
    rows: list[dict[str, Any]] = []
    for rate in args.rates:
        rows.append(measure(sim, gateway, rate, args, log))
        if not rows[-1]["sustained"]:
            break
    return rows


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="switchyard-load-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        sim = start_sim(workdir)
        stack.callback(sim.stop)
        policy = write_policy(workdir, sim.url)
        for processes in args.processes:
            target = Target(f"gateway-x{processes}", PUBLIC_MODEL,
                            functools.partial(start_gateway, workdir, policy, processes), fresh=True)
            stack.callback(target.stop)
            rows = step_up(sim, target, args, log)
            target.stop()
            held = [r["rate"] for r in rows if r["sustained"]]
            configs[f"{processes}_process{'es' if processes > 1 else ''}"] = {
                "processes": processes, "max_sustained_rate": max(held) if held else None,
                "limited_by": rows[-1]["why_not"] if rows and not rows[-1]["sustained"] else
                ["highest rate tried"], "rows": rows}
    return configs


def render(configs: dict[str, Any]) -> str:
    lines = [("| gateway | rate (req/s) | direct p99 ms | gateway p99 ms | added p99 ms | added p50 ms | "
              "answered req/s | CPU-s / 1k | taken by others | held |"), "|" + " --- |" * 10]
    for name, config in configs.items():
        for r in config["rows"]:
            held = "yes" if r["sustained"] else "no: " + "; ".join(r["why_not"])
            lines.append(f"| {name} | {r['rate']:g} | {r['direct_p99_ms']} | {r['gateway_p99_ms']} | "
                         f"{r['added_p99_ms']} | {r['added_p50_ms']} | {r['gateway_rps']} | "
                         f"{r['gateway_cpu_s_per_1k'] or 0:.3f} | {100 * r['noise']:.0f}% | {held} |")
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda s: [float(r) for r in s.split(",")], default=list(DEFAULT_RATES))
    parser.add_argument("--processes", type=lambda s: [int(p) for p in s.split(",")], default=[1, 2])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell")
    parser.add_argument("--stream", action="store_true", help="streamed requests (latency to the last byte)")
    parser.add_argument("--max-noise", type=float, default=0.15,
                        help="measure a failing cell again when other processes took more of a core")
    parser.add_argument("--retries", type=int, default=3, help="extra attempts for a noisy failing cell")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 s cells, three rates")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON output (default bench/results/load.json; load-quick.json with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.rates = 3.0, 1.0, [200.0, 800.0, 3000.0]
    if args.results is None:
        suffix = ("-quick" if args.quick else "") + ("-stream" if args.stream else "")
        args.results = REPO / "bench/results" / f"load{suffix}.json"
    started, code, background = time.time(), describe_code(), background_load()
    configs = run(args, _log)
    result = {
        **run_header("bench/load", started, code, background),
        "settings": {"rates": args.rates, "duration_s": args.duration, "warmup_s": args.warmup,
                     "stream": args.stream, "max_noise": args.max_noise, "retries": args.retries, "added_p99_bar_ms": ADDED_P99_BAR_MS, "keep_up": KEEP_UP,
                     "send_lag_p99_ms": SEND_LAG_P99_MS},
        "configs": configs,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(render(configs))
    for name, config in configs.items():
        print(f"{name}: max sustained {config['max_sustained_rate']} req/s; limited by {config['limited_by']}")
    _log(f"results written to {args.results}")


if __name__ == "__main__":
    main()
