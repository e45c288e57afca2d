"""One measurement cell: a load shape sent to one target by a fresh load-generator process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.overhead.procs import CLIENT_CORE, GATEWAY_CORE, Service, peak_rss_mb, pinned
from bench.overhead.stack import API_KEY


@dataclass(frozen=True, slots=True)
class Load:
    """A load shape: closed loop at ``concurrency`` or open loop at ``rate`` req/s."""

    name: str
    concurrency: int = 0
    rate: float = 0.0
    stream: bool = False

    def argv(self) -> list[str]:
        shape = ["--concurrency", str(self.concurrency)] if self.concurrency else ["--rate", str(self.rate)]
        return shape + (["--stream"] if self.stream else [])


C32 = Load("c32", concurrency=32)
C32_STREAM = Load("c32_stream", concurrency=32, stream=True)
R200 = Load("r200", rate=200)
R200_STREAM = Load("r200_stream", rate=200, stream=True)


@dataclass(slots=True)
class Target:
    """Where a cell sends its load, the model name that place knows, and how to start it."""

    name: str
    model: str
    launch: Callable[[], Service]
    core: int = GATEWAY_CORE
    """The core the process is pinned to: its share of that core's busy time is reported."""
    fresh: bool = False
    """A new process for every cell, so no cell inherits state (ledgers, caches) that earlier
    cells grew and the order of cells does not matter."""
    service: Service | None = None

    def ready(self) -> Service:
        """The running process, started (or restarted, for a ``fresh`` target) now."""
        if self.fresh and self.service is not None:
            self.stop()
        if self.service is None:
            self.service = self.launch()
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


def run_cell(target: Target, load: Load, sim: Service, duration: float, warmup: float) -> dict[str, Any]:
    """Run the load generator once (pinned to the client core) and return its result.

    Adds ``peak_rss_mb`` (the target's peak resident set so far), ``cpu_s_per_1k`` (the
    target's CPU over the window per 1,000 answered requests) and
    the share of each core that processes outside the benchmark took during the window
    (``other_share``): on a shared machine that is the noise, and ``noise`` is the larger one.
    """
    service = target.service
    if service is None:
        raise RuntimeError(f"{target.name} is not running: call ready() first")
    argv = [sys.executable, "-m", "bench.overhead.loadgen", "--url", service.url,
            "--model", target.model, "--key", API_KEY, "--duration", str(duration),
            "--warmup", str(warmup), "--watch", f"target={service.pid}",
            "--watch", f"sim={sim.pid}", *load.argv()]
    done = subprocess.run(pinned(CLIENT_CORE, argv), capture_output=True, text=True, check=False,
                          timeout=duration + warmup + 90)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed for {target.name}/{load.name}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    cpu = result["cpu_s"]
    result["target"], result["load"] = target.name, load.name
    result["peak_rss_mb"] = peak_rss_mb(service.pid) if target.core == GATEWAY_CORE else None
    result["cpu_s_per_1k"] = 1000 * cpu["target"] / result["requests"] if result["requests"] else None
    ours = {GATEWAY_CORE: cpu["target"] if target.core == GATEWAY_CORE else 0.0,
            CLIENT_CORE: cpu["sim"] + cpu["loadgen"]}
    result["other_share"] = {f"cpu{core}": round(max(0.0, cpu.get(f"cpu{core}", 0.0) - mine) / duration, 3)
                             for core, mine in ours.items()}
    # going direct leaves the gateway core idle: only the client core's noise matters then
    cores = [f"cpu{CLIENT_CORE}"] if target.core == CLIENT_CORE else list(result["other_share"])
    result["noise"] = max(result["other_share"][core] for core in cores)
    return result
