"""The load generator: its own process (aiohttp on uvloop), printing one JSON result line.

Closed loop (``--concurrency N``): N clients, each sending its next request when the last
answer ends; measures throughput. Open loop (``--rate R``): a request every 1/R s whether or
not earlier ones answered; measures latency at a load the server is known to sustain.

Latency runs from sending the request to the last byte of the answer; with ``--stream`` it
also records TTFT, until the first ``data:`` event carrying non-empty content. Only requests
ending inside the measured window count (after ``--warmup``). CPU of the ``--watch`` pids is
read at the window's edges, so warm-up and shutdown are not billed to the server.

Run one: ``python -m bench.overhead.loadgen --url http://127.0.0.1:8080 --concurrency 32``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop

from bench.overhead.procs import core_busy_seconds, cpu_seconds

_CONTENT = b'"content":"'


_WORDS = ("the", "gateway", "routes", "each", "request", "to", "a", "worker", "with", "its", "prefix",
          "cache", "warm", "and", "counts", "tokens", "before", "it", "sends", "them", "on", "time",
          "budget", "model", "answer", "stream", "of", "chunks", "from", "upstream", "policy", "tenant")


def long_text(tokens: int, seed: int = 17) -> str:
    """About ``tokens`` cl100k tokens of word salad (each word here is one token, with its space)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(tokens))


SMALL_PROMPT = "Say hello to the benchmark in a few words."
"""The small request's message (the issue's "tiny non-streamed chat request")."""


