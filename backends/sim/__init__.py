"""Simulated upstreams as real HTTP servers: an SGLang worker, an OpenAI-compatible provider and
an Anthropic provider, sharing one engine (prefix cache, latency model, stats).

Names load on first use (PEP 562), so ``backends.sim.flags`` (the CLI's parser) imports
without aiohttp and the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from backends.sim.config import SimConfig
    from backends.sim.engine import SimEngine
    from backends.sim.flags import add_sim_arguments
    from backends.sim.server import RunningSim, run_sim, start_sim

__all__ = ["RunningSim", "SimConfig", "SimEngine", "add_sim_arguments", "run_sim", "start_sim"]

_HOME = {"SimConfig": "config", "SimEngine": "engine", "add_sim_arguments": "flags",
         "RunningSim": "server", "run_sim": "server", "start_sim": "server"}


__getattr__ = lazy_exports(__name__, _HOME)
