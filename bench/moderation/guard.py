"""The guard path's own latency: ``python -m bench.moderation.guard [--calls N] [--delay-ms D]``.

``backends.guard.ask_guard`` against the simulated guards (``backends/sim/guard.py``, in a
thread of this process, answering after ``--delay-ms``), both formats, one call at a time after
a warm-up: what a borderline request waits for on top of the guard model's own inference time
(a real Llama Guard 3 1B on a GPU adds its prefill and ~3 output tokens; not measured here).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from backends.guard import ask_guard
from backends.sim.guard import GuardSim


async def _time(url: str, kind: str, calls: int) -> list[float]:
    out = []
    for i in range(calls + 5):
        started = time.perf_counter()
        await ask_guard(kind, url, "guard", f"Here is my honest answer number {i}.", "user",  # type: ignore[arg-type]
                        timeout_s=5.0)
        if i >= 5:
            out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation.guard", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the simulated guard's own answer time")
    args = parser.parse_args(argv)
    sim = GuardSim({"honest answer": ["S10"]}, delay_s=args.delay_ms / 1000).start()
    try:
        print(f"{args.calls} calls each, simulated guard answering after {args.delay_ms:g} ms\n")
        print("| format | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- |")
        for kind in ("llama_guard", "openai_moderation"):
            ms = asyncio.run(_time(sim.url, kind, args.calls))
            pct = [ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))] for p in (50, 90, 99)]
            print(f"| {kind} | {pct[0]:.2f} ms | {pct[1]:.2f} ms | {pct[2]:.2f} ms | {ms[-1]:.2f} ms |")
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