def request_body(model: str, stream: bool, max_tokens: int = 8, prompt: str = "") -> bytes:
    """The chat request a run sends: the small one (8 output tokens), or a long ``prompt``."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt or SMALL_PROMPT}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


class Bodies:
    """Request bodies, each distinct: the small message or a long prompt, after the request's number.

    The number (with a tag of this run, so no cell meets another's prompts in the simulator's
    prefix cache) comes first, so no cache in the gateway (counted messages, remembered
    moderation verdicts) sees the same text twice and every request pays its full cost; the rest
    is encoded once.

    With ``turns``, requests are turns of chat conversations instead: request ``i`` is turn
    ``i % turns + 1`` of conversation ``i // turns``, carrying the conversation's earlier user
    messages and answers (each user message about ``prompt_tokens / turns`` tokens), as a chat
    client re-sends its history: what the gateway and the worker saw on the turns before comes
    again, and only the last message is new.
    """

    def __init__(self, model: str, stream: bool, max_tokens: int, prompt_tokens: int, turns: int = 0) -> None:
        marker = "@@PROMPT@@"
        self._run = f"{random.getrandbits(32):08x}"
        self._turns = turns
        self._model, self._stream, self._max_tokens = model, stream, max_tokens
        self._message = long_text(max(1, prompt_tokens // max(1, turns)), seed=5) if turns else ""
        prompt = long_text(prompt_tokens) if prompt_tokens else SMALL_PROMPT
        template = request_body(model, stream, max_tokens, marker + prompt)
        self._head, _, self._tail = template.partition(marker.encode())
        self._next = 0

    def next(self) -> bytes:
        self._next += 1
        if self._turns:
            return self._turn(self._next - 1)
        return self._head + f"request {self._run}-{self._next}: ".encode() + self._tail

    def _turn(self, i: int) -> bytes:
        conversation, turn = divmod(i, self._turns)
        messages: list[dict[str, str]] = []
        for k in range(turn + 1):
            if k:
                messages.append({"role": "assistant", "content": f"Noted part {k} of conversation {conversation}."})
            messages.append({"role": "user", "content": f"{self._run}-{conversation} part {k + 1}: {self._message}"})
        body: dict[str, Any] = {"model": self._model, "messages": messages, "max_tokens": self._max_tokens}
        if self._stream:
            body["stream"] = True
        return json.dumps(body).encode()


def has_content(line: bytes) -> bool:
    """True for an SSE ``data:`` line whose delta carries at least one character of text."""
    at = line.find(_CONTENT)
    return at >= 0 and line[at + len(_CONTENT):at + len(_CONTENT) + 1] not in (b'"', b"")


@dataclass
class Sample:
    done: float
    latency: float
    ttft: float | None


@dataclass
class Recorder:
    """Samples of requests that ended inside ``[start, end]``; errors and lag, counted."""

    start: float
    end: float
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    lags: list[float] = field(default_factory=list)

    def counts(self, at: float) -> bool:
        return self.start <= at <= self.end

    def fail(self, at: float, why: str) -> None:
        if self.counts(at):
            self.errors += 1
            self.first_error = self.first_error or why


async def send(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool,
               recorder: Recorder) -> None:
    """One request, recorded if it ends inside the window."""
    t0 = time.perf_counter()
    ttft: float | None = None
    try:
        async with session.post(url, data=body) as response:
            if not stream:
                await response.read()
            else:
                async for line in response.content:  # StreamReader iterates lines
                    if ttft is None and line.startswith(b"data:") and has_content(line):
                        ttft = time.perf_counter() - t0
            status = response.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        recorder.fail(time.perf_counter(), f"{type(exc).__name__}: {exc}")
        return
    done = time.perf_counter()
    if status != 200 or (stream and ttft is None):
        recorder.fail(done, f"HTTP {status}" + (" without content" if status == 200 else ""))
    elif recorder.counts(done):
        recorder.samples.append(Sample(done, done - t0, ttft))


async def closed_loop(session: aiohttp.ClientSession, url: str, bodies: Bodies, stream: bool,
                      concurrency: int, recorder: Recorder) -> None:
    async def client() -> None:
        while time.perf_counter() < recorder.end:
            await send(session, url, bodies.next(), stream, recorder)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def open_loop(session: aiohttp.ClientSession, url: str, bodies: Bodies, stream: bool,
                    rate: float, first: float, recorder: Recorder) -> None:
    """Send request i at ``first + i/rate``; lag is how late the loop managed to send it."""
    tasks: set[asyncio.Task[None]] = set()
    total = int((recorder.end - first) * rate)
    for i in range(total):
        due = first + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        if recorder.counts(now):
            recorder.lags.append(now - due)
        task = asyncio.create_task(send(session, url, bodies.next(), stream, recorder))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=30)
        for task in late:  # a target that cannot keep up: what is still open after 30 s failed
            task.cancel()
            recorder.errors += 1
            recorder.first_error = recorder.first_error or "no answer 30 s after the last request was sent"


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds (nearest rank); empty for no values."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] * 1000

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99),
            "mean": sum(ordered) / len(ordered) * 1000, "max": ordered[-1] * 1000}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url.rstrip("/") + "/v1/chat/completions"
    bodies = Bodies(args.model, args.stream, args.max_tokens, args.prompt_tokens, args.turns)
    headers = {"content-type": "application/json", "authorization": f"Bearer {args.key}"}
    watch = dict(item.split("=", 1) for item in args.watch)
    first = time.perf_counter() + 0.05
    recorder = Recorder(first + args.warmup, first + args.warmup + args.duration)
    cpu: dict[str, float] = {}

    async def read_cpu() -> None:
        await asyncio.sleep(recorder.start - time.perf_counter())
        before = {name: cpu_seconds(int(pid)) for name, pid in watch.items()}
        before.update(core_busy_seconds(), loadgen=_own_cpu())
        await asyncio.sleep(recorder.end - time.perf_counter())
        after = {name: cpu_seconds(int(pid)) for name, pid in watch.items()}
        after.update(core_busy_seconds(), loadgen=_own_cpu())
        cpu.update({name: round(after[name] - value, 3) for name, value in before.items()})

    connector = aiohttp.TCPConnector(limit=args.concurrency or 0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        meter = asyncio.create_task(read_cpu())
        if args.concurrency:
            await closed_loop(session, url, bodies, args.stream, args.concurrency, recorder)
        else:
            await open_loop(session, url, bodies, args.stream, args.rate, first, recorder)
        await meter
    return summarise(args, recorder, cpu)


def _per_second(offsets: list[float], duration: float) -> list[int]:
    counts = [0] * max(1, int(duration))
    for offset in offsets:
        counts[min(len(counts) - 1, int(offset))] += 1
    return counts


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarise(args: argparse.Namespace, recorder: Recorder, cpu: dict[str, float]) -> dict[str, Any]:
    done = len(recorder.samples)
    ttfts = [s.ttft for s in recorder.samples if s.ttft is not None]
    return {
        "mode": "closed" if args.concurrency else "open",
        "concurrency": args.concurrency or None,
        "rate": None if args.concurrency else args.rate,
        "stream": args.stream,
        "max_tokens": args.max_tokens,
        "prompt_tokens": args.prompt_tokens,
        "duration_s": args.duration,
        "requests": done,
        "errors": recorder.errors,
        "first_error": recorder.first_error or None,
        "rps": done / args.duration,
        # a server whose per-request cost grows with the requests it has served shows it here
        "rps_by_second": _per_second([s.done - recorder.start for s in recorder.samples], args.duration),
        "latency_ms": percentiles([s.latency for s in recorder.samples]),
        "ttft_ms": percentiles(ttfts) if args.stream else None,
        "send_lag_ms": percentiles(recorder.lags) if recorder.lags else None,
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL; /v1/chat/completions is appended")
    parser.add_argument("--model", required=True)
    parser.add_argument("--key", default="none")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, default=0, help="closed loop with N clients")
    load.add_argument("--rate", type=float, default=0.0, help="open loop at R requests/s")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=8, help="output tokens asked for")
    parser.add_argument("--prompt-tokens", type=int, default=0,
                        help="a long prompt of about this many tokens, distinct per request (0: the small one)")
    parser.add_argument("--turns", type=int, default=0,
                        help="chat conversations of this many turns, history re-sent (see Bodies)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID",
                        help="read this process tree's CPU time over the measured window")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
