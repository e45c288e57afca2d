"""Prometheus metrics of one gateway process: operational ones on ``/metrics``, per-tenant
spend and usage on ``/admin/metrics`` (admin key).

Every label's values come from the policy (model, version, tier, tenant, pool, worker) or
from a fixed set (status, code, reason, token type): no user ids, no free text, so the
number of series is bounded by the policy's size. What a client sends is checked against the
active policy first: a model name the policy does not define is counted as ``other``
(``Metrics.model_label``), a tenant it does not configure likewise (``Metrics.tenant_label``).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from backends.circuit import STATE_VALUES
from backends.pool import WorkerPool
from backends.sglang import capabilities

# seconds; TTFT and end-to-end of LLM calls span 10 ms to minutes
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))  # difficulty scores lie in [0, 1]
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
# the explicit bucket boundaries the GenAI semantic conventions advise (gen-ai-metrics.md)
GENAI_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_TOKEN_BUCKETS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                       4194304.0, 16777216.0, 67108864.0)
OTHER = "other"
"""The label value of every model (or tenant) name the active policy does not define."""

M = TypeVar("M", bound=MetricWrapperBase)


class ChunkHistogram(Collector):
    """A histogram for per-chunk observations (inter-token latency), at ~0.3 µs each.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets (2.5 µs, 5 µs
    with ``labels``): 50 chunks would add 250 µs of CPU to every streamed request. Here a
    series is a plain list of counts found with ``bisect``; the event loop is the only
    writer, and the library still renders the exposition.
    """

    def __init__(self, name: str, documentation: str, labels: list[str], buckets: tuple[float, ...],
                 unit: str = "") -> None:
        self._name, self._doc, self._labels, self._unit = name, documentation, labels, unit
        self._bounds = list(buckets)
        self._series: dict[tuple[str, ...], Series] = {}

    def series(self, *labels: str) -> Series:
        found = self._series.get(labels)
        if found is None:
            found = self._series[labels] = Series(self._bounds)
        return found

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labels, unit=self._unit)
        for labels, series in list(self._series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, self._bounds), "+Inf"], series.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, series.total)
        yield family


class Series:
    """One label set of a ``ChunkHistogram``."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


class CanaryWeights(Collector):
    """``switchyard_canary_weight``: the share of traffic each model's canary gets now."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, float]] = dict

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("switchyard_canary_weight", "Share of requests sent to the canary",
                                   labels=["model"])
        for model, weight in self.source().items():
            family.add_metric([model], weight)
        yield family


class PoolCollector(Collector):
    """Worker health, load and reported queue, read from the active runtime at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[WorkerPool]] = tuple

    def collect(self) -> Iterable[GaugeMetricFamily]:
        healthy = GaugeMetricFamily("switchyard_backend_healthy",
                                    "1 if the worker passed its last health check", labels=["pool", "worker"])
        in_flight = GaugeMetricFamily("switchyard_backend_in_flight",
                                      "Requests this process has open to the worker", labels=["pool", "worker"])
        queued = GaugeMetricFamily("switchyard_backend_queued",
                                   "Queue length the worker reports on its /metrics", labels=["pool", "worker"])
        circuit = GaugeMetricFamily("switchyard_backend_circuit_state",
                                    "Circuit breaker: 0 closed, 1 half-open, 2 open", labels=["pool", "worker"])
        capability = GaugeMetricFamily(
            "switchyard_worker_capability", "1 if the SGLang worker reports it, 0 if its flags keep it "
            "from it (cached_tokens: --enable-cache-report; metrics: --enable-metrics; load: /metrics "
            "or /v1/loads)", labels=["pool", "worker", "capability"])
        for pool in self.source():
            for worker in pool.workers:
                labels = [pool.name, worker.id]
                healthy.add_metric(labels, 1.0 if worker.healthy else 0.0)
                in_flight.add_metric(labels, worker.in_flight)
                queued.add_metric(labels, worker.last_health.queued)
                circuit.add_metric(labels, STATE_VALUES[worker.circuit.state])
                for name, reported in capabilities(worker.last_health):
                    capability.add_metric([*labels, name], 1.0 if reported else 0.0)
        yield from (healthy, in_flight, queued, circuit, capability)


class AccountingCollector(Collector):
    """Upstream usage the gateway did not believe and settlements that failed, read from the
    active runtime's accounting at scrape time (a policy reload starts them again from 0)."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def collect(self) -> Iterable[CounterMetricFamily]:
        clamped, failed = self.source()
        usage = CounterMetricFamily("switchyard_usage_clamped", "Upstream usage reports outside what the "
                                    "request could use (negative, past its bounds), charged clamped")
        usage.add_metric([], clamped)
        settlements = CounterMetricFamily("switchyard_settlements_failed", "Settlements that raised; the "
                                          "reservation was charged instead")
        settlements.add_metric([], failed)
        yield from (usage, settlements)


class TaskCollector(Collector):
    """``switchyard_asyncio_tasks``: tasks of the serving event loop not yet done, counted at
    scrape time (nothing is counted between scrapes). Steady growth under steady load is a leak."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("switchyard_asyncio_tasks",
                                   "asyncio tasks of the process's event loop not yet done")
        loop = self.loop
        if loop is not None and not loop.is_closed():
            family.add_metric([], len(asyncio.all_tasks(loop)))  # safe from any thread
        yield family


