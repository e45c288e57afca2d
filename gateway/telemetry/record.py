"""One request's telemetry: its spans, its metrics and its access-log line, finished once.

The completions handler fills a ``RequestRecord`` as the request moves along (who called,
which tier and model, which worker and why, what it used) and calls ``finish`` when the
response is complete: at once for JSON answers, when the relay ends for streams. ``finish``
ends the root span with the GenAI and Switchyard attributes, counts the metrics and writes
the access line, so the three always agree.

Spans follow the OpenTelemetry GenAI conventions: the root (``SERVER``) span is the request
as the client made it; each upstream attempt is an inference span (``CLIENT``, named
``{gen_ai.operation.name} {gen_ai.request.model}``), and the one that answered carries the
usage, the ``gen_ai.response.*`` attributes and, with content capture on, the messages.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from litestar.exceptions import HTTPException
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.semconv.attributes.server_attributes import (
    SERVER_ADDRESS,
    SERVER_PORT,
)
from opentelemetry.trace import (
    INVALID_SPAN,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from backends.errors import BoundExceededError, RateLimitedError, SwitchyardError
from gateway.telemetry.genai import content_attributes_of_request, output_messages
from policies.context_budget import ContextLengthExceededError

if TYPE_CHECKING:
    from backends.pool import Worker
    from gateway.telemetry import Telemetry
    from gateway.telemetry.metrics import Series
    from policies.moderation.verdict import Finding
    from policies.spend import Charge
    from router.base import Selection

_PROPAGATOR = TraceContextTextMapPropagator()
_PROVIDERS = {"sglang": "sglang", "openai": "openai", "anthropic": "anthropic"}
_REJECTIONS = (RateLimitedError, ContextLengthExceededError)
MAX_NAME_CHARS = 256
"""A client-chosen model name is cut to this length in span names, attributes and access
lines: the request body limit alone would let one name be megabytes on every span exported."""


CLIENT_CLOSED = 499
"""nginx's status for a client that went away before the answer was complete."""


def status_of(error: BaseException) -> tuple[int, str]:
    """The HTTP status and error code the edge answers ``error`` with."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return CLIENT_CLOSED, "client_disconnected"
    if isinstance(error, SwitchyardError):
        return error.status_code, error.code
    if isinstance(error, HTTPException):
        return error.status_code, "http_error"
    return 500, "internal_error"


@functools.lru_cache(maxsize=1024)  # a worker's address is parsed once, not per request
def _server(address: str) -> tuple[str, int]:
    parts = urlsplit(address)
    return parts.hostname or address, parts.port or (443 if parts.scheme == "https" else 80)


class Phase:
    """A child span around one step (admission, classification, worker selection)."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self.span.record_exception(error)
        self.span.end()


_UNRECORDED = Phase(INVALID_SPAN)
"""The phase of a request nobody records: its span takes attributes and ends as a no-op."""


