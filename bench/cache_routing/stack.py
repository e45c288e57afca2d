"""What the benchmark runs: four SGLang sims, gateway replicas per policy, SGLang's router.

Each is its own process (``bench.overhead.procs``), so the load client never shares an event
loop with what it measures. Nothing is pinned to a core: seven processes share two.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.overhead.procs import Service, bin_path, free_port, start
from gateway.local_stack import DEMO_KEY
from policies.keys import hash_key

API_KEY = DEMO_KEY
PUBLIC_MODEL = "bench-llama"
SIM_MODEL = "sim-llama"
POLICIES = ("round_robin", "random", "least_load", "power_of_two", "consistent_hash", "cache_aware")


@dataclass(frozen=True)
class SimSettings:
    """The latency model and cache size of every simulated worker."""

    workers: int = 4
    capacity_tokens: int = 16_000
    prefill_us_per_token: float = 100.0
    itl_ms: float = 10.0
    max_running: int = 16

    def argv(self, worker_id: str, port: int) -> list[str]:
        return [bin_path("switchyard"), "sim", "--kind", "sglang", "--port", str(port),
                "--worker-id", worker_id, "--model", SIM_MODEL,
                "--capacity-tokens", str(self.capacity_tokens),
                "--prefill-us-per-token", str(self.prefill_us_per_token),
                "--itl-ms", str(self.itl_ms), "--max-running", str(self.max_running),
                "--enable-cache-report"]  # the hit rates are read from usage.cached_tokens


def start_sims(settings: SimSettings, logs: Path) -> list[Service]:
    """``settings.workers`` SGLang sims, ``w0`` .. ``w3``, each ready on ``/health``."""
    sims: list[Service] = []
    try:
        for index in range(settings.workers):
            port = free_port()
            sims.append(start(f"sim-w{index}", settings.argv(f"w{index}", port),
                              f"http://127.0.0.1:{port}", logs, ready_path="/health"))
    except BaseException:
        stop_all(sims)
        raise
    return sims


def policy_document(sim_urls: list[str], selection: str) -> dict[str, Any]:
    """One public model on the sims' pool, selected by ``selection``, with the debug header on."""
    return {
        "version": f"bench-cache-routing-{selection}",
        "backends": {
            "pool": {"kind": "sglang", "workers": sim_urls, "health_interval_s": 1.0,
                     "timeouts": {"connect_s": 2, "first_byte_s": 30, "idle_s": 30},
                     "selection": {"type": selection, "debug_header": True}},
        },
        "models": {PUBLIC_MODEL: {"deployments": [{"backend": "pool", "model": SIM_MODEL}]}},
        "tenants": {"bench": {"models": ["*"],
                              "keys": [{"name": "bench-key", "sha256": hash_key(API_KEY)}]}},
    }


def start_gateways(sim_urls: list[str], selection: str, replicas: int, workdir: Path,
                   redis_url: str | None = None) -> list[Service]:
    """``replicas`` fresh ``switchyard serve`` processes (cold prefix trees), ready on ``/readyz``;
    with ``redis_url`` they share it (and so their conversation placements)."""
    policy = workdir / f"policy-{selection}.yaml"
    policy.write_text(yaml.safe_dump(policy_document(sim_urls, selection), sort_keys=False),
                      encoding="utf-8")
    gateways: list[Service] = []
    try:
        for replica in range(replicas):
            port = free_port()
            argv = [bin_path("switchyard"), "serve", "--policy", str(policy), "--port", str(port),
                    "--log-level", "warning"]
            gateways.append(start(f"gateway-{selection}-{replica}", argv, f"http://127.0.0.1:{port}",
                                  workdir / "logs", ready_path="/readyz",
                                  env={"REDIS_URL": redis_url} if redis_url else None))
    except BaseException:
        stop_all(gateways)
        raise
    return gateways


def has_sglang_router() -> bool:
    return importlib.util.find_spec("sglang_router") is not None


def start_sglang_routers(sim_urls: list[str], replicas: int, workdir: Path) -> list[Service]:
    """SGLang's router (``sglang_router.launch_router --policy cache_aware``), default knobs."""
    routers: list[Service] = []
    try:
        for replica in range(replicas):
            port = free_port()
            argv = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1",
                    "--port", str(port), "--policy", "cache_aware", "--worker-urls", *sim_urls,
                    "--log-level", "warn", "--prometheus-port", str(free_port())]
            routers.append(start(f"sglang-router-{replica}", argv, f"http://127.0.0.1:{port}",
                                 workdir / "logs", ready_path="/health", timeout=60))
    except BaseException:
        stop_all(routers)
        raise
    return routers


def stop_all(services: list[Service]) -> None:
    for service in reversed(services):
        service.stop()


@contextlib.contextmanager
def running(services: list[Service]) -> Iterator[list[Service]]:
    try:
        yield services
    finally:
        stop_all(services)


def flush(sims: list[Service]) -> None:
    """Empty every sim's prefix cache (SGLang ``POST /flush_cache``), so a run starts cold."""
    for sim in sims:
        request = urllib.request.Request(sim.url + "/flush_cache", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()


def sim_stats(sims: list[Service]) -> dict[str, dict[str, Any]]:
    """``GET /sim/stats`` of every sim, by worker id."""
    out = {}
    for index, sim in enumerate(sims):
        with urllib.request.urlopen(sim.url + "/sim/stats", timeout=5) as response:
            out[f"w{index}"] = json.loads(response.read())
    return out