class Metrics:
    """The instruments, in registries of their own (one per app, so tests do not share).

    ``registry`` holds the operational metrics served on ``/metrics`` without credentials;
    ``tenant_registry`` the per-tenant spend and usage, served on ``/admin/metrics`` to the
    admin key only: a tenant's name and spend are its own business, not every scraper's.
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.tenant_registry = tenants = CollectorRegistry(auto_describe=True)
        model = ["model", "version"]
        self.requests = Counter("switchyard_requests", "Requests answered, by outcome",
                                [*model, "tier", "status", "code"], registry=registry)
        self.in_flight = Gauge("switchyard_requests_in_flight", "Requests being served now (a "
                               "signal for autoscaling)", registry=registry)
        self.duration = Histogram("switchyard_request_duration_seconds",
                                  "End-to-end latency: request received to last byte", model,
                                  buckets=_LATENCY_BUCKETS, registry=registry)
        self.ttft = Histogram("switchyard_time_to_first_token_seconds",
                              "Request received to the first streamed chunk", model,
                              buckets=_LATENCY_BUCKETS, registry=registry)
        self.ttft_visible = Histogram("switchyard_time_to_first_visible_token_seconds",
                                      "Request received to the first streamed text the client sees "
                                      "(after output moderation's hold-back)", model,
                                      buckets=_LATENCY_BUCKETS, registry=registry)
        self.held_chars = Histogram("switchyard_moderation_held_chars", "Most characters output "
                                    "moderation held back at once, per moderated stream", model,
                                    buckets=(0, 8, 16, 32, 64, 96, 128, 160, 256, 512, 1024, 4096),
                                    registry=registry)
        self.itl = ChunkHistogram("switchyard_inter_token_seconds", "Gap between streamed chunks", model,
                                  _ITL_BUCKETS)
        registry.register(self.itl)
        self.overhead = Histogram("switchyard_gateway_overhead_seconds",
                                  "Time in the gateway before the upstream call: parse, admit, "
                                  "classify, pick a worker", buckets=_OVERHEAD_BUCKETS, registry=registry)
        self.tokens = Counter("switchyard_tokens", "Tokens by type: input (uncached), cached, output",
                              [*model, "type"], registry=registry)
        # the GenAI semantic conventions' client metrics, one observation per upstream call, named
        # as OpenTelemetry's Prometheus exporter names them (dots to underscores, unit suffix)
        genai = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self.genai_duration = ChunkHistogram("gen_ai_client_operation_duration", "GenAI operation duration.",
                                             [*genai, "error_type"], GENAI_DURATION_BUCKETS, unit="seconds")
        registry.register(self.genai_duration)
        self.genai_tokens = ChunkHistogram("gen_ai_client_token_usage", "Number of input and output tokens used.",
                                           [*genai, "gen_ai_token_type"], GENAI_TOKEN_BUCKETS)
        registry.register(self.genai_tokens)
        self.routing = Counter("switchyard_routing_decisions", "Worker picks by pool, worker and rule",
                               ["pool", "worker", "reason"], registry=registry)
        self.retries = Counter("switchyard_retries", "Upstream attempts that failed before the first "
                               "byte and were retried or gave up, by error code", ["model", "code"],
                               registry=registry)
        self.moderation = Counter("switchyard_moderation_verdicts", "Moderation findings by side, "
                                  "category or PII type, and action", [*model, "direction", "category", "action"],
                                  registry=registry)
        self.guard_calls = Counter("switchyard_moderation_guard_calls", "Calls to a guard model for "
                                   "borderline text, by guard kind and outcome (safe, unsafe, error); "
                                   "the gateway's own cost, never a tenant's", ["kind", "outcome"],
                                   registry=registry)
        self.guard_seconds = Histogram("switchyard_moderation_guard_seconds", "Latency of guard model calls",
                                       ["kind"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.canary_transitions = Counter("switchyard_canary_transitions", "Rollout transitions (start, "
                                          "advance, promote, rollback, ...)", ["model", "kind", "actor"],
                                          registry=registry)
        self._canary_weights = CanaryWeights()
        registry.register(self._canary_weights)
        self.tiers = Counter("switchyard_route_tier_decisions", "Difficulty-route decisions",
                             ["route", "tier"], registry=registry)
        self.route_scores = Histogram("switchyard_route_difficulty_score", "Difficulty scores of the "
                                      "requests a route classified", ["route"], buckets=_SCORE_BUCKETS,
                                      registry=registry)
        self.route_tokens = Counter("switchyard_route_tokens", "Tokens of difficulty-routed requests by "
                                    "route, tier and type (the console's cost saved)", ["route", "tier", "type"],
                                    registry=registry)
        self.worker_tokens = Counter("switchyard_worker_prompt_tokens", "Prompt tokens answered by each "
                                     "worker, by type: input (uncached), cached", ["pool", "worker", "type"],
                                     registry=registry)
        self.worker_errors = Counter("switchyard_worker_errors", "Upstream attempts that failed, by worker "
                                     "and error code", ["pool", "worker", "code"], registry=registry)
        self.rejections = Counter("switchyard_rejections", "Requests refused by rate limits, budgets "
                                  "or context limits", ["code"], registry=registry)
        self.bound_exceeded = Counter("switchyard_bound_exceeded", "Requests or connections ended by a "
                                      "bound of the policy's bounds: section", ["bound"], registry=registry)
        self.response_cache = Counter("switchyard_response_cache", "Response cache lookups",
                                      ["model", "result"], registry=registry)
        self.policy_reloads = Counter("switchyard_policy_reloads", "Policy changes tried, by source "
                                      "and result", ["source", "result"], registry=registry)
        self.policy_info = Gauge("switchyard_policy_info", "The active policy (value 1)",
                                 ["version", "sha256"], registry=registry)
        self._pools = PoolCollector()
        registry.register(self._pools)
        self._tasks = TaskCollector()
        registry.register(self._tasks)
        self._accounting = AccountingCollector()
        registry.register(self._accounting)
        # per tenant: behind the admin key (/admin/metrics)
        self.cost = Counter("switchyard_cost_usd", "Spend at the policy's prices",
                            [*model, "tenant"], registry=tenants)
        self.tenant_tokens = Counter("switchyard_tenant_tokens", "Tokens charged to each tenant, by "
                                     "type: input (uncached), cached, output", ["tenant", "model", "type"],
                                     registry=tenants)
        self.tenant_rejections = Counter("switchyard_tenant_rejections", "Requests of each tenant "
                                         "refused by rate limits, budgets or context limits", ["tenant", "code"],
                                         registry=tenants)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._models: frozenset[str] = frozenset()
        self._tenants: frozenset[str] = frozenset()
        self._public = Exposition(registry)
        self._private = Exposition(tenants)

    def child(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, memoised.

        prometheus-client validates, converts and takes a lock on every ``labels`` call (~1.3
        µs), and a request makes about ten; a memo hit is one dict lookup. It holds only what
        the metric holds anyway: children live as long as their metric (use ``labels`` for a
        metric whose children are cleared, such as ``policy_info``).
        """
        key = (id(metric), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        child: M = found
        return child

    def model_label(self, name: str) -> str:
        """``name`` if the active policy defines it as a model or route, else ``other``.

        A client chooses the ``model`` string: as a label value, every new one would be a new
        series held for the life of the process (one key, 100 requests with 1 MB names, made
        a 2 GB exposition). An empty name (the request was refused before it was read) stays.
        """
        return name if not name or name in self._models else OTHER

    def tenant_label(self, name: str) -> str:
        """``name`` if the active policy configures that tenant, else ``other``."""
        return name if not name or name in self._tenants else OTHER

    def watch_canaries(self, source: Callable[[], dict[str, float]]) -> None:
        """Where the canary weight gauge comes from: the controller, at scrape time."""
        self._canary_weights.source = source

    def watch_pools(self, source: Callable[[], Iterable[WorkerPool]]) -> None:
        """Where the worker gauges come from: the active runtime's pools, at scrape time."""
        self._pools.source = source

    def watch_accounting(self, source: Callable[[], tuple[int, int]]) -> None:
        """Where the clamped-usage and failed-settlement counts come from, at scrape time."""
        self._accounting.source = source

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop whose tasks ``switchyard_asyncio_tasks`` counts (the serving one)."""
        self._tasks.loop = loop

    def set_policy(self, version: str, digest: str, models: Iterable[str] = (),
                   tenants: Iterable[str] = ()) -> None:
        """The active policy: its version and hash (``switchyard_policy_info``), and the model,
        route and tenant names that may become label values."""
        self.policy_info.clear()
        self.policy_info.labels(version, digest[:12]).set(1)
        self._models, self._tenants = frozenset(models), frozenset(tenants)

    async def render(self) -> bytes:
        """The operational exposition (``/metrics``), rendered off the event loop."""
        return await self._public.render()

    async def render_tenants(self) -> bytes:
        """The per-tenant exposition (``/admin/metrics``), rendered off the event loop."""
        return await self._private.render()


class Exposition:
    """Renders a registry in a worker thread, one rendering at a time.

    ``generate_latest`` walks every series and formats each sample in Python: on the event
    loop it would stall every request for as long as the exposition takes. Scrapes that
    arrive while a rendering runs wait for that one rather than start their own, so a
    flood of unauthenticated scrapes costs one rendering at a time, not one per scrape.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._running: asyncio.Future[bytes] | None = None

    async def render(self) -> bytes:
        running = self._running
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = self._running = asyncio.ensure_future(asyncio.to_thread(generate_latest, self._registry))
            running.add_done_callback(self._done)
        # shielded: a scraper that goes away does not cancel the rendering others wait for
        return await asyncio.shield(running)

    def _done(self, future: asyncio.Future[bytes]) -> None:
        if self._running is future:
            self._running = None
