"""The runtime: a policy document compiled into live objects (pools, routes, key ring).

A new policy becomes a whole new ``Runtime``; the app swaps one reference, so a request
finishes under the runtime it started with.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx

from backends.anthropic import AnthropicBackend
from backends.base import Backend
from backends.discovery import build_discovery
from backends.http import Timeouts, open_session
from backends.openai_compat import OpenAICompatBackend
from backends.pool import WorkerPool
from backends.sglang import SGLangBackend, capability_gaps
from gateway.accounting import Accounting
from gateway.moderation import ModerationPolicies
from gateway.response_cache import ResponseCache
from gateway.shadow import ShadowMirrors
from gateway.stores import CacheStore, MemoryCacheStore, RedisCacheStore
from gateway.stores.placement_store import RedisPlacementStore
from gateway.upstream import RetryBudget
from policies.bounds_config import BoundsConfig
from policies.canary import CanaryController, CanaryRoutes
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
from policies.redis_client import RedisClient
from policies.spend import MemoryUsageLedger, UsageLedger
from policies.tokens import TokenCounter
from router import SelectionPolicy, build_policy
from router.config import RoundRobinConfig, SelectionConfig
from router.decide import Deployment, ModelRoute
from router.tiering import DifficultyRoute, Scorer, share_threshold

if TYPE_CHECKING:
    from gateway.telemetry import RequestRecord
    from policies.moderation.scorers import ModerationModels


def _timeouts(config: TimeoutsConfig, bounds: BoundsConfig) -> Timeouts:
    return Timeouts(connect=config.connect_s, first_byte=config.first_byte_s, idle=config.idle_s,
                    total=bounds.upstream_deadline_s, stream_total=bounds.stream_duration_s,
                    max_body_bytes=bounds.upstream_body_bytes, max_event_bytes=bounds.upstream_event_bytes,
                    max_decompressed_bytes=bounds.upstream_decompressed_bytes)


def _api_key(name: str, env_var: str | None, environ: Mapping[str, str]) -> str | None:
    if env_var is None:
        return None
    value = environ.get(env_var)
    if not value:
        raise PolicyError([(f"backends.{name}.api_key_env", f"environment variable {env_var} is not set")])
    return value


def _backends(name: str, config: BackendConfig, ids: list[str], session: aiohttp.ClientSession,
              control: httpx.AsyncClient, key: str | None, bounds: BoundsConfig) -> list[Backend]:
    """The backends of one policy entry: one per SGLang worker URL, one for a provider API."""
    timeouts = _timeouts(config.timeouts, bounds)
    if isinstance(config, SGLangBackendConfig):
        return [SGLangBackend(worker_id, str(url), session, control, timeouts, key,
                              health_path=config.health_path) for worker_id, url in zip(ids, config.workers)]
    if isinstance(config, AnthropicBackendConfig):
        return [AnthropicBackend(name, str(config.base_url), session, control, timeouts, key,
                                 prompt_caching=config.prompt_caching)]
    return [OpenAICompatBackend(name, str(config.base_url), session, control, timeouts, key)]


def _discovery(config: BackendConfig, session: aiohttp.ClientSession, control: httpx.AsyncClient,
               key: str | None, bounds: BoundsConfig) -> dict[str, Any]:
    """A discovering SGLang pool's source and how it builds a found worker's backend."""
    if not isinstance(config, SGLangBackendConfig) or config.discovery is None:
        return {}
    timeouts = _timeouts(config.timeouts, bounds)

    def make(worker_id: str, url: str) -> Backend:
        return SGLangBackend(worker_id, url, session, control, timeouts, key, health_path=config.health_path)

    return {"discovery": build_discovery(config.discovery), "make_backend": make}


def _worker_ids(name: str, config: BackendConfig, previous: BackendSlot | None) -> list[str]:
    """``pool/index`` per worker URL; a worker that stays keeps its id when the list changes,
    so routing state, metrics and headers follow it across a policy change."""
    if not isinstance(config, SGLangBackendConfig):
        return [name]
    known = {w.address: w.id for w in previous.pool.workers} if previous else {}
    taken = set(known.values())
    ids, next_index = [], 0
    for url in config.workers:
        address = str(url).rstrip("/")
        if address in known:
            ids.append(known[address])
            continue
        while f"{name}/{next_index}" in taken:
            next_index += 1
        ids.append(f"{name}/{next_index}")
        taken.add(ids[-1])
    return ids


@dataclass(eq=False)
class BackendSlot:
    """One policy backend, live: its pool, its connection pool and its worker selection.

    A new policy revision that leaves a backend's configuration unchanged takes the slot
    over as is (health, load, prefix trees and connections carry on); a changed backend
    gets a new slot, keeping the selection state when the selection options did not change.
    """

    config_json: str
    selection_json: str
    pool: WorkerPool
    session: aiohttp.ClientSession
    selector: SelectionPolicy
    departed: list[str] = field(default_factory=list)
    """Worker ids of the previous revision that this one no longer has."""

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.session.close()


def _slot(name: str, config: BackendConfig, previous: BackendSlot | None, max_connections: int,
          control: httpx.AsyncClient, environ: Mapping[str, str], bounds: BoundsConfig,
          redis_client: RedisClient | None = None) -> BackendSlot:
    # the bounds are part of every backend's construction: a change of them is a new slot
    config_json = config.model_dump_json() + bounds.model_dump_json()
    selection = _selection_config(config)
    selection_json = selection.model_dump_json()
    if previous is not None and previous.config_json == config_json:
        return previous
    key = _api_key(name, config.api_key_env, environ)
    ids = _worker_ids(name, config, previous)
    session = open_session(max_connections, compression=bounds.upstream_compression)
    resilience = config.resilience
    pool = WorkerPool(name, _backends(name, config, ids, session, control, key, bounds), config.health_interval_s,
                      resilience.circuit_breaker, resilience.max_concurrent_per_worker, resilience.queue_timeout_s,
                      **_discovery(config, session, control, key, bounds))
    keep_selector = previous is not None and previous.selection_json == selection_json
    # with Redis, replicas share where each conversation runs (router.placement)
    placements = RedisPlacementStore(redis_client, name) if redis_client is not None else None
    selector = previous.selector if keep_selector and previous else build_policy(selection, placements=placements)
    departed = sorted({w.id for w in previous.pool.workers} - set(ids)) if keep_selector and previous else []
    pool.on_worker_removed(selector.on_worker_removed)
    return BackendSlot(config_json, selection_json, pool, session, selector, departed)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    detail: str


def policy_digest(policy: Policy) -> str:
    """SHA-256 of the validated document: the same policy hashes alike however it is written."""
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


class Runtime:
    """Everything one policy revision needs to serve requests.

    Build it with ``Runtime.build`` inside a running event loop (it opens HTTP pools), then
    ``await start()``. Requests ``enter`` it and leave when their record finishes; a retired
    runtime waits for them (``drain``) before ``aclose`` releases what it alone owns.
    """

    def __init__(self, policy: Policy, slots: dict[str, BackendSlot], owned: set[str],
                 version_routes: dict[str, dict[str, ModelRoute]],
                 response_caches: dict[tuple[str, str], ResponseCache],
                 routes: dict[str, DifficultyRoute], accounting: Accounting,
                 versions: dict[tuple[str, str], str], moderation: ModerationPolicies,
                 canaries: CanaryController, canary: CanaryRoutes) -> None:
        self.policy = policy
        self.digest = policy_digest(policy)
        self.keyring = KeyRing(policy)
        self.slots = slots
        self.pools = {name: slot.pool for name, slot in slots.items()}
        self.version_routes = version_routes
        """Per public model, its versions' deployments (one, ``default``, without ``versions``)."""
        self.models = {name: by_version[policy.models[name].stable_version]
                       for name, by_version in version_routes.items()}
        """Per public model, the stable version's deployments."""
        self.response_caches = response_caches
        """Per (public model, version), for the models that enable ``response_cache``."""
        self.canaries = canaries
        """The process's canary controller (it outlives policy revisions)."""
        self.canary = canary
        """This revision's canary assignment (``assign(model, sticky_key)``)."""
        self.routes = routes
        """Difficulty routes by public name."""
        self.accounting = accounting
        """Admission and charging; the limiter and ledger outlive policy reloads."""
        self.versions = versions
        """Per (public model, version name), the label in metrics and traces (``version_label``)."""
        self.moderation = moderation
        self.retry_budget = RetryBudget(policy.retries)
        self.param_targets = {name: policy.route_param_targets(name) for name in policy.routes}
        """Per difficulty route, the backend kinds of both tiers (the parameter table refuses
        for the route what any of them refuses); compiled once, not per attempt."""
        """Retries left to all requests under this policy (``policies.document.RetryConfig``)."""
        self.active = 0
        """Requests started under this runtime and not finished yet."""
        self.shadows = ShadowMirrors()
        """Canary shadow requests started under this runtime (closed with it)."""
        self._owned = owned
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def build(cls, policy: Policy, *, control: httpx.AsyncClient, max_connections: int = 0,
              environ: Mapping[str, str] | None = None, redis_client: RedisClient | None = None,
              scorer: Scorer | None = None, scorer_error: str = "",
              limit_stores: tuple[RateLimiter, UsageLedger] | None = None,
              previous: Runtime | None = None, moderation_classifier: ModerationModels | None = None,
              moderation_error: str = "", canaries: CanaryController | None = None) -> Runtime:
        """Compile ``policy``; raise ``PolicyError`` if it cannot run here (missing env var,
        difficulty routes without a working classifier).

        ``control`` is the process's client for health and control routes (it outlives
        runtimes). ``redis_client`` makes shared state (the response cache) live in Redis;
        ``scorer`` is the process's difficulty classifier (``scorer_error`` says why there is
        none). ``previous`` is the runtime being replaced: unchanged backends are taken over.
        """
        routes = compile_routes(policy, scorer, scorer_error)
        moderation = compile_moderation(policy, moderation_classifier, moderation_error)
        counter = TokenCounter.load(m.tokens.tokenizer for m in policy.models.values())
        limiter, ledger = limit_stores or (MemoryRateLimiter(), MemoryUsageLedger())
        accounting = Accounting(counter, limiter, ledger, policy.limits)
        environ = os.environ if environ is None else environ
        old = previous.slots if previous else {}
        slots: dict[str, BackendSlot] = {}
        try:
            for name, config in policy.backends.items():
                slots[name] = _slot(name, config, old.get(name), max_connections, control, environ,
                                    policy.bounds, redis_client)
        except BaseException:
            for name, slot in slots.items():
                if slot is not old.get(name):
                    asyncio.get_running_loop().create_task(slot.aclose())
            raise
        owned = {name for name, slot in slots.items() if slot is not old.get(name)}
        version_routes = {
            model_name: {version: ModelRoute(model_name, tuple(
                Deployment(slots[d.backend].pool, d.model, slots[d.backend].selector) for d in deployments))
                for version, deployments in model.version_deployments().items()}
            for model_name, model in policy.models.items()
        }
        labels = {(name, version): version_label(model, version)
                  for name, model in policy.models.items() for version in model.version_deployments()}
        caches = {(name, version): _response_cache(name, policy.models[name], labels[name, version], redis_client)
                  for (name, version) in labels if policy.models[name].response_cache.enabled}
        controller = canaries or CanaryController.create(None)
        return cls(policy, slots, owned, version_routes, caches, routes, accounting, labels, moderation,
                   controller, controller.bind(policy))

    async def start(self) -> None:
        """Check every new worker once (so readiness is known), then keep checking in the
        background. Workers that left their pool are dropped from its selection state."""
        new = [self.slots[name] for name in self._owned]
        await asyncio.gather(*(slot.pool.check_health() for slot in new))
        for slot in new:
            for worker_id in slot.departed:
                slot.selector.on_worker_removed(worker_id)
            slot.pool.start()
        await self.canaries.activate(self.canary)
        self.accounting.start()  # renew reservations, charge a dead gateway's, replay outages

    def take_over(self, previous: Runtime) -> None:
        """Become the owner of the backends shared with ``previous`` (called once swapped in)."""
        shared = {name for name, slot in self.slots.items() if previous.slots.get(name) is slot}
        self._owned |= shared
        previous._owned -= shared

    def enter(self, record: RequestRecord) -> None:
        """Count a request in; it leaves when its record finishes."""
        self.active += 1
        self._idle.clear()
        record.on_finish.append(self._leave)

    def _leave(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request runs under this runtime; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def readiness(self) -> Readiness:
        """Ready when every model has at least one healthy worker in some deployment."""
        missing = [
            name for name, route in self.models.items()
            if not any(d.pool.healthy_workers() for d in route.deployments)
        ]
        if missing:
            return Readiness(False, "no healthy deployment for: " + ", ".join(sorted(missing)))
        # ready, but say what a worker's flags keep it from reporting rather than read zero
        gaps = [f"worker {worker.id} reports {gap}" for name in sorted(self.slots)
                for worker in self.slots[name].pool.workers for gap in capability_gaps(worker.last_health)]
        return Readiness(True, "; ".join([f"policy {self.policy.version}: {len(self.models)} models ready",
                                          *gaps]))

    async def aclose(self) -> None:
        """Finish (or cancel) shadow mirrors, flush accounting and close the backends this
        runtime owns (not those handed on)."""
        await self.shadows.aclose()
        await self.accounting.aclose()
        await asyncio.gather(*(self.slots[name].aclose() for name in sorted(self._owned)))
        self._owned = set()


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
        escalation = route.escalation_threshold
        routes[name] = DifficultyRoute(name, route.cheap, route.strong, threshold,
                                       route.allow_tier_header, scorer, sticky=route.sticky,
                                       escalation_threshold=(threshold + 1) / 2 if escalation is None else escalation,
                                       switch_cost_per_1k_tokens=route.switch_cost_per_1k_tokens)
    return routes


def compile_moderation(policy: Policy, classifier: ModerationModels | None, error: str = "") -> ModerationPolicies:
    """The policy's moderators; ``PolicyError`` if it checks categories without a classifier."""
    section = policy.moderation
    try:
        return ModerationPolicies(section.default, section.models, section.tenants, classifier)
    except ValueError as exc:
        raise PolicyError([("moderation", f"{exc} (the moderation classifier failed to load: {error})")]) from None


def version_label(model: ModelConfig, version: str) -> str:
    """A version's label in metrics, traces and cache keys: its name when the policy names
    versions; for a model with plain ``deployments``, a short hash of them, so a change of
    upstream model or backend still shows as a new version."""
    if model.versions:
        return version
    return hashlib.sha256(model.model_dump_json(include={"deployments"}).encode()).hexdigest()[:12]


def _response_cache(name: str, model: ModelConfig, version: str,
                    client: RedisClient | None) -> ResponseCache:
    config = model.response_cache
    store: CacheStore = (RedisCacheStore(client, f"switchyard:cache:{name}", config.max_entries)
                         if client is not None else MemoryCacheStore(config.max_entries))
    return ResponseCache(store, config.ttl_s, config.max_entry_bytes, f"{name}:{version}")


def _selection_config(config: BackendConfig) -> SelectionConfig:
    # only SGLang pools have several workers to choose from; a provider is one "worker"
    return config.selection if isinstance(config, SGLangBackendConfig) else RoundRobinConfig()
