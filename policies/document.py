"""The policy document: one YAML file declaring backends, models, tenants and keys.

Every field is typed and strictly validated; its docstring is the operator documentation
(``examples/policy.yaml`` repeats it field by field). Cross-references (a deployment naming
a backend, a tenant naming a model) are checked by ``reference_problems`` on the raw document.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from backends.circuit import CircuitBreakerConfig
from backends.config import StrictModel
from backends.discovery_config import DiscoveryConfig
from policies.bounds_config import BoundsConfig
from policies.canary.config import CanaryConfig
from policies.limits_config import (
    BudgetConfig,
    ContextConfig,
    LimitsStoreConfig,
    PriceConfig,
    RateLimitConfig,
    TokenCountingConfig,
)
from policies.moderation.config import ModerationConfig
from policies.responses_config import ResponsesConfig
from router.config import RoundRobinConfig, SelectionConfig

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_VERSION = "default"
"""The one version of a model that lists ``deployments`` instead of ``versions``."""


class TimeoutsConfig(StrictModel):
    """Time limits for calls to one backend, in seconds."""

    connect_s: Annotated[float, Field(gt=0)] = 5.0
    """Opening a TCP connection."""
    first_byte_s: Annotated[float, Field(gt=0)] = 60.0
    """From sending the request to the response headers and, for a stream, its first event."""
    idle_s: Annotated[float, Field(gt=0)] = 60.0
    """Longest silence between two events of a running stream."""


class ResilienceConfig(StrictModel):
    """Circuit breaking and load shedding for each worker of a backend."""

    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    max_concurrent_per_worker: Annotated[int, Field(ge=0)] = 0
    """Upstream requests this gateway process keeps open to one worker at once (0: no cap).
    Past it, requests wait for a free slot up to ``queue_timeout_s``, then get 503 with
    ``Retry-After`` (load shedding rather than collapse)."""
    queue_timeout_s: Annotated[float, Field(ge=0)] = 1.0


class RetryConfig(StrictModel):
    """Retries of requests that failed before their first byte (``retries`` at the top level).

    A failed attempt (connect error, timeout to first byte, upstream 5xx or 429, invalid
    answer) is retried on another worker of the same deployment, else on the model's next
    deployment (its fallback), with jittered exponential backoff. Never after the first byte
    of a stream. A retry budget shared by all requests keeps retries from turning an outage
    into a storm.
    """

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Attempts per request, the first included (1: no retries)."""
    backoff_initial_s: Annotated[float, Field(ge=0)] = 0.025
    backoff_max_s: Annotated[float, Field(ge=0)] = 0.5
    budget_ratio: Annotated[float, Field(ge=0)] = 0.2
    """Retries may add at most this share of requests ..."""
    budget_min_per_s: Annotated[float, Field(ge=0)] = 5.0
    """... plus this many per second, so a quiet gateway can still retry."""


class SGLangBackendConfig(StrictModel):
    """A pool of self-hosted SGLang workers serving the same model."""

    kind: Literal["sglang"]
    workers: list[AnyHttpUrl] = []
    """Base URLs of the workers, e.g. ``http://10.0.0.5:30000`` (at least one, or ``discovery``)."""
    discovery: DiscoveryConfig | None = None
    """Find the workers instead of listing them: ``dns`` (a headless Service's A/AAAA records)
    or ``kubernetes`` (a Service's EndpointSlices, watched); listed ``workers`` are kept too."""
    health_path: Literal["/health", "/health_generate"] = "/health"
    """``/health_generate`` runs a one-token generation: slower, but catches a wedged scheduler."""
    health_interval_s: Annotated[float, Field(gt=0)] = 5.0
    """Seconds between health checks (and ``/metrics`` load scrapes) of each worker."""
    api_key_env: str | None = None
    """Environment variable holding the workers' ``--api-key``, if they were started with one."""
    timeouts: TimeoutsConfig = TimeoutsConfig()
    selection: SelectionConfig = RoundRobinConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    """How a request picks one worker of the pool."""

    @model_validator(mode="after")
    def _has_workers(self) -> SGLangBackendConfig:
        if not self.workers and self.discovery is None:
            raise ValueError("list at least one of workers, or set discovery")
        return self


class OpenAIBackendConfig(StrictModel):
    """Any OpenAI-compatible API: OpenAI, vLLM, hosted providers."""

    kind: Literal["openai"]
    base_url: AnyHttpUrl
    """Root of the API, usually ending in ``/v1``."""
    api_key_env: str | None = None
    """Environment variable holding the provider key; the key itself never goes in this file."""
    health_interval_s: Annotated[float, Field(gt=0)] = 30.0
    timeouts: TimeoutsConfig = TimeoutsConfig()
    resilience: ResilienceConfig = ResilienceConfig()


