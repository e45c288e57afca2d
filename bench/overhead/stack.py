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
    """The bare policy: one model on one SGLang worker (round robin), one tenant with one key."""
    return {
        "version": "bench-overhead",
        "backends": {
            "sim": {"kind": "sglang", "workers": [sim_url], "health_interval_s": 5.0,
                    "selection": {"type": "round_robin"}},
        },
        "models": {PUBLIC_MODEL: {"deployments": [{"backend": "sim", "model": SIM_MODEL}]}},
        "tenants": {"bench": {"models": ["*"], "keys": [{"name": "bench-key", "sha256": hash_key(API_KEY)}]}},
    }


def production_policy(sim_url: str) -> dict[str, object]:
    """Issue 17's production policy: what an operator turns on, every limit far above the load.

    Cache-aware selection, cl100k_base token counting, a context budget that truncates, prices,
    rate limits and budgets, input and output moderation with their defaults. Nothing is ever
    refused or trimmed at this load, so every difference from the bare policy is bookkeeping.
    """
    return {
        "version": "bench-overhead-production",
        "backends": {
            "sim": {"kind": "sglang", "workers": [sim_url], "health_interval_s": 5.0,
                    "selection": {"type": "cache_aware"}},
        },
        "models": {PUBLIC_MODEL: {
            "deployments": [{"backend": "sim", "model": SIM_MODEL}],
            "tokens": {"tokenizer": "cl100k_base"},
            "context": {"context_window": 32768, "max_output_tokens": 4096, "reserve_output_tokens": 1024,
                        "overflow_action": "truncate_middle", "max_tokens_overflow": "clamp"},
            "prices": {"input": 0.10, "cached_input": 0.01, "output": 0.40},
        }},
        "tenants": {"bench": {
            "models": ["*"],
            "rate_limits": {"rpm": 100_000_000, "tpm": 1_000_000_000_000},
            "budgets": {"daily_tokens": 1_000_000_000_000, "monthly_usd": 1_000_000_000},
            "keys": [{"name": "bench-key", "sha256": hash_key(API_KEY)}],
        }},
        "moderation": {"default": {"input": {}, "output": {}}},
    }


def write_policy(workdir: Path, sim_url: str, *, production: bool = False, suffix: str = "") -> Path:
    """The bare (or production) policy as YAML in ``workdir``."""
    path = workdir / f"policy{'-production' if production else ''}{suffix}.yaml"
    document = production_policy(sim_url) if production else bench_policy(sim_url)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def start_sim(workdir: Path, *, zero_latency: bool = True) -> Service:
    """``switchyard sim --kind sglang --zero-latency`` on the client core; with ``zero_latency``
    off, the simulator's SGLang latency model (prefill, decode steps) at its defaults."""
    port = free_port()
    argv = [bin_path("switchyard"), "sim", "--kind", "sglang", "--port", str(port), "--model", SIM_MODEL,
            "--worker-id", "bench-sim" if zero_latency else "bench-sim-prefill", "--enable-cache-report"]
    if zero_latency:
        argv.append("--zero-latency")
    return start("sim" if zero_latency else "sim-prefill", pinned(CLIENT_CORE, argv), f"http://127.0.0.1:{port}",
                 workdir / "logs", ready_path="/health")


def gateway_argv(server: Server, policy: Path, port: int) -> list[str]:
    """``switchyard serve`` under either ASGI server, as operators start it (one process)."""
    return [bin_path("switchyard"), "serve", "--server", server, "--policy", str(policy),
            "--port", str(port), "--workers", "1", "--log-level", "warning"]


def start_gateway(workdir: Path, policy: Path, server: Server = "uvicorn", *, redis_url: str = "",
                  tree: Path | None = None, label: str = "") -> Service:
    """The gateway alone on its core, ready once ``/readyz`` answers 200.

    ``redis_url`` puts limits, budgets and the ledger on Redis (``REDIS_URL``); empty keeps
    them in process. The environment is set either way, so an operator's ``REDIS_URL`` does
    not leak into a cell meant to be in process. ``tree`` serves another source tree's code
    (``PYTHONPATH``, which imports before the installed package); ``label`` tells apart the
    logs of gateways started on the same policy.
    """
    port = free_port()
    env = {"REDIS_URL": redis_url, **({"PYTHONPATH": str(tree)} if tree is not None else {})}
    return start(f"gateway-{server}-{policy.stem}{'-redis' if redis_url else ''}{label}",
                 pinned(GATEWAY_CORE, gateway_argv(server, policy, port)),
                 f"http://127.0.0.1:{port}", workdir / "logs", ready_path="/readyz",
                 env=env, timeout=60.0)


def start_floor(workdir: Path, client: str, upstream: str) -> Service:
    """A featureless pass-through proxy (``bench/overhead/floor.py``) on the gateway's core."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.overhead.floor", "--client", client, "--upstream", upstream,
            "--port", str(port)]
    return start(f"floor-{client}", pinned(GATEWAY_CORE, argv), f"http://127.0.0.1:{port}",
                 workdir / "logs", ready_path="/health")
