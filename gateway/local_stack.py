"""A whole Switchyard on one machine: simulated upstreams, a policy over them, the gateway.

The demo runs on it, and so do the integration tests: real servers on 127.0.0.1, in the
current event loop, with no Redis and no GPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from backends.sim import RunningSim, SimConfig, start_sim
from gateway.app import create_app
from gateway.server import uvicorn_config
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from policies.keys import hash_key

DEMO_KEY = "sy-demo-key"
"""Plain value of the demo tenant's key (it may use every model)."""
TEAM_B_KEY = "sy-team-b-key"
"""Plain value of a second tenant's key, limited to the local model."""
ADMIN_KEY = "sy-admin-key"
"""Plain value of the admin key (``/admin/*``)."""
UPSTREAM_OPENAI_KEY = "sim-openai-upstream-key"
UPSTREAM_ANTHROPIC_KEY = "sim-anthropic-upstream-key"
LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL = "llama-3.1-8b", "gpt-4o-mini", "claude-sonnet"
AUTO_ROUTE = "auto"
"""Difficulty route: easy prompts to the local model, hard ones to Claude."""
EMBED_LOCAL_MODEL, EMBED_OPENAI_MODEL = "embed-local", "embed-openai"
"""Embedding models (``start_local_stack(embeddings=True)``): an SGLang worker started with
``--is-embedding``, and the OpenAI sim's embeddings."""


def add_embedding_models(document: dict[str, Any], sglang_url: str) -> None:
    """Put ``embed-local`` (a SGLang embedding worker at ``sglang_url``) and ``embed-openai``
    (on the OpenAI backend) into a stack policy."""
    document["backends"]["local-embed"] = {
        "kind": "sglang", "workers": [sglang_url], "health_interval_s": 1.0,
        "timeouts": {"connect_s": 2, "first_byte_s": 10, "idle_s": 10}}
    document["models"][EMBED_LOCAL_MODEL] = {
        "kind": "embedding", "deployments": [{"backend": "local-embed", "model": "sim-embed"}],
        "context": {"context_window": 512, "reserve_output_tokens": 0}}
    document["models"][EMBED_OPENAI_MODEL] = {
        "kind": "embedding", "deployments": [{"backend": "openai", "model": "sim-embed-3"}],
        "prices": {"input": 0.02, "output": 0}}