class AnthropicBackendConfig(StrictModel):
    """Anthropic's Messages API; requests and streams are translated from and to OpenAI's."""

    kind: Literal["anthropic"]
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.anthropic.com")
    api_key_env: str | None = None
    """Environment variable holding the Anthropic key."""
    prompt_caching: bool = False
    """Mark the system prompt and tools with ``cache_control`` when long enough to be cached."""
    health_interval_s: Annotated[float, Field(gt=0)] = 30.0
    timeouts: TimeoutsConfig = TimeoutsConfig()
    resilience: ResilienceConfig = ResilienceConfig()


BackendConfig = Annotated[
    SGLangBackendConfig | OpenAIBackendConfig | AnthropicBackendConfig,
    Field(discriminator="kind"),
]
BACKEND_KINDS = ("sglang", "openai", "anthropic")


class DeploymentConfig(StrictModel):
    """Where a public model is served: a backend and the model name that backend knows."""

    backend: str
    """Name of an entry under ``backends``."""
    model: str
    """Model name sent upstream (SGLang's ``--served-model-name``, a provider's model id)."""
    drop_unsupported_params: bool | None = None
    """Drop the OpenAI parameters this backend kind refuses instead of answering 400
    (docs/api.md, the parameter table); unset: the model's ``drop_unsupported_params``."""


class ResponseCacheConfig(StrictModel):
    """Exact cache of complete chat responses for deterministic requests.

    Only requests with ``temperature: 0`` or a ``seed`` are cached; a client sending
    ``cache-control: no-cache`` skips it. In Redis when the gateway has ``REDIS_URL``
    (shared by all replicas), in memory otherwise. Tenants never see each other's entries.
    """

    enabled: bool = False
    ttl_s: Annotated[float, Field(gt=0)] = 300.0
    """Seconds an entry is served."""
    max_entries: Annotated[int, Field(ge=1)] = 10_000
    """Entries kept for this model (over all replicas with Redis); oldest go first."""
    max_entry_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    """Responses larger than this are not stored."""


class VersionConfig(StrictModel):
    """One version of a public model (``models.<name>.versions.<version>``)."""

    deployments: Annotated[list[DeploymentConfig], Field(min_length=1)]
    """Tried in order: the first with a healthy worker serves the request."""
    description: str = ""


