"""What the soak watches in the gateway process, every few seconds: memory, descriptors, load.

Read from ``/proc/<pid>`` (RSS, open file descriptors, threads, CPU time) and from the
gateway's ``/metrics`` (requests in flight, and ``switchyard_asyncio_tasks``: the tasks of its
event loop, counted when scraped).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.overhead.procs import core_busy_seconds, cpu_seconds

IN_FLIGHT = "switchyard_requests_in_flight"
TASKS = "switchyard_asyncio_tasks"


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    """Seconds since the traffic started."""
    rss_kb: int
    fds: int
    threads: int
    cpu_s: float
    """CPU time of the gateway process since it started."""
    in_flight: float | None
    tasks: float | None
    loadavg_1m: float
    busy_cores: float
    """Cores busy machine-wide over the last interval (all processes, ours included)."""


def read_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a process, and how many file descriptors it holds open."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_kb": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "fds": sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())}


def gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of each named gauge over its label sets, from Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


class Sampler:
    """Takes ``Sample``s of one gateway process; ``summary`` judges them against the bars."""

    def __init__(self, pid: int, metrics_url: str) -> None:
        self.pid, self.metrics_url = pid, metrics_url
        self.samples: list[Sample] = []
        self._started = time.perf_counter()
        self._busy = (time.perf_counter(), sum(core_busy_seconds().values()))

    def restart_clock(self) -> None:
        self._started = time.perf_counter()

    async def take(self, session: aiohttp.ClientSession) -> Sample:
        status = read_status(self.pid)
        try:
            async with session.get(self.metrics_url) as response:
                values = gauges(await response.text(), (IN_FLIGHT, TASKS))
        except (TimeoutError, aiohttp.ClientError):
            values = {}
        now, busy = time.perf_counter(), sum(core_busy_seconds().values())
        busy_cores = (busy - self._busy[1]) / max(now - self._busy[0], 1e-6)
        self._busy = (now, busy)
        sample = Sample(round(now - self._started, 1), status["rss_kb"], status["fds"], status["threads"],
                        round(cpu_seconds(self.pid), 2), values.get(IN_FLIGHT), values.get(TASKS),
                        float(Path("/proc/loadavg").read_text().split()[0]), round(busy_cores, 2))
        self.samples.append(sample)
        return sample

    def summary(self, warmup_s: float) -> dict[str, Any]:
        """Growth after warm-up: the last minute's median against the minute after warm-up.

        Medians over a minute, not single samples: RSS and descriptors move with the requests
        in flight at the moment of a sample, which is noise, not growth.
        """
        after = [s for s in self.samples if s.t_s >= warmup_s]
        if len(after) < 2:
            return {"error": "not enough samples after warm-up"}
        span = after[-1].t_s - after[0].t_s
        window = min(60.0, span / 3)
        early = [s for s in after if s.t_s <= after[0].t_s + window]
        late = [s for s in after if s.t_s >= after[-1].t_s - window]

        def median(rows: list[Sample], name: str) -> float:
            return float(statistics.median(getattr(r, name) for r in rows))

        rss0, rss1 = median(early, "rss_kb"), median(late, "rss_kb")
        fds0, fds1 = median(early, "fds"), median(late, "fds")
        slope = _slope([(s.t_s / 60, s.rss_kb) for s in after])
        return {
            "warmup_s": warmup_s, "window_s": round(window, 1),
            "rss_kb_after_warmup": rss0, "rss_kb_end": rss1,
            "rss_growth": round((rss1 - rss0) / rss0, 4), "rss_slope_kb_per_min": round(slope, 1),
            "rss_kb_max": max(s.rss_kb for s in after),
            "fds_after_warmup": fds0, "fds_end": fds1, "fds_growth": fds1 - fds0,
            "fds_max": max(s.fds for s in after),
            "threads_end": after[-1].threads,
            **_task_counts(after, early, late, idle=(self.samples[0], self.samples[-1])),
            "loadavg_1m_max": max(s.loadavg_1m for s in self.samples),
            "busy_cores_median": median(after, "busy_cores"),
        }

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples]


def _task_counts(after: list[Sample], early: list[Sample], late: list[Sample],
                 idle: tuple[Sample, Sample]) -> dict[str, Any]:
    """Tasks after warm-up and at the end (medians, like descriptors); and idle, before the
    first request and once the traffic stopped and settled, where any difference is a leak."""
    first = [s.tasks for s in early if s.tasks is not None]
    last = [s.tasks for s in late if s.tasks is not None]
    if not first or not last:
        return {"tasks": "not observable: the gateway exports no switchyard_asyncio_tasks"}
    t0, t1 = float(statistics.median(first)), float(statistics.median(last))
    return {"tasks_after_warmup": t0, "tasks_end": t1, "tasks_growth": t1 - t0,
            "tasks_max": max(s.tasks for s in after if s.tasks is not None),
            "tasks_idle_start": idle[0].tasks, "tasks_idle_end": idle[1].tasks}


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
