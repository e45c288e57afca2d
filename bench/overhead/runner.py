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
    max_tokens: int = 8
    """Output tokens asked for: with ``stream``, the chunks relayed per request."""
    prompt_tokens: int = 0
    """A long prompt of about this many tokens, distinct per request (0: the small one)."""
    turns: int = 0
    """Chat conversations of this many turns, each re-sending its history (``loadgen.Bodies``);
    ``prompt_tokens`` is then the last turn's length."""
    prefill: bool = False
    """Sent to the simulator with SGLang's latency model (prefill of uncached prompt tokens,
    decode steps) instead of the zero-latency one: what the gateway adds while a real worker
    spends its own time (section ``prefill``)."""

    def argv(self) -> list[str]:
        shape = ["--concurrency", str(self.concurrency)] if self.concurrency else ["--rate", str(self.rate)]
        return (shape + (["--stream"] if self.stream else [])
                + ["--max-tokens", str(self.max_tokens), "--prompt-tokens", str(self.prompt_tokens),
                   "--turns", str(self.turns)])


C32 = Load("c32", concurrency=32)
C32_STREAM = Load("c32_stream", concurrency=32, stream=True)
R200 = Load("r200", rate=200)
R200_STREAM = Load("r200_stream", rate=200, stream=True)
R25 = Load("r25", rate=25)
"""Requests far apart (section ``policies``): what one request pays when nothing else is in
flight and the process's caches have gone cold between requests, as at an idle hour."""
R50_STREAM200 = Load("r50_stream200", rate=50, stream=True, max_tokens=200)
"""Issue 17's streaming cell: 50 streams/s of 200 tokens (CPU per relayed chunk)."""
LONG_PROMPTS = tuple(Load(f"r20_prompt{n // 1000}k", rate=20, prompt_tokens=n) for n in (1_000, 8_000, 30_000))
"""Cost against prompt length: 20 req/s with prompts of 1k, 8k and 30k tokens (30k, not 32k:
the production policy's 32,768-token window minus its 1,024 reserved output tokens, so nothing
is trimmed)."""
LONG_STREAM_8K = Load("r20_stream_prompt8k", rate=20, stream=True, prompt_tokens=8_000)
"""Time to first token on an 8k-token prompt (issue 17's bar: <= 1.5 ms added p50)."""
PREFILL_PROMPT_8K = Load("r10_stream_prompt8k_prefill", rate=10, stream=True, prompt_tokens=8_000, prefill=True)
"""The same first token against a worker that spends SGLang's time on the prompt (~400 ms to
prefill 8k uncached tokens at the simulator's 50 µs a token)."""
PREFILL_STREAM200 = Load("r8_stream200_prefill", rate=8, stream=True, max_tokens=200, prefill=True)
"""Streams paced as a worker paces them: 200 tokens, one decode step (5 ms) apart, so each
chunk arrives on its own and costs its own read, wake-up and write (the zero-latency
``r50_stream200`` sends them as fast as sockets take them, and a read carries many). 8
streams a second is what the client core, which also runs the simulator, keeps up with."""
PREFILL_CHAT_8K = Load("r10_stream_chat8k_prefill", rate=10, stream=True, prompt_tokens=8_000, turns=8,
                       prefill=True)
"""Issue 17's point 4: multi-turn chats of 1k to 8k tokens (8 turns of ~1k-token messages),
the worker's prefix cache holding each conversation's history."""


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