class ModelConfig(StrictModel):
    """A public model name clients ask for.

    Give ``deployments`` (one version), or ``versions`` with ``stable`` and optionally a
    ``canary`` (docs/canary.md).
    """

    deployments: Annotated[list[DeploymentConfig], Field(default_factory=list)]
    """Tried in order: the first with a healthy worker serves the request."""
    versions: Annotated[dict[str, VersionConfig], Field(default_factory=dict)]
    """Named versions, each with its own deployments, instead of ``deployments``."""
    stable: str | None = None
    """The version that serves every request the canary does not take (a key of ``versions``)."""
    canary: CanaryConfig | None = None
    """A version under test: a split, a shadow, or an automatic rollout."""
    description: str = ""
    kind: Literal["chat", "embedding"] = "chat"
    """What it serves: ``chat`` (``/v1/chat/completions``, ``/v1/completions``) or
    ``embedding`` (``/v1/embeddings``; SGLang workers started with ``--is-embedding``, or an
    OpenAI-compatible API). A request to a model of the other kind is refused (400)."""
    response_cache: ResponseCacheConfig = ResponseCacheConfig()
    tokens: TokenCountingConfig = TokenCountingConfig()
    """How prompts are counted before the call (tokenizer, calibration for non-tiktoken models)."""
    context: ContextConfig | None = None
    """Context budget: window, output reserve, and what to do with a prompt that does not fit."""
    prices: PriceConfig | None = None
    """USD per million tokens, for spend accounting and money budgets."""
    drop_unsupported_params: bool = False
    """Drop the OpenAI parameters a deployment's backend kind refuses (``logit_bias`` on
    Anthropic, ...) instead of answering 400; a deployment can override it."""

    aliases: list[str] = []
    """Other names clients may send for this model: exact names, or patterns with ``*``
    (``claude-sonnet-*`` takes every Claude Sonnet name Claude Code sends). Exact aliases win
    over patterns; patterns are tried in document order."""

    cache_isolation: Literal["shared", "tenant"] = "shared"
    """``tenant``: no tenant can read another's prompts from the prefix cache (a per-tenant
    ``cache_salt`` on SGLang requests, per-tenant cache-aware routing, ``cached_tokens``
    withheld on hosted providers; router/isolation.py). ``shared``: tenants sharing a system
    prompt share its cached prefix, and can tell that it is cached."""

    def drops_unsupported_params(self, version: str, index: int) -> bool:
        """Whether deployment ``index`` of ``version`` drops what its backend kind refuses."""
        deployments = self.version_deployments().get(version, [])
        own = deployments[index].drop_unsupported_params if 0 <= index < len(deployments) else None
        return self.drop_unsupported_params if own is None else own

    @field_validator("versions")
    @classmethod
    def _version_names(cls, versions: dict[str, VersionConfig]) -> dict[str, VersionConfig]:
        for name in versions:
            if not _VERSION_NAME.match(name):
                raise ValueError(f"version name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
        return versions

    @model_validator(mode="after")
    def _deployments_or_versions(self) -> ModelConfig:
        if self.versions:
            if self.deployments:
                raise ValueError("give deployments or versions, not both")
            if self.stable is None:
                raise ValueError("a model with versions needs stable: the version serving by default")
        elif not self.deployments:
            raise ValueError("give deployments (or versions and stable)")
        elif self.stable is not None or self.canary is not None:
            raise ValueError("stable and canary name versions: give versions instead of deployments")
        return self

    @property
    def stable_version(self) -> str:
        """The name of the version serving by default (``DEFAULT_VERSION`` without versions)."""
        return self.stable or DEFAULT_VERSION

    def version_deployments(self) -> dict[str, list[DeploymentConfig]]:
        """Every version's deployments; a model without ``versions`` has one, ``DEFAULT_VERSION``."""
        if not self.versions:
            return {DEFAULT_VERSION: self.deployments}
        return {name: version.deployments for name, version in self.versions.items()}


Threshold = Annotated[float, Field(ge=0, le=1)]


class DifficultyRouteConfig(StrictModel):
    """A public name that sends each request to a cheap or a strong model by difficulty.

    The difficulty classifier scores P(the strong model is needed) for the request (its last
    user turn plus a little context); at or above the threshold the strong model answers.
    Give either ``threshold`` or ``strong_share``.
    """

    cheap: str
    """Public model name of the cheap tier (a key of ``models``)."""
    strong: str
    """Public model name of the strong tier (a key of ``models``)."""
    threshold: Threshold | None = None
    """Scores at or above this go to the strong model. Higher = cheaper, lower = safer."""
    strong_share: Threshold | None = None
    """Instead of a threshold: the share of traffic to send to the strong model. The gateway
    turns it into a threshold with the score distribution recorded in the model file
    (``switchyard route calibrate`` does the same on your own traffic sample)."""
    allow_tier_header: bool = False
    """Let clients force a tier with ``x-switchyard-tier: cheap|strong``."""
    aliases: list[str] = []
    """Other names clients may send for this route (as a model's ``aliases``)."""
    sticky: bool = True
    """Decide per conversation: a later turn keeps the tier its conversation runs on (a switch
    loses the cached prefix and changes the voice mid-conversation). A cheap conversation moves
    to the strong tier when a turn scores past ``escalation_threshold`` plus the switch cost; a
    strong one stays. False: every request is scored on its own."""
    escalation_threshold: Threshold | None = None
    """The bar for moving a cheap conversation to the strong tier; halfway between the
    route's threshold and 1 if unset."""
    switch_cost_per_1k_tokens: Annotated[float, Field(ge=0, le=1)] = 0.02
    """Added to the escalation bar per thousand tokens of the conversation (what the strong
    tier's worker would prefill uncached)."""

    @model_validator(mode="after")
    def _one_knob(self) -> DifficultyRouteConfig:
        if (self.threshold is None) == (self.strong_share is None):
            raise ValueError("give exactly one of threshold or strong_share")
        return self


class KeyConfig(StrictModel):
    """An API key, stored only as its SHA-256 (``switchyard keys hash`` makes one)."""

    name: str
    """Shown in logs and usage reports instead of the key."""
    sha256: str
    """Lower-case hex SHA-256 of the key's plain value."""
    route_thresholds: dict[str, Threshold] = {}
    """Per difficulty route, a threshold for this key (wins over the tenant's and the route's)."""
    rate_limits: RateLimitConfig | None = None
    """Requests and tokens per minute for this key alone (the tenant's limits apply too)."""
    budgets: BudgetConfig | None = None
    """Daily and monthly token and money caps for this key alone."""

    @field_validator("sha256")
    @classmethod
    def _is_hex_digest(cls, value: str) -> str:
        if not _SHA256_HEX.match(value):
            raise ValueError("must be 64 lower-case hex characters (switchyard keys hash)")
        return value


class TenantConfig(StrictModel):
    """A customer or team: its keys and the models they may use."""

    models: list[str] = ["*"]
    """Public model and route names this tenant may call; ``"*"`` allows every one. A route
    brings its two tiers with it."""
    keys: list[KeyConfig] = []
    route_thresholds: dict[str, Threshold] = {}
    """Per difficulty route, a threshold for this tenant (wins over the route's own)."""
    rate_limits: RateLimitConfig | None = None
    """Requests and tokens per minute shared by all of this tenant's keys."""
    budgets: BudgetConfig | None = None
    """Daily and monthly token and money caps for the whole tenant."""


class ObservabilityConfig(StrictModel):
    """What traces and the access log may contain."""

    capture_content: bool = False
    """Record prompts and completions: on the request span (``gen_ai.input.messages``,
    ``gen_ai.output.messages``) and in the access log (``request``, ``completion``, the
    session id), which is what ``switchyard replay`` reads. Off: no text is ever recorded."""


class ModerationSection(StrictModel):
    """Which moderation applies to a request: the tenant's section, else the model's, else
    ``default`` (``moderation:`` at the top level; docs/moderation-model.md)."""

    default: ModerationConfig | None = None
    models: dict[str, ModerationConfig] = {}
    """By public model name (a difficulty route's requests use the model they are routed to)."""
    tenants: dict[str, ModerationConfig] = {}


class Policy(StrictModel):
    """The whole policy document."""

    version: str = "1"
    """A label for this revision, shown by ``policy check`` and in logs."""
    backends: dict[str, BackendConfig]
    models: Annotated[dict[str, ModelConfig], Field(min_length=1)]
    routes: dict[str, DifficultyRouteConfig] = {}
    """Public names routed by difficulty to one of two models."""
    tenants: dict[str, TenantConfig] = {}
    limits: LimitsStoreConfig = LimitsStoreConfig()
    """How rate limits and budgets use Redis (timeouts, outage handling, retention)."""
    admin_key_sha256: str | None = None
    """SHA-256 of the admin key for ``/admin/*``; with none set, the admin API is off (404)."""
    observability: ObservabilityConfig = ObservabilityConfig()
    retries: RetryConfig = RetryConfig()
    moderation: ModerationSection = ModerationSection()
    bounds: BoundsConfig = BoundsConfig()
    """Size and time bounds on upstream answers and client connections (docs/reliability.md)."""
    responses: ResponsesConfig = ResponsesConfig()
    """Stored responses of the OpenAI Responses door (``store``, ``previous_response_id``)."""

    def route_param_targets(self, name: str) -> list[tuple[str, bool]]:
        """``(backend kind, drop_unsupported_params)`` of every deployment of both tiers of
        difficulty route ``name`` (empty for a model): a parameter one of them refuses is
        refused whichever tier serves (``backends.params.fit_params``)."""
        route = self.routes.get(name)
        if route is None:
            return []
        targets: list[tuple[str, bool]] = []
        for tier in (route.cheap, route.strong):
            model = self.models[tier]
            for version, deployments in model.version_deployments().items():
                targets += [(self.backends[d.backend].kind, model.drops_unsupported_params(version, i))
                            for i, d in enumerate(deployments)]
        return targets

    def model_named(self, name: str) -> str:
        """The model or route a client's ``name`` means: itself, else the one with that exact
        alias, else the first whose alias pattern matches it (unchanged if none does)."""
        if name in self.models or name in self.routes:
            return name
        patterns: list[tuple[str, str]] = []
        for owner, aliases in [*((m, c.aliases) for m, c in self.models.items()),
                               *((r, c.aliases) for r, c in self.routes.items())]:
            for alias in aliases:
                if alias == name:
                    return owner
                if "*" in alias:
                    patterns.append((alias, owner))
        return next((owner for alias, owner in patterns if fnmatch.fnmatchcase(name, alias)), name)

    @model_validator(mode="after")
    def _aliases_unique(self) -> Policy:
        seen: dict[str, str] = {}
        for owner, aliases in [*((m, c.aliases) for m, c in self.models.items()),
                               *((r, c.aliases) for r, c in self.routes.items())]:
            for alias in aliases:
                if alias in self.models or alias in self.routes:
                    raise ValueError(f"{owner}: alias {alias!r} is the name of a model or route")
                if seen.setdefault(alias, owner) != owner:
                    raise ValueError(f"{owner}: alias {alias!r} is already an alias of {seen[alias]}")
        return self

    @field_validator("admin_key_sha256")
    @classmethod
    def _admin_is_hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value):
            raise ValueError("must be 64 lower-case hex characters (switchyard keys hash)")
        return value