def stack_policy(sglang_urls: list[str], openai_url: str, anthropic_url: str,
                 selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The demo policy over the given upstream URLs, as a plain document."""
    return {
        "version": "local-stack",
        "admin_key_sha256": hash_key(ADMIN_KEY),
        "backends": {
            "local": {"kind": "sglang", "workers": sglang_urls, "health_interval_s": 1.0,
                      "timeouts": {"connect_s": 2, "first_byte_s": 10, "idle_s": 10},
                      "selection": dict(selection or {"type": "round_robin"})},
            "openai": {"kind": "openai", "base_url": openai_url + "/v1",
                       "api_key_env": "SWITCHYARD_SIM_OPENAI_KEY", "health_interval_s": 5.0},
            "claude": {"kind": "anthropic", "base_url": anthropic_url,
                       "api_key_env": "SWITCHYARD_SIM_ANTHROPIC_KEY", "health_interval_s": 5.0},
        },
        "models": {
            # calibrated to the simulator's ChatML template (docs/limits.md): never undercounts it
            LOCAL_MODEL: {"deployments": [{"backend": "local", "model": "sim-llama"}],
                          "tokens": {"tokens_per_message": 13, "safety_margin_tokens": 5}},
            OPENAI_MODEL: {"deployments": [{"backend": "openai", "model": "sim-gpt"}]},
            ANTHROPIC_MODEL: {"deployments": [{"backend": "claude", "model": "sim-claude"}]},
        },
        "routes": {
            AUTO_ROUTE: {"cheap": LOCAL_MODEL, "strong": ANTHROPIC_MODEL, "strong_share": 0.3,
                         "allow_tier_header": True},
        },
        "tenants": {
            "demo": {"models": ["*"], "keys": [{"name": "demo-key", "sha256": hash_key(DEMO_KEY)}]},
            "team-b": {"models": [LOCAL_MODEL],
                       "keys": [{"name": "team-b-key", "sha256": hash_key(TEAM_B_KEY)}]},
        },
    }


@dataclass
class LocalStack:
    """Running simulators and gateway; ``url`` is the gateway's base (append ``/v1``)."""

    url: str
    policy_path: Path
    sglang: list[RunningSim]
    openai: RunningSim
    anthropic: RunningSim
    app: Any
    server: uvicorn.Server
    _task: asyncio.Task[None] = field(repr=False)
    embedder: RunningSim | None = None
    """The SGLang embedding worker, with ``start_local_stack(embeddings=True)``."""

    async def aclose(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self._task, timeout=10)
        for sim in (*self.sglang, self.openai, self.anthropic, *([self.embedder] if self.embedder else [])):
            await sim.aclose()


async def start_local_stack(
    workdir: Path,
    *,
    sglang_workers: int = 2,
    sim: SimConfig | None = None,
    selection: Mapping[str, Any] | None = None,
    edit_policy: Callable[[dict[str, Any]], None] | None = None,
    settings_overrides: Mapping[str, Any] | None = None,
    telemetry: Telemetry | None = None,
    wrap_app: Callable[[Any], Any] | None = None,
    embeddings: bool = False,
) -> LocalStack:
    """Start ``sglang_workers`` SGLang sims, an OpenAI and an Anthropic sim, and the gateway.

    ``sim`` is the template for every simulator (latency model, cache size, whether SGLang
    reports cached tokens: the default template does); the worker id, kind and key are filled
    in per simulator. ``selection`` is the SGLang pool's worker
    selection (default round robin). ``edit_policy`` may change the generated policy
    document (it knows the simulators' URLs by then) before the gateway loads it.
    ``telemetry`` replaces the default one (tests pass an in-memory span exporter).
    ``wrap_app`` wraps the ASGI app that is served (the tests' OpenAI-spec check);
    ``LocalStack.app`` stays the gateway's own app. ``embeddings`` adds an SGLang embedding
    worker and the embedding models ``embed-local`` and ``embed-openai``.
    """
    # SGLang workers as the Helm chart starts them: --enable-cache-report and --enable-metrics
    # (both off in SGLang itself; load-aware selection reads the worker's queue from /metrics)
    base = sim or SimConfig(itl_ms=2.0, prefill_us_per_token=20.0, enable_cache_report=True,
                            enable_metrics=True)
    sglang = [await start_sim(dataclasses.replace(base, kind="sglang", worker_id=f"local-{i}",
                                                  model="sim-llama", port=0))
              for i in range(sglang_workers)]
    openai = await start_sim(dataclasses.replace(base, kind="openai", worker_id="openai-sim",
                                                 model="sim-gpt", api_key=UPSTREAM_OPENAI_KEY, port=0))
    anthropic = await start_sim(dataclasses.replace(base, kind="anthropic", worker_id="anthropic-sim",
                                                    model="sim-claude", api_key=UPSTREAM_ANTHROPIC_KEY,
                                                    port=0))
    # the upstream keys reach the gateway the way operators pass them: through the environment
    os.environ["SWITCHYARD_SIM_OPENAI_KEY"] = UPSTREAM_OPENAI_KEY
    os.environ["SWITCHYARD_SIM_ANTHROPIC_KEY"] = UPSTREAM_ANTHROPIC_KEY
    document = stack_policy([s.url for s in sglang], openai.url, anthropic.url, selection)
    embedder = None
    if embeddings:
        embedder = await start_sim(dataclasses.replace(base, kind="sglang", worker_id="local-embed",
                                                       model="sim-embed", is_embedding=True, port=0))
        add_embedding_models(document, embedder.url)
    if edit_policy is not None:
        edit_policy(document)
    policy_path = workdir / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    # access lines would drown the demo's output and the tests' logs: asked for explicitly
    settings = Settings(policy_path=policy_path, **{"access_log": "off", **dict(settings_overrides or {})})
    app = create_app(settings, telemetry)
    server = uvicorn.Server(uvicorn_config(wrap_app(app) if wrap_app else app, "127.0.0.1", 0))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # re-raise why the server could not start
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return LocalStack(f"http://127.0.0.1:{port}", policy_path, sglang, openai, anthropic, app,
                      server, task, embedder)