class RequestRecord:
    """Everything observed about one request. Fields stay ``None`` when a step never ran."""

    __slots__ = (
        "_context",
        "_finished",
        "_itl",
        "_last_chunk",
        "_telemetry",
        "_tracer",
        "_upstream_span",
        "_upstream_started",
        "cache",
        "capture",
        "charge",
        "completion",
        "door",
        "ended",
        "fallback",
        "finish_reasons",
        "first_token_at",
        "first_visible_at",
        "held_chars",
        "key",
        "model",
        "moderation",
        "moderation_s",
        "on_finish",
        "operation",
        "pool",
        "provider",
        "request_body",
        "request_id",
        "request_model",
        "request_params",
        "response_id",
        "retries",
        "route",
        "score",
        "selection",
        "session",
        "span",
        "started",
        "started_wall",
        "status",
        "stream",
        "tenant",
        "tier",
        "trimmed_tokens",
        "upstream_model",
        "upstream_started",
        "version",
        "worker",
    )

    def __init__(self, telemetry: Telemetry, operation: str, headers: Mapping[str, str],
                 request_id: str, door: str = "") -> None:
        self._telemetry = telemetry
        self._tracer: Tracer = telemetry.tracer
        parent: Context | None = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        self.span = self._tracer.start_span(operation, context=parent, kind=SpanKind.SERVER)
        self._context = set_span_in_context(self.span)
        self._upstream_span: Span | None = None
        self._upstream_started = 0.0
        self._last_chunk = 0.0
        self._itl: Series | None = None
        self._finished = False
        telemetry.metrics.in_flight.inc()
        self.operation = operation
        self.door = door
        """The front door the request came through (``chat.completions``, ``messages``, ...)."""
        if door:
            self.span.set_attribute("switchyard.door", door)
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.request_id = request_id
        self.tenant = self.key = self.request_model = self.model = ""
        self.version = self.route = self.tier = self.worker = self.pool = ""
        self.provider = self.upstream_model = self.cache = ""
        self.score: float | None = None
        self.selection: Selection | None = None
        self.stream = False
        self.trimmed_tokens = 0
        self.charge: Charge | None = None
        self.finish_reasons: list[str] = []
        self.response_id = ""
        self.upstream_started: float | None = None
        self.first_token_at: float | None = None
        self.first_visible_at: float | None = None
        """When the client got its first text (after output moderation held what it held)."""
        self.held_chars = -1
        """Most characters output moderation held back at once in this stream (-1: not moderated)."""
        self.capture = False
        """Content capture is on (policy ``observability.capture_content``)."""
        self.request_body: bytes | None = None
        self.session: str | None = None
        self.completion: str | None = None
        self.request_params: dict[str, Any] = {}
        self.status = 0
        """The HTTP status it ended with (set by ``finish``)."""
        self.ended: float | None = None
        self.moderation: list[str] = []
        """``direction:name:action`` of each moderation finding."""
        self.moderation_s = 0.0
        self.fallback = False
        """A deployment other than the model's first served (or was tried)."""
        self.retries: list[str] = []
        """``worker:code`` of each failed attempt before the one that answered."""
        self.on_finish: list[Any] = []
        """Callbacks run once at ``finish`` (the runtime's in-flight count)."""

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def phase(self, name: str) -> Phase:
        """``with record.phase("switchyard.admission"):`` a child span of the request.

        A request nobody records (no exporter, or the sampler said no) gets no phase spans:
        every sampler OpenTelemetry configures decides a child as its parent (``parentbased_*``)
        or by the same trace id (``always_*``, ``traceidratio``), so they would not be recorded
        either, and starting them was ~3 % of a request's CPU on the bare policy
        (docs/performance.md).
        """
        if not self.span.is_recording():
            return _UNRECORDED
        return Phase(self._tracer.start_span(name, context=self._context))

    def upstream_call(self, worker: Worker, upstream_model: str, operation: str) -> dict[str, str]:
        """Start the backend-call span; the ``traceparent`` headers that continue it upstream."""
        host, port = _server(worker.address)
        self.provider = _PROVIDERS.get(worker.backend.kind, worker.backend.kind)
        self.upstream_model = upstream_model
        self.upstream_started = time.perf_counter()
        self._upstream_started = self.upstream_started
        attributes: dict[str, Any] = {
            genai.GEN_AI_OPERATION_NAME: operation, genai.GEN_AI_PROVIDER_NAME: self.provider,
            genai.GEN_AI_REQUEST_MODEL: upstream_model, SERVER_ADDRESS: host, SERVER_PORT: port,
            "switchyard.worker": worker.id, **self.request_params}
        span = self._tracer.start_span(f"{operation} {upstream_model}", context=self._context,
                                       kind=SpanKind.CLIENT, attributes=attributes)
        self._upstream_span = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return carrier

    def charged(self, charge: Charge) -> None:
        """The request's settlement (the admission ticket tells it when it settles)."""
        self.charge = charge

    def first_visible(self) -> None:
        """The first chunk with text the client sees went out (once per request)."""
        if self.first_visible_at is None:
            self.first_visible_at = time.perf_counter()

    @property
    def visible_ttft_at(self) -> float | None:
        """First visible text if recorded, else the first upstream chunk (no moderation holds)."""
        return self.first_visible_at if self.first_visible_at is not None else self.first_token_at

    def first_token(self) -> None:
        now = time.perf_counter()
        self.first_token_at = self._last_chunk = now
        if self._upstream_span is not None:
            self._upstream_span.add_event("first_token")

    def chunk(self) -> None:
        """A streamed chunk went out: the gap since the previous one is inter-token latency."""
        now = time.perf_counter()
        if self._itl is None:
            self._itl = self._telemetry.metrics.itl.series(self.model, self.version)
        self._itl.observe(now - self._last_chunk)
        self._last_chunk = now

    def routed(self, route: str, tier: str, score: float | None) -> None:
        self.route, self.tier, self.score = route, tier, score
        metrics = self._telemetry.metrics
        metrics.child(metrics.tiers, route, tier).inc()
        if score is not None:
            metrics.child(metrics.route_scores, route).observe(score)

    def selected(self, selection: Selection, pool: str, *, fallback: bool = False) -> None:
        self.selection, self.pool, self.worker = selection, pool, selection.worker.id
        self.fallback = self.fallback or fallback
        metrics = self._telemetry.metrics
        metrics.child(metrics.routing, pool, selection.worker.id, selection.reason).inc()

    def moderated(self, direction: str, findings: tuple[Finding, ...], seconds: float) -> None:
        """Moderation findings (never text): span events, the verdict metric, the access line."""
        self.moderation_s += seconds
        metrics = self._telemetry.metrics
        for finding in findings:
            self.span.add_event("moderation", {"moderation.direction": direction, **finding.attributes()})
            metrics.child(metrics.moderation, self.model, self.version, direction, finding.name,
                          finding.action).inc()
            self.moderation.append(f"{direction}:{finding.name}:{finding.action}")

    def guard_called(self, kind: str, outcome: str, seconds: float) -> None:
        """A guard model was asked about borderline text (metered, never charged to the tenant)."""
        metrics = self._telemetry.metrics
        metrics.child(metrics.guard_calls, kind, outcome).inc()
        metrics.child(metrics.guard_seconds, kind).observe(seconds)
        self.moderation_s += seconds

    def attempt_failed(self, error: SwitchyardError) -> None:
        """An upstream attempt failed before its first byte and may be retried elsewhere."""
        self.retries.append(f"{self.worker}:{error.code}")
        metrics = self._telemetry.metrics
        metrics.child(metrics.retries, self.model, error.code).inc()
        if self.worker:
            metrics.child(metrics.worker_errors, self.pool, self.worker, error.code).inc()
        span = self._upstream_span
        if span is not None:
            self._observe_call(time.perf_counter(), error.code)
            span.set_status(Status(StatusCode.ERROR, error.code))
            span.set_attribute(ERROR_TYPE, error.code)
            span.end()
            self._upstream_span = None
        self.span.add_event("retry", {"switchyard.worker": self.worker, "error.type": error.code})

    def finish(self, status: int = 200, error: BaseException | None = None) -> None:
        """End the spans, count the metrics, write the access line; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        self.ended = ended = time.perf_counter()
        code = ""
        if error is not None:
            status, code = status_of(error)
        self.status = status
        metrics = self._telemetry.metrics
        metrics.in_flight.dec()
        # only names the policy defines become label values (self.model always is one)
        model, version = self.model or metrics.model_label(self.request_model), self.version
        metrics.child(metrics.requests, model, version, self.tier, str(status), code).inc()
        metrics.child(metrics.duration, model, version).observe(ended - self.started)
        if self.upstream_started is not None:
            metrics.overhead.observe(self.upstream_started - self.started)
        if self.first_token_at is not None and self.stream:
            metrics.child(metrics.ttft, model, version).observe(self.first_token_at - self.started)
            visible = self.visible_ttft_at
            if visible is not None:
                metrics.child(metrics.ttft_visible, model, version).observe(visible - self.started)
            if self.held_chars >= 0:
                metrics.child(metrics.held_chars, model, version).observe(self.held_chars)
        tenant = metrics.tenant_label(self.tenant)
        charge = self.charge
        if charge is not None:
            self._count_usage(charge, model, version, tenant)
        if isinstance(error, BoundExceededError):
            metrics.child(metrics.bound_exceeded, error.bound).inc()
        if isinstance(error, _REJECTIONS):
            metrics.child(metrics.rejections, code).inc()
            metrics.child(metrics.tenant_rejections, tenant, code).inc()
        if self._upstream_span is not None:
            self._observe_call(ended, code)
        self._end_spans(status, code, error)
        self._write_access(status, code, ended)
        for callback in self.on_finish:
            callback()

    def _count_usage(self, charge: Charge, model: str, version: str, tenant: str) -> None:
        metrics = self._telemetry.metrics
        metrics.child(metrics.tokens, model, version, "input").inc(charge.input_tokens)
        metrics.child(metrics.tokens, model, version, "cached").inc(charge.cached_input_tokens)
        metrics.child(metrics.tokens, model, version, "output").inc(charge.output_tokens)
        metrics.child(metrics.tenant_tokens, tenant, model, "input").inc(charge.input_tokens)
        metrics.child(metrics.tenant_tokens, tenant, model, "cached").inc(charge.cached_input_tokens)
        metrics.child(metrics.tenant_tokens, tenant, model, "output").inc(charge.output_tokens)
        if charge.cost_usd:
            metrics.child(metrics.cost, model, version, tenant).inc(charge.cost_usd)
        if self.worker:  # per worker: the prefix-cache hit rate the console shows
            metrics.child(metrics.worker_tokens, self.pool, self.worker, "input").inc(charge.input_tokens)
            metrics.child(metrics.worker_tokens, self.pool, self.worker, "cached").inc(charge.cached_input_tokens)
        if self.route:
            for kind, count in (("input", charge.input_tokens), ("cached", charge.cached_input_tokens),
                                ("output", charge.output_tokens)):
                metrics.child(metrics.route_tokens, self.route, self.tier, kind).inc(count)
        if self._upstream_span is not None:  # the GenAI client metric counts what an upstream call used
            labels = (self.operation, self.provider, self.upstream_model)
            metrics.genai_tokens.series(*labels, "input").observe(charge.input_tokens + charge.cached_input_tokens)
            metrics.genai_tokens.series(*labels, "output").observe(charge.output_tokens)

    def _observe_call(self, ended: float, code: str) -> None:
        """``gen_ai.client.operation.duration`` of the current upstream attempt."""
        self._telemetry.metrics.genai_duration.series(self.operation, self.provider, self.upstream_model,
                                                      code).observe(ended - self._upstream_started)

    def _visible_attributes(self) -> dict[str, Any]:
        """What the client saw of a stream: first visible text, moderation's hold-back."""
        attributes: dict[str, Any] = {}
        visible = self.visible_ttft_at
        if visible is not None and self.stream:
            attributes["switchyard.ttft_visible_ms"] = round((visible - self.started) * 1000, 3)
        if self.held_chars >= 0:
            attributes["switchyard.moderation.held_chars"] = self.held_chars
        return attributes

    def _decision_attributes(self) -> dict[str, Any]:
        """Why the request went where it went: the difficulty score and the worker's selection."""
        attributes: dict[str, Any] = {}
        if self.score is not None:
            attributes["switchyard.difficulty.score"] = round(self.score, 4)
        if self.selection is not None:
            attributes["switchyard.worker.reason"] = self.selection.reason
            if self.selection.scores:
                attributes["switchyard.worker.scores"] = ", ".join(
                    f"{k}={v:.3g}" for k, v in self.selection.scores.items())
        return attributes

    def _end_spans(self, status: int, code: str, error: BaseException | None) -> None:
        span = self.span
        request_model = self.request_model[:MAX_NAME_CHARS]
        span.update_name(f"{self.operation} {request_model}" if request_model else self.operation)
        attributes: dict[str, Any] = {
            genai.GEN_AI_OPERATION_NAME: self.operation,
            HTTP_RESPONSE_STATUS_CODE: status,
            "switchyard.request_id": self.request_id,
            "switchyard.stream": self.stream,
        }
        optional: dict[str, Any] = {
            genai.GEN_AI_REQUEST_MODEL: request_model,
            "switchyard.model": self.model,
            "switchyard.tenant": self.tenant, "switchyard.key": self.key,
            "switchyard.route": self.route, "switchyard.tier": self.tier,
            "switchyard.model.version": self.version, "switchyard.upstream_model": self.upstream_model,
            "switchyard.worker": self.worker, "switchyard.pool": self.pool,
            "switchyard.response_cache": self.cache,
        }
        attributes.update({k: v for k, v in optional.items() if v})
        attributes.update(self.request_params)
        attributes.update(self._decision_attributes())
        if self.trimmed_tokens:
            attributes["switchyard.trimmed_tokens"] = self.trimmed_tokens
        if self.retries:
            attributes["switchyard.retries"] = self.retries
        if self.moderation:
            attributes["switchyard.moderation.findings"] = self.moderation
        if self.moderation_s:
            attributes["switchyard.moderation.ms"] = round(self.moderation_s * 1000, 3)
        if self.fallback:
            attributes["switchyard.fallback"] = True
        if self.charge is not None:
            attributes["switchyard.cost_usd"] = self.charge.cost_usd
        if self.first_token_at is not None:
            attributes["switchyard.ttft_ms"] = round((self.first_token_at - self.started) * 1000, 3)
        attributes.update(self._visible_attributes())
        if error is not None:
            attributes[ERROR_TYPE] = code
            span.set_status(Status(StatusCode.ERROR, code))
        span.set_attributes(attributes)
        upstream = self._upstream_span
        if upstream is not None:
            upstream.set_attributes(self._inference_attributes(code, error))
            if error is not None:
                upstream.set_status(Status(StatusCode.ERROR, code))
            upstream.end()
        span.end()

    def _inference_attributes(self, code: str, error: BaseException | None) -> dict[str, Any]:
        """What the answering upstream call produced: usage, response, captured messages."""
        attributes: dict[str, Any] = {}
        charge = self.charge
        if charge is not None:
            attributes[genai.GEN_AI_USAGE_INPUT_TOKENS] = charge.input_tokens + charge.cached_input_tokens
            attributes[genai.GEN_AI_USAGE_OUTPUT_TOKENS] = charge.output_tokens
            attributes[genai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = charge.cached_input_tokens
        if self.response_id:
            attributes[genai.GEN_AI_RESPONSE_ID] = self.response_id
        if self.finish_reasons:
            attributes[genai.GEN_AI_RESPONSE_FINISH_REASONS] = self.finish_reasons
        if self.first_token_at is not None and self.stream:
            attributes[genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.first_token_at - self._upstream_started
        if error is not None:
            attributes[ERROR_TYPE] = code
        if self.capture and self.request_body is not None:
            messages, system = content_attributes_of_request(self.request_body, self.provider)
            attributes[genai.GEN_AI_INPUT_MESSAGES] = messages
            if system is not None:
                attributes[genai.GEN_AI_SYSTEM_INSTRUCTIONS] = system
            attributes[genai.GEN_AI_OUTPUT_MESSAGES] = output_messages(self.completion, self.finish_reasons,
                                                                       error is not None)
        return attributes

    def _write_access(self, status: int, code: str, ended: float) -> None:
        log = self._telemetry.access_log
        if not log.enabled:
            return
        charge = self.charge
        line: dict[str, Any] = {
            "ts": round(self.started_wall, 6), "trace_id": self.trace_id, "request_id": self.request_id,
            "operation": self.operation, "door": self.door, "tenant": self.tenant, "key": self.key,
            "request_model": self.request_model[:MAX_NAME_CHARS], "model": self.model, "version": self.version,
            "route": self.route, "tier": self.tier, "worker": self.worker, "status": status,
            "code": code, "stream": self.stream, "cache": self.cache,
            "prompt_tokens": (charge.input_tokens + charge.cached_input_tokens) if charge else 0,
            "cached_tokens": charge.cached_input_tokens if charge else 0,
            "completion_tokens": charge.output_tokens if charge else 0,
            "trimmed_tokens": self.trimmed_tokens,
            "cost_usd": round(charge.cost_usd, 8) if charge else 0.0,
            "latency_ms": round((ended - self.started) * 1000, 3),
            "ttft_ms": round((self.first_token_at - self.started) * 1000, 3)
            if self.first_token_at is not None else None,
        }
        if self.selection is not None:
            line["worker_reason"] = self.selection.reason
        if self.retries:
            line["retries"] = self.retries
        if self.moderation:
            line["moderation"] = self.moderation
        if self.fallback:
            line["fallback"] = True
        if self.capture:
            line["session"] = self.session
            if self.request_body is not None:
                line["request"] = msgspec.Raw(self.request_body)
            line["completion"] = self.completion
        log.write(line)


def finish_reasons(choices: Sequence[Any]) -> list[str]:
    """The finish reasons of a response's or last chunks' choices, in choice order."""
    return [c.finish_reason for c in choices if isinstance(getattr(c, "finish_reason", None), str)]
