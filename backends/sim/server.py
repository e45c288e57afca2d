"""Start and stop simulated upstreams: in the current event loop, or as ``switchyard sim``.

Every kind of sim is an aiohttp app built by one function in ``SIM_KINDS``; ``build_app``
adds what all kinds share (``/sim/stats``, ``/sim/requests`` and the ``x-sim-worker`` header).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from backends.sim.config import SimConfig
from backends.sim.engine import SimEngine
from backends.sim.flags import config_from_args
from backends.sim.sglang_app import build_openai_app, build_sglang_app

AppBuilder = Callable[[SimConfig, SimEngine], web.Application]


def _build_anthropic_app(config: SimConfig, engine: SimEngine) -> web.Application:
    # imported on use: the Anthropic sim is optional for the other kinds
    from backends.sim.anthropic import build_anthropic_app

    return build_anthropic_app(config, engine)


SIM_KINDS: Mapping[str, AppBuilder] = types.MappingProxyType(
    {"sglang": build_sglang_app, "openai": build_openai_app, "anthropic": _build_anthropic_app}
)
"""How to build the app of each ``SimConfig.kind``."""

_SHUTDOWN_TIMEOUT_S = 0.5  # hung test requests must not hold up aclose()


def build_app(config: SimConfig, engine: SimEngine) -> web.Application:
    """The app of ``config.kind``, plus the routes and header every sim has.

    Raises:
        ValueError: for an unknown kind.
    """
    builder = SIM_KINDS.get(config.kind)
    if builder is None:
        raise ValueError(f"unknown sim kind {config.kind!r}; expected one of {sorted(SIM_KINDS)}")
    app = builder(config, engine)

    async def stats(request: web.Request) -> web.Response:
        return _json(engine.stats.to_dict())

    async def recent(request: web.Request) -> web.Response:
        return _json(engine.recent_requests())

    async def name_worker(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-sim-worker"] = config.worker_id

    app.router.add_get("/sim/stats", stats)
    app.router.add_get("/sim/requests", recent)
    app.on_response_prepare.append(name_worker)
    return app


def _json(body: Any) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


@dataclass(slots=True)
class RunningSim:
    """A sim serving on a socket; ``aclose`` stops it."""

    config: SimConfig
    engine: SimEngine
    """Its engine: stats, cache and recent requests, for assertions."""
    port: int
    _runner: web.AppRunner

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (add ``/v1`` for OpenAI clients)."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        """Stop listening and cancel requests still running."""
        await self._runner.cleanup()


async def start_sim(config: SimConfig, *, rng: random.Random | None = None) -> RunningSim:
    """Serve a sim in the current event loop (port 0 picks a free port).

    Args:
        config: The sim's knobs.
        rng: Randomness for ``fail_rate``; seeded from ``config.seed`` if omitted.
    """
    engine = SimEngine(config, rng)
    # handler_cancellation: a client that leaves cancels its handler, which counts it
    runner = web.AppRunner(
        build_app(config, engine),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return RunningSim(config, engine, port, runner)


# --- command line -------------------------------------------------------------------------


def run_sim(args: argparse.Namespace) -> int:
    """Serve one sim until SIGINT or SIGTERM, printing its URL first; returns the exit code."""
    config = config_from_args(args)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_forever(config))
    return 0


async def _serve_forever(config: SimConfig) -> None:
    sim = await start_sim(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    print(sim.url, flush=True)
    try:
        await stop.wait()
    finally:
        await sim.aclose()
