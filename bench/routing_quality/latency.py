"""Cost of one routing decision, on one core, next to the cost of just tokenizing the text.

Each figure is measured per call (``perf_counter_ns`` around each call, after a warm-up), in
one process pinned to one core, with the classifier's session on one thread, as the gateway
runs it. The baseline in the same run is ``encode_ordinary`` of the same text, which every
gateway request pays anyway for token budgets: the ratio says what the classifier adds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
import tiktoken

from router.difficulty import DifficultyClassifier, FeatureExtractor
from router.difficulty.classifier import session_options
from router.difficulty.features import ENCODING

_PROSE = ("I run a small bakery and want to understand why my sourdough loaves come out dense "
          "on humid days. Could you explain what happens to the starter and the dough, and "
          "suggest two or three changes to my schedule? ")
_CODE = ("```python\ndef merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:\n"
         "    out = []\n    for start, end in sorted(intervals):\n        if out and start <= out[-1][1]:\n"
         "            out[-1] = (out[-1][0], max(out[-1][1], end))\n        else:\n"
         "            out.append((start, end))\n    return out\n```\nWhy is this O(n log n)? ")
_MATH = ("Let $f(x) = \\frac{x^2 + 3x - 4}{x - 1}$. For which real $x$ is $f$ continuous, and what "
         "is $\\lim_{x \\to 1} f(x)$? Show each step. ")


def prompt_of(tokens: int, encoding: tiktoken.Encoding) -> str:
    """A deterministic prompt of exactly ``tokens`` tokens: prose, code and math in turn."""
    ids = encoding.encode_ordinary((_PROSE + _CODE + _MATH) * (tokens // 150 + 2))
    return encoding.decode(ids[:tokens])


def _timings(call: Callable[[], object], runs: int) -> dict[str, float]:
    for _ in range(min(200, runs)):
        call()
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        call()
        out[i] = time.perf_counter_ns() - t0
    us = out / 1000
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1)}


def measure(classifier: DifficultyClassifier, *, tokens: tuple[int, ...] = (50, 500, 2000),
            runs: int = 5000, core: int | None = 0) -> dict[str, Any]:
    """p50/p99/mean per decision for prompts of each length, with its parts and the baseline."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    encoding = tiktoken.get_encoding(ENCODING)
    extractor = FeatureExtractor(encoding)
    session = ort.InferenceSession(str(classifier.path), session_options(1), providers=["CPUExecutionProvider"])
    rows = {}
    for n in tokens:
        text = prompt_of(n, encoding)
        rows[n] = _steps(text, encoding, extractor, classifier, session, runs)
    return {"core": core, "runs": runs, "model": classifier.version, "by_tokens": rows}


def _steps(text: str, encoding: tiktoken.Encoding, extractor: FeatureExtractor,
           classifier: DifficultyClassifier, session: ort.InferenceSession, runs: int) -> dict[str, Any]:
    f = extractor.extract(text)
    feeds = {"indices": f.indices, "values": f.values.reshape(1, -1)}
    return {
        "tokenize (baseline)": _timings(lambda: encoding.encode_ordinary(text), runs),
        "features": _timings(lambda: extractor.extract(text), runs),
        "onnx run": _timings(lambda: session.run(None, feeds), runs),
        "score (decision)": _timings(lambda: classifier.score(text), runs),
    }


def render_latency(result: dict[str, Any]) -> str:
    """Markdown table of ``measure``'s result."""
    lines = ["| prompt tokens | step | p50 (µs) | p99 (µs) | mean (µs) | p50 vs tokenize |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n, steps in result["by_tokens"].items():
        base = steps["tokenize (baseline)"]["p50_us"]
        for step, t in steps.items():
            lines.append(f"| {n} | {step} | {t['p50_us']:.1f} | {t['p99_us']:.1f} | {t['mean_us']:.1f} "
                         f"| {t['p50_us'] / base:.2f}x |")
    return "\n".join(lines)
