"""The runtime: a policy document compiled into live objects (pools, routes, key ring).

A new policy becomes a whole new ``Runtime``; the app swaps one reference, so a request
finishes under the runtime it started with.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx
import redis.asyncio as redis

from backends.anthropic import AnthropicBackend
from backends.base import Backend
from backends.http import Timeouts, open_session
from backends.openai_compat import OpenAICompatBackend
from backends.pool import WorkerPool
from backends.sglang import SGLangBackend
from gateway.accounting import Accounting
from gateway.response_cache import ResponseCache
from gateway.stores import CacheStore, MemoryCacheStore, RedisCacheStore
from policies.document import (
    AnthropicBackendConfig,
    BackendConfig,
    ModelConfig,
    Policy,
    SGLangBackendConfig,
    TimeoutsConfig,
)
from policies.keys import KeyRing
from policies.loader import PolicyError
from policies.rate_limit import MemoryRateLimiter, RateLimiter
from policies.spend import MemoryUsageLedger, UsageLedger
from policies.tokens import TokenCounter
from router import build_policy
from router.config import RoundRobinConfig, SelectionConfig
from router.decide import Deployment, ModelRoute
from router.tiering import DifficultyRoute, Scorer, share_threshold


def _timeouts(config: TimeoutsConfig) -> Timeouts:
    return Timeouts(connect=config.connect_s, first_byte=config.first_byte_s, idle=config.idle_s)


def _api_key(name: str, env_var: str | None, environ: Mapping[str, str]) -> str | None:
    if env_var is None:
        return None
    value = environ.get(env_var)
    if not value:
        raise PolicyError([(f"backends.{name}.api_key_env", f"environment variable {env_var} is not set")])
    return value


def _backends(name: str, config: BackendConfig, session: aiohttp.ClientSession,
              control: httpx.AsyncClient, key: str | None) -> list[Backend]:
    """The backends of one policy entry: one per SGLang worker URL, one for a provider API."""
    timeouts = _timeouts(config.timeouts)
    if isinstance(config, SGLangBackendConfig):
        return [SGLangBackend(f"{name}/{i}", str(url), session, control, timeouts, key,
                              health_path=config.health_path) for i, url in enumerate(config.workers)]
    if isinstance(config, AnthropicBackendConfig):
        return [AnthropicBackend(name, str(config.base_url), session, control, timeouts, key,
                                 prompt_caching=config.prompt_caching)]
    return [OpenAICompatBackend(name, str(config.base_url), session, control, timeouts, key)]


def _pool(name: str, config: BackendConfig, session: aiohttp.ClientSession,
          control: httpx.AsyncClient, environ: Mapping[str, str]) -> WorkerPool:
    key = _api_key(name, config.api_key_env, environ)
    return WorkerPool(name, _backends(name, config, session, control, key), config.health_interval_s)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    detail: str


class Runtime:
    """Everything one policy revision needs to serve requests.

    Build it with ``Runtime.build`` inside a running event loop (it opens HTTP pools), then
    ``await start()``; ``aclose()`` releases every pool and session.
    """

    def __init__(self, policy: Policy, pools: dict[str, WorkerPool], models: dict[str, ModelRoute],
                 sessions: list[aiohttp.ClientSession], control: httpx.AsyncClient,
                 response_caches: dict[str, ResponseCache],
                 routes: dict[str, DifficultyRoute],
                 accounting: Accounting) -> None:
        self.policy = policy
        self.keyring = KeyRing(policy)
        self.pools = pools
        self.models = models
        self.response_caches = response_caches
        """Per public model, for the models that enable ``response_cache``."""
        self.routes = routes
        """Difficulty routes by public name."""
        self.accounting = accounting
        """Admission and charging; the limiter and ledger outlive policy reloads."""
        self._sessions = sessions
        self._control = control

    @classmethod
    def build(cls, policy: Policy, *, max_connections: int = 0,
              environ: Mapping[str, str] | None = None, redis_client: redis.Redis | None = None,
              scorer: Scorer | None = None, scorer_error: str = "",
              limit_stores: tuple[RateLimiter, UsageLedger] | None = None) -> Runtime:
        """Compile ``policy``; raise ``PolicyError`` if it cannot run here (missing env var,
        difficulty routes without a working classifier).

        ``redis_client`` makes shared state (the response cache) live in Redis; ``scorer`` is
        the process's difficulty classifier (``scorer_error`` says why there is none).
        """
        routes = compile_routes(policy, scorer, scorer_error)
        counter = TokenCounter.load(m.tokens.tokenizer for m in policy.models.values())
        limiter, ledger = limit_stores or (MemoryRateLimiter(), MemoryUsageLedger())
        accounting = Accounting(counter, limiter, ledger)
        environ = os.environ if environ is None else environ
        control = httpx.AsyncClient(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=64))
        pools: dict[str, WorkerPool] = {}
        sessions: list[aiohttp.ClientSession] = []
        try:
            for name, config in policy.backends.items():
                session = open_session(max_connections)
                sessions.append(session)
                pools[name] = _pool(name, config, session, control, environ)
        except BaseException:
            for session in sessions:
                asyncio.get_running_loop().create_task(session.close())
            asyncio.get_running_loop().create_task(control.aclose())
            raise
        selectors = {name: build_policy(_selection_config(policy.backends[name])) for name in pools}
        for name, selector in selectors.items():
            pools[name].on_worker_removed(selector.on_worker_removed)
        models = {
            model_name: ModelRoute(model_name, tuple(
                Deployment(pools[d.backend], d.model, selectors[d.backend]) for d in model.deployments
            ))
            for model_name, model in policy.models.items()
        }
        caches = {name: _response_cache(name, model, redis_client)
                   for name, model in policy.models.items() if model.response_cache.enabled}
        return cls(policy, pools, models, sessions, control, caches, routes, accounting)

    async def start(self) -> None:
        """Check every worker once (so readiness is known), then keep checking in the background."""
        await asyncio.gather(*(pool.check_health() for pool in self.pools.values()))
        for pool in self.pools.values():
            pool.start()

    def readiness(self) -> Readiness:
        """Ready when every model has at least one healthy worker in some deployment."""
        missing = [
            name for name, route in self.models.items()
            if not any(d.pool.healthy_workers() for d in route.deployments)
        ]
        if missing:
            return Readiness(False, "no healthy deployment for: " + ", ".join(sorted(missing)))
        return Readiness(True, f"policy {self.policy.version}: {len(self.models)} models ready")

    async def aclose(self) -> None:
        await self.accounting.aclose()
        await asyncio.gather(*(pool.aclose() for pool in self.pools.values()))
        await asyncio.gather(*(session.close() for session in self._sessions))
        await self._control.aclose()


def compile_routes(policy: Policy, scorer: Scorer | None, error: str = "") -> dict[str, DifficultyRoute]:
    """The policy's difficulty routes, thresholds resolved; ``PolicyError`` if they cannot run."""
    routes: dict[str, DifficultyRoute] = {}
    for name, route in policy.routes.items():
        if scorer is None:
            raise PolicyError([(f"routes.{name}", f"needs the difficulty classifier, which failed to load: {error}")])
        threshold = route.threshold
        if threshold is None:
            try:
                threshold = share_threshold(scorer, route.strong_share or 0.0)
            except ValueError as exc:
                raise PolicyError([(f"routes.{name}.strong_share", str(exc))]) from None
        routes[name] = DifficultyRoute(name, route.cheap, route.strong, threshold,
                                       route.allow_tier_header, scorer)
    return routes


def _response_cache(name: str, model: ModelConfig, client: redis.Redis | None) -> ResponseCache:
    config = model.response_cache
    # the deployments are the model's version: change them and old answers stop being served
    version = hashlib.sha256(model.model_dump_json(include={"deployments"}).encode()).hexdigest()[:16]
    store: CacheStore = (RedisCacheStore(client, f"switchyard:cache:{name}", config.max_entries)
                         if client is not None else MemoryCacheStore(config.max_entries))
    return ResponseCache(store, config.ttl_s, config.max_entry_bytes, f"{name}:{version}")


def _selection_config(config: BackendConfig) -> SelectionConfig:
    # only SGLang pools have several workers to choose from; a provider is one "worker"
    return config.selection if isinstance(config, SGLangBackendConfig) else RoundRobinConfig()
