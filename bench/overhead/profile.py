"""Sample the running gateway with py-spy under load and rank where its CPU goes.

py-spy reads the process from outside (``--pid``), pausing it for each sample: without the
pause (``--nonblocking``) it read stacks half-way through a change and credited frames to
callers they never had (``VerdictMemo.put`` above the classifier), which skewed the shares.
The pauses slow the profiled cell (~30 % at c=32) and over-count frames inside a system call
(the access line's ``write``), so its throughput is not a timed cell's and a syscall's share
needs a check with the feature off. py-spy is pinned to the client core so its own work does
not land on the gateway's. Samples are aggregated per function (``--function``); "self" is
the innermost Python frame, "total" any frame of the stack.
"""

from __future__ import annotations

import gzip
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.overhead.procs import CLIENT_CORE, REPO, Service, bin_path, pinned
from bench.overhead.runner import Load, Target, run_cell

TOP = 10
_SITE = "site-packages/"


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    path: str
    line: int

    @property
    def label(self) -> str:
        return f"{self.function} ({short_path(self.path)}:{self.line})"


def short_path(path: str) -> str:
    """``litestar/routes/http.py`` rather than the whole site-packages path."""
    if _SITE in path:
        return path.split(_SITE, 1)[1]
    repo = str(REPO) + "/"
    if path.startswith(repo):
        return path[len(repo):]
    return path.split("/lib/python3", 1)[-1].split("/", 1)[-1]


def package(path: str) -> str:
    """Who owns the code: ``switchyard`` (this repo), a distribution, or ``stdlib:<module>``."""
    if _SITE in path:
        return path.split(_SITE, 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(str(REPO) + "/") and "/.venv/" not in path:
        return "switchyard"
    if "/lib/python3" in path:
        return "stdlib:" + short_path(path).split("/", 1)[0].removesuffix(".py")
    return path or "?"


def parse_frame(text: str) -> Frame:
    """``name (path:line)``, as py-spy writes one frame of a collapsed stack."""
    name, _, rest = text.rpartition(" (")
    where, _, line = rest.rstrip(")").rpartition(":")
    return Frame(name or text, where, int(line) if line.isdigit() else 0)


def parse_collapsed(text: str) -> list[tuple[list[Frame], int]]:
    """Stacks (outermost first) and their sample counts; py-spy's process/thread roots dropped."""
    stacks = []
    for line in text.splitlines():
        frames_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [parse_frame(f) for f in frames_text.split(";")
                  if f.endswith(")") and not f.startswith(("process ", "thread "))]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def rank(stacks: list[tuple[list[Frame], int]], keep: Callable[[Frame], bool], *,
         inclusive: bool = False) -> list[dict[str, Any]]:
    """The top functions among frames ``keep`` accepts, by self (or total) samples."""
    total = sum(count for _, count in stacks) or 1
    counter: Counter[str] = Counter()
    for frames, count in stacks:
        if inclusive:
            # skip the start-up frames every sample shares (console script, cli, server.serve)
            start = next((i for i, f in enumerate(frames)
                          if package(f.path) != "switchyard" and "/bin/" not in f.path), 0)
            for label in {f.label for f in frames[start:] if keep(f)}:
                counter[label] += count
        elif keep(frames[-1]):
            counter[frames[-1].label] += count
    return [{"function": label, "samples": n, "percent": round(100 * n / total, 1)}
            for label, n in counter.most_common(TOP)]


def summarise_profile(text: str) -> dict[str, Any]:
    stacks = parse_collapsed(text)
    total = sum(count for _, count in stacks)
    by_package: Counter[str] = Counter()
    for frames, count in stacks:
        by_package[package(frames[-1].path)] += count
    return {
        "samples": total,
        "self_by_package": [{"package": p, "percent": round(100 * n / (total or 1), 1)}
                            for p, n in by_package.most_common(12)],
        "self_switchyard": rank(stacks, lambda f: package(f.path) == "switchyard"),
        "self_litestar": rank(stacks, lambda f: package(f.path) == "litestar"),
        "self_any": rank(stacks, lambda f: True),
        "total_switchyard": rank(stacks, lambda f: package(f.path) == "switchyard", inclusive=True),
    }


def profile_gateway(target: Target, load: Load, sim: Service, duration: float, out: Path) -> dict[str, Any]:
    """Record ``duration`` s of the gateway under ``load``; return the rankings.

    The collapsed stacks are kept gzipped at ``out`` (for a flame graph: ``zcat out |
    flamegraph.pl``); they compress about twenty-fold.
    """
    raw = out.with_name(out.name + ".tmp")
    argv = [bin_path("py-spy"), "record", "--pid", str(target.ready().pid), "--rate", "250",
            "--format", "raw", "--function", "--full-filenames", "--duration", str(int(duration)),
            "-o", str(raw)]
    recorder = subprocess.Popen(pinned(CLIENT_CORE, argv), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        cell = run_cell(target, load, sim, duration, warmup=0.5)
        log, _ = recorder.communicate(timeout=duration + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if recorder.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed:\n{log[-2000:]}")
    text = raw.read_text()
    out.write_bytes(gzip.compress(text.encode()))
    raw.unlink()
    summary = summarise_profile(text)
    summary.update(load=load.name, rps=cell["rps"], file=str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out))
    return summary
