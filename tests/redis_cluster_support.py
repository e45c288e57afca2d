"""A real Redis Cluster for the tests: three masters, each with one replica, on loopback.

Started from ``redis-server --cluster-enabled yes`` processes in a scratch directory and joined
with ``redis-cli --cluster create`` (as operators build one); a short node timeout lets a
replica take over a killed master within a couple of seconds.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 50_000)
        if _is_free(port) and _is_free(port + 10_000):
            return port


class LocalRedisCluster:
    """Six ``redis-server`` processes (3 masters + 3 replicas) forming one cluster."""

    def __init__(self, workdir: Path, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self._workdir = workdir
        self.ports = [cluster_port() for _ in range(masters * 2)]
        self._node_timeout_ms = node_timeout_ms
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            self._start(port)
        for port in self.ports:
            _wait_for_port(port)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, timeout=30, check=False)
        if created.returncode != 0:
            self.close()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]!r}")
        self.wait_until_ok()
        self._wait_for_replicas()

    def _wait_for_replicas(self, timeout_s: float = 20.0) -> None:
        """A replica that has not finished its first sync refuses to take over: wait for all."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [self.cli(p, "info", "replication") for p in self.ports]
            if all("master_link_status:up" in info for info in infos if "role:slave" in info):
                return
            time.sleep(0.1)
        raise TimeoutError("the replicas did not finish their first sync")

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _start(self, port: int) -> None:
        self.processes[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(self._node_timeout_ms),
             "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--dir", str(self._workdir), "--logfile", f"redis-{port}.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, timeout=5, check=False)
        return done.stdout.decode()

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        live = next(p for p in self.ports if self.processes[p].poll() is None)
        slot = int(self.cli(live, "cluster", "keyslot", key).strip())
        for line in self.cli(live, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise LookupError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node: its replica must take over."""
        self.processes[port].kill()
        self.processes[port].wait(5)

    def wait_for_failover(self, key: str, old_master: int, timeout_s: float = 20.0) -> int:
        """Wait until another master serves ``key`` and the cluster is ok again; its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                master = self.master_of(key)
            except LookupError:
                master = old_master
            if master != old_master:
                self.wait_until_ok(max(0.1, deadline - time.monotonic()))
                return master
            time.sleep(0.1)
        raise TimeoutError(f"no replica took over {key}'s slot from {old_master}")

    def wait_until_ok(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = [p for p in self.ports if self.processes[p].poll() is None]
            if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in live):
                return
            time.sleep(0.1)
        raise TimeoutError("the cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


def start_cluster_or_skip(workdir: Path) -> LocalRedisCluster:
    """A cluster, or a skip when ``redis-server`` is not installed (``.ci/run`` installs it)."""
    try:
        subprocess.run(["redis-server", "--version"], capture_output=True, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    return LocalRedisCluster(workdir)
