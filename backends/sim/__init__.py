"""Simulated upstreams as real HTTP servers: an SGLang worker, an OpenAI-compatible provider and
an Anthropic provider, sharing one engine (prefix cache, latency model, stats)."""

from __future__ import annotations

from backends.sim.config import SimConfig
from backends.sim.engine import SimEngine
from backends.sim.server import RunningSim, add_sim_arguments, run_sim, start_sim

__all__ = ["RunningSim", "SimConfig", "SimEngine", "add_sim_arguments", "run_sim", "start_sim"]
