"""One policy's world for a replay: simulators in place of its backends, the gateway on top.

Each SGLang worker URL of the policy gets its own simulated SGLang worker (so the pools keep
their sizes and selection has the same choices), each provider backend a simulated OpenAI or
Anthropic API. A copy of the policy document points at them, gets one known key per tenant
(``replay-<tenant>``) so each recorded request is charged to its recorded tenant, and is
served by a real gateway on a free port, with in-memory state: every replay starts with
empty rate-limit buckets, budgets and caches.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
import yaml

from backends.sim import RunningSim, SimConfig, start_sim
from gateway.app import create_app
from gateway.server import uvicorn_config
from gateway.settings import Settings
from policies.document import (
    AnthropicBackendConfig,
    OpenAIBackendConfig,
    Policy,
    SGLangBackendConfig,
)
from policies.keys import hash_key

BackendConfig = SGLangBackendConfig | OpenAIBackendConfig | AnthropicBackendConfig
REPLAY_KEY_NAME = "switchyard-replay"
"""Name of the key added to every tenant of a replayed policy."""
_READY_TIMEOUT_S = 15.0


class ReplayError(RuntimeError):
    """A replay that cannot run (the gateway does not get ready, a policy without tenants)."""


def replay_key(tenant: str) -> str:
    """The plain key a replay sends for ``tenant``."""
    return f"replay-{tenant}"


@dataclass
class Sandbox:
    """A running replay world; ``aclose`` stops everything and restores the environment."""

    url: str
    """The gateway's base URL (append ``/v1`` for OpenAI clients)."""
    policy: Policy
    """The policy as written (prices, tenants), not the rewritten copy."""
    workers: dict[str, str]
    """Gateway worker id (``x-switchyard-worker``, e.g. ``local/0``) -> the address it stands for."""
    sims: list[RunningSim]
    server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _saved_env: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def default_tenant(self) -> str:
        """The tenant of requests recorded without one: the policy's first."""
        if not self.policy.tenants:
            raise ReplayError("the policy has no tenants: there is no one to replay the traffic as")
        return next(iter(self.policy.tenants))

    async def aclose(self) -> None:
        try:
            if self.server is not None and self._task is not None:
                self.server.should_exit = True
                await asyncio.wait_for(self._task, timeout=10)
            for sim in self.sims:
                await sim.aclose()
        finally:
            _restore_env(self._saved_env)


async def start_sandbox(policy: Policy, document: Mapping[str, Any], workdir: Path,
                        sim: SimConfig) -> Sandbox:
    """Start simulators for every backend of ``policy`` and a gateway over them.

    Args:
        policy: The validated policy.
        document: The same policy as a plain document (it is copied, not changed).
        workdir: Where the rewritten policy file is written.
        sim: Template for every simulator (latency model, cache capacity, seed).
    """
    doc = copy.deepcopy(dict(document))
    sandbox = Sandbox("", policy, {}, [])
    try:
        env: dict[str, str] = {}
        for name, backend in policy.backends.items():
            # one key per variable: backends sharing a variable share the key, as in production
            key = env.setdefault(backend.api_key_env, f"replay-{backend.api_key_env}") \
                if backend.api_key_env else None
            doc["backends"][name].update(await _simulate(sandbox, name, backend, sim, key))
        for tenant_name, tenant in (doc.get("tenants") or {}).items():
            tenant.setdefault("keys", []).append(
                {"name": REPLAY_KEY_NAME, "sha256": hash_key(replay_key(tenant_name))})
        policy_path = workdir / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        sandbox._saved_env = _set_env(env)
        # replayed requests are not traffic: they stay out of the access log
        await _serve_gateway(sandbox, Settings(policy_path=policy_path, access_log="off"))
        await _wait_ready(sandbox.url)
    except BaseException:
        await sandbox.aclose()
        raise
    return sandbox


async def _simulate(sandbox: Sandbox, name: str, backend: BackendConfig, template: SimConfig,
                    key: str | None) -> dict[str, Any]:
    """Start the sims of one backend; the fields of its document entry that point at them."""
    served = _served_model(sandbox.policy, name)
    if isinstance(backend, SGLangBackendConfig):
        urls = []
        for index, url in enumerate(backend.workers):
            worker_id = f"{name}/{index}"  # the gateway's own name for this worker
            running = await start_sim(dataclasses.replace(
                template, kind="sglang", worker_id=worker_id, model=served, api_key=key, port=0))
            sandbox.sims.append(running)
            sandbox.workers[worker_id] = str(url).rstrip("/")
            urls.append(running.url)
        return {"workers": urls}
    running = await start_sim(dataclasses.replace(
        template, kind=backend.kind, worker_id=name, model=served, api_key=key, port=0))
    sandbox.sims.append(running)
    sandbox.workers[name] = str(backend.base_url).rstrip("/")
    # keep the original path (``/v1`` for OpenAI-compatible APIs, none for Anthropic)
    return {"base_url": running.url + urlsplit(str(backend.base_url)).path.rstrip("/")}


def _served_model(policy: Policy, backend: str) -> str:
    """The upstream model name the policy asks ``backend`` for (the first deployment's)."""
    for model in policy.models.values():
        for deployment in model.deployments:
            if deployment.backend == backend:
                return deployment.model
    return "sim-model"


async def _serve_gateway(sandbox: Sandbox, settings: Settings) -> None:
    """The gateway under uvicorn in this event loop, on a free port (as ``local_stack`` does)."""
    sandbox.server = uvicorn.Server(uvicorn_config(create_app(settings), "127.0.0.1", 0))
    sandbox._task = task = asyncio.create_task(sandbox.server.serve())
    while not sandbox.server.started:
        if task.done():
            task.result()  # re-raise why the server could not start
        await asyncio.sleep(0.01)
    port = sandbox.server.servers[0].sockets[0].getsockname()[1]
    sandbox.url = f"http://127.0.0.1:{port}"


def _set_env(values: Mapping[str, str]) -> dict[str, str | None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    return saved


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


async def _wait_ready(url: str) -> None:
    """Wait until ``/readyz`` says every model has a healthy deployment."""
    detail: Any = "no answer"
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
        deadline = asyncio.get_running_loop().time() + _READY_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            try:
                response = await client.get("/readyz")
            except httpx.HTTPError as exc:
                detail = str(exc)
            else:
                if response.status_code == 200:
                    return
                detail = response.json().get("detail")
            await asyncio.sleep(0.05)
    raise ReplayError(f"the gateway was not ready after {_READY_TIMEOUT_S:.0f} s: {detail}")
