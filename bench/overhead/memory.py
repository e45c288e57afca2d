"""What holds a serving process's memory: resident set after each import and model load.

Run: ``python -m bench.overhead.memory`` (one fresh process; prints a Markdown table). The
steps are cumulative, in the order a ``switchyard serve`` worker reaches them; the last rows
load what the production policy loads (the moderation classifier with its cl100k_base
tokenizer, the difficulty classifier). redis-py is not a step: a gateway without ``REDIS_URL``
does not import it. ``VmHWM`` is the peak so far, ``VmRSS`` the current set.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path


def _status() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _load_tokenizer() -> None:
    from backends.encodings import OFFLINE_CL100K, get_encoding

    get_encoding(OFFLINE_CL100K)


def _load_moderation() -> None:
    from policies.moderation.classifier import ModerationClassifier

    ModerationClassifier.load()


def _load_difficulty() -> None:
    from router.difficulty import DifficultyClassifier

    DifficultyClassifier.load()


def _importer(module: str) -> Callable[[], None]:
    def load() -> None:
        importlib.import_module(module)

    return load


STEPS: tuple[tuple[str, Callable[[], None]], ...] = (
    *((f"import {m}", _importer(m)) for m in ("numpy", "onnxruntime", "litestar", "aiohttp",
                                              "opentelemetry.sdk.trace", "gateway.app")),
    ("tiktoken cl100k_base (offline)", _load_tokenizer),
    ("moderation classifier (ONNX session)", _load_moderation),
    ("difficulty classifier (ONNX session)", _load_difficulty),
)


def main() -> None:
    rows = ["| step (cumulative) | VmRSS MiB | added MiB | VmHWM MiB |", "|---|--:|--:|--:|"]
    before, _ = _status()
    rows.append(f"| interpreter | {before:.0f} | - | - |")
    for label, step in STEPS:
        step()
        rss, peak = _status()
        rows.append(f"| {label} | {rss:.0f} | {rss - before:+.0f} | {peak:.0f} |")
        before = rss
    print("\n".join(rows))


if __name__ == "__main__":
    main()
