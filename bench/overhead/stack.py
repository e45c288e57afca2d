"""What the load goes to: the simulator, the gateway under either ASGI server, a floor proxy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import yaml

from bench.overhead.procs import (
    CLIENT_CORE,
    GATEWAY_CORE,
    Service,
    bin_path,
    free_port,
    pinned,
    start,
)
from gateway.local_stack import DEMO_KEY
from policies.keys import hash_key

API_KEY = DEMO_KEY
"""The tenant key the load generator sends (also sent direct, where the sim ignores it)."""
PUBLIC_MODEL = "bench-model"
SIM_MODEL = "sim-model"

Server = Literal["uvicorn", "granian"]


def bench_policy(sim_url: str) -> dict[str, object]:
    """One model on one SGLang worker (round robin), one tenant with one key."""
    return {
        "version": "bench-overhead",
        "backends": {
            "sim": {"kind": "sglang", "workers": [sim_url], "health_interval_s": 5.0,
                    "selection": {"type": "round_robin"}},
        },
        "models": {PUBLIC_MODEL: {"deployments": [{"backend": "sim", "model": SIM_MODEL}]}},
        "tenants": {"bench": {"models": ["*"], "keys": [{"name": "bench-key", "sha256": hash_key(API_KEY)}]}},
    }


def write_policy(workdir: Path, sim_url: str) -> Path:
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(bench_policy(sim_url), sort_keys=False), encoding="utf-8")
    return path


def start_sim(workdir: Path) -> Service:
    """``switchyard sim --kind sglang --zero-latency`` on the client core."""
    port = free_port()
    argv = [bin_path("switchyard"), "sim", "--kind", "sglang", "--zero-latency", "--port", str(port),
            "--model", SIM_MODEL, "--worker-id", "bench-sim", "--enable-cache-report"]
    return start("sim", pinned(CLIENT_CORE, argv), f"http://127.0.0.1:{port}", workdir / "logs",
                 ready_path="/health")


def gateway_argv(server: Server, policy: Path, port: int) -> list[str]:
    """``switchyard serve`` under either ASGI server, as operators start it (one process)."""
    return [bin_path("switchyard"), "serve", "--server", server, "--policy", str(policy),
            "--port", str(port), "--workers", "1", "--log-level", "warning"]


def start_gateway(workdir: Path, policy: Path, server: Server = "uvicorn") -> Service:
    """The gateway alone on its core, ready once ``/readyz`` answers 200."""
    port = free_port()
    return start(f"gateway-{server}", pinned(GATEWAY_CORE, gateway_argv(server, policy, port)),
                 f"http://127.0.0.1:{port}", workdir / "logs", ready_path="/readyz")


def start_floor(workdir: Path, client: str, upstream: str) -> Service:
    """A featureless pass-through proxy (``bench/overhead/floor.py``) on the gateway's core."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.overhead.floor", "--client", client, "--upstream", upstream,
            "--port", str(port)]
    return start(f"floor-{client}", pinned(GATEWAY_CORE, argv), f"http://127.0.0.1:{port}",
                 workdir / "logs", ready_path="/health")