def reference_problems(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, problem) for every name that points at nothing, and every duplicated key.

    Works on the raw document, so these are reported alongside schema errors, not after.
    """
    backends, models, tenants, routes = (_mapping(document.get(k))
                                         for k in ("backends", "models", "tenants", "routes"))
    problems = _route_problems(routes, models)
    for model_name, model in models.items():
        problems += _deployment_problems(f"models.{model_name}", _mapping(model), backends)
        problems += _version_problems(f"models.{model_name}", _mapping(model), backends)
        problems += _embedding_problems(f"models.{model_name}", _mapping(model), backends)
    moderation = _mapping(document.get("moderation"))
    for section, known in (("models", models), ("tenants", tenants)):
        for name in _mapping(moderation.get(section)):
            if name not in known:
                problems.append((f"moderation.{section}.{name}", f"no {section[:-1]} named {name!r}"))
    return problems + _tenant_problems(tenants, models, routes)


def _route_problems(routes: Mapping[str, Any], models: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for route_name, route in routes.items():
        if route_name in models:
            problems.append((f"routes.{route_name}", "a route cannot have the name of a model"))
        for tier in ("cheap", "strong"):
            target = _mapping(route).get(tier)
            if isinstance(target, str) and target not in models:
                problems.append((f"routes.{route_name}.{tier}", f"no model named {target!r}"))
        tiers = [_mapping(route).get(t) for t in ("cheap", "strong")]
        kinds = {_mapping(models.get(t)).get("kind", "chat") for t in tiers if isinstance(t, str)}
        if len(kinds) > 1:
            problems.append((f"routes.{route_name}", "both tiers must be of the same kind (chat or embedding)"))
    return problems


def _tenant_problems(tenants: Mapping[str, Any], models: Mapping[str, Any],
                     routes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Grants naming nothing, and one key declared twice (across tenants too)."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for tenant_name, tenant in tenants.items():
        for model_name in _list(_mapping(tenant).get("models")):
            if isinstance(model_name, str) and model_name != "*" and model_name not in models \
                    and model_name not in routes:
                problems.append((f"tenants.{tenant_name}.models", f"no model or route named {model_name!r}"))
        for index, key in enumerate(_list(_mapping(tenant).get("keys"))):
            digest = _mapping(key).get("sha256")
            if not isinstance(digest, str):
                continue
            path = f"tenants.{tenant_name}.keys[{index}].sha256"
            if digest in seen:
                problems.append((path, f"the same key is already declared at {seen[digest]}"))
            seen.setdefault(digest, path)
    return problems


def _deployment_problems(path: str, holder: Mapping[str, Any],
                         backends: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for index, deployment in enumerate(_list(holder.get("deployments"))):
        backend = _mapping(deployment).get("backend")
        if isinstance(backend, str) and backend not in backends:
            problems.append((f"{path}.deployments[{index}].backend", f"no backend named {backend!r}"))
    return problems


def _embedding_problems(path: str, model: Mapping[str, Any],
                        backends: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An embedding model's deployments must be on a kind that serves embeddings."""
    if model.get("kind") != "embedding":
        return []
    holders = [(path, model)] + [(f"{path}.versions.{name}", _mapping(version))
                                 for name, version in _mapping(model.get("versions")).items()]
    problems: list[tuple[str, str]] = []
    for where, holder in holders:
        for index, deployment in enumerate(_list(holder.get("deployments"))):
            name = _mapping(deployment).get("backend")
            if isinstance(name, str) and _mapping(backends.get(name)).get("kind") == "anthropic":
                problems.append((f"{where}.deployments[{index}].backend",
                                 "anthropic deployments cannot serve an embedding model"))
    return problems


def _version_problems(path: str, model: Mapping[str, Any],
                      backends: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A model's versions: their deployments' backends, and ``stable``/``canary.version``."""
    versions = _mapping(model.get("versions"))
    problems: list[tuple[str, str]] = []
    for name, version in versions.items():
        problems += _deployment_problems(f"{path}.versions.{name}", _mapping(version), backends)
    stable, canary = model.get("stable"), _mapping(model.get("canary")).get("version")
    if versions and isinstance(stable, str) and stable not in versions:
        problems.append((f"{path}.stable", f"no version named {stable!r}"))
    if versions and isinstance(canary, str):
        if canary not in versions:
            problems.append((f"{path}.canary.version", f"no version named {canary!r}"))
        elif canary == stable:
            problems.append((f"{path}.canary.version", "the canary must be another version than stable"))
    return problems


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
