"""Child processes of the benchmark: start pinned to a core, wait until ready, read CPU, stop.

Everything under test runs as its own process so its CPU time can be read from ``/proc`` and
so the load generator never shares an event loop (or a GIL) with what it measures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GATEWAY_CORE = 0
"""The gateway (or the proxy standing in for it) runs alone on this core."""
CLIENT_CORE = 1
"""The simulator and the load generator share this one."""

_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[2]
"""The repository root: children run from it so ``python -m bench...`` imports."""


def pinned(core: int, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed with ``taskset -c core`` when taskset exists and the core does."""
    if shutil.which("taskset") and core < (os.cpu_count() or 1):
        return ["taskset", "-c", str(core), *argv]
    return list(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bin_path(name: str) -> str:
    """A console script of this virtualenv (``switchyard``, ``granian``, ``py-spy``)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (granian serves from a child worker process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, from ``/proc/<pid>/stat``."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def peak_rss_mb(pid: int) -> float:
    """The largest peak resident set (``VmHWM``) in ``pid``'s process tree, in MiB.

    The peak since the process started: read at the end of a cell, it covers start-up (models
    loaded) and the load. The largest member, not the sum: it is the serving process.
    """
    peak = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return round(peak / 1024, 1)


def core_busy_seconds() -> dict[str, float]:
    """Non-idle time of each core since boot, from ``/proc/stat`` (``cpu0``, ``cpu1``, ...).

    Compared with the CPU time of the process pinned to a core, it shows how much of that
    core something else took during a run: other work on a shared machine.
    """
    busy: dict[str, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values]
            busy[name] = (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICKS  # all but idle, iowait
    return busy


@dataclass
class Service:
    """A running child process serving HTTP at ``url``."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (a clean shutdown for uvicorn, granian, the sim and py-spy), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start(name: str, argv: Sequence[str], url: str, logs: Path, *, ready_path: str,
          env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Service:
    """Start ``argv`` with output to ``logs/<name>.log``; return once ``ready_path`` answers 200."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, cwd=REPO)
    service = Service(name, url, process, log_path)
    try:
        wait_ready(service, ready_path, timeout)
    except BaseException:
        service.stop()
        raise
    return service


def wait_ready(service: Service, path: str, timeout: float) -> None:
    """Poll ``GET url+path`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}; "
                               f"see {service.log_path}:\n{service.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(service.url + path, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{service.name} not ready at {service.url}{path} after {timeout:g}s")
