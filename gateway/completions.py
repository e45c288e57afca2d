"""``POST /v1/chat/completions`` and ``POST /v1/completions``: admit, route, call, relay."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from backends import open_wire
from backends.base import Backend
from backends.errors import (
    ModelNotFoundError,
    PermissionDeniedError,
    SwitchyardError,
    UpstreamError,
    UpstreamRejectedError,
)
from backends.params import fit_params
from backends.pool import Worker
from backends.types import (
    ChatChoice,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Message,
    TextRequest,
    TextResponse,
    Usage,
)
from gateway.accounting import TRIMMED_HEADER
from gateway.errors import REQUEST_ID_STATE
from gateway.moderation import StreamGuard, check_answer, check_request
from gateway.response_cache import CacheLookup, replay
from gateway.runtime import Runtime
from gateway.sse import DONE, encode_error_event, encode_event
from gateway.stream_tally import StreamTally
from gateway.state import Gateway
from gateway.telemetry import RequestRecord, finish_reasons
from gateway.upstream import call_upstream
from gateway.wire import parse_chat, parse_text
from policies.canary import Outcome, VersionChoice
from policies.keys import Caller
from policies.moderation import Moderator
from router.base import RoutingRequest, Selection
from router.decide import Choice, choose
from router.isolation import salted_prompt, tenant_salt, without_cached_tokens
from router.prompt_text import render_chat, render_text

Req = TypeVar("Req", ChatRequest, TextRequest)
Resp = TypeVar("Resp", ChatResponse, TextResponse)
Chunk = TypeVar("Chunk", ChatChunk, TextResponse)

SESSION_HEADER = "x-switchyard-session"
VERSION_HEADER = "x-switchyard-model-version"
log = logging.getLogger("switchyard.gateway")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(frozen=True, slots=True)
class Operation(Generic[Req, Resp, Chunk]):
    """What differs between the two endpoints: parsing, rendering, the backend calls."""

    name: str
    """OpenTelemetry's ``gen_ai.operation.name``."""
    parse: Callable[[bytes], Req]
    render: Callable[[Req], tuple[str, int]]
    """The prompt as routing sees it, and its head length (``router.prompt_text``)."""
    complete: Callable[[Backend, Req], Awaitable[Resp]]
    stream: Callable[[Backend, Req], AsyncIterator[Chunk]]
    text: Callable[[Resp | Chunk], str]
    """The first choice's generated text in a response or chunk."""


def _chat_text(answer: ChatResponse | ChatChunk) -> str:
    """The first choice's generated text: reasoning (billed as output) and content."""
    if not answer.choices:
        return ""
    choice = answer.choices[0]
    part = choice.message if isinstance(choice, ChatChoice) else choice.delta
    content, reasoning = part.content, part.reasoning_content
    text = content if isinstance(content, str) else ""
    return reasoning + text if isinstance(reasoning, str) else text


def _completion_text(answer: TextResponse) -> str:
    return answer.choices[0].text if answer.choices else ""


CHAT: Operation[ChatRequest, ChatResponse, ChatChunk] = Operation(
    "chat", parse_chat, lambda r: render_chat(r.params.messages),
    lambda b, r: b.complete(r), lambda b, r: b.stream(r), _chat_text)
TEXT: Operation[TextRequest, TextResponse, TextResponse] = Operation(
    "text_completion", parse_text, lambda r: render_text(r.params.prompt),
    lambda b, r: b.complete_text(r), lambda b, r: b.stream_text(r), _completion_text)


class StreamLease:
    """Holds a worker's in-flight slot and the upstream stream until the response ends.

    Released from the relay's ``finally`` and again from the response's background task:
    the second covers a client gone before the relay ever started, whose generator would
    otherwise never run its ``finally`` and leave the upstream connection open.
    """

    def __init__(self, worker: Worker, upstream: AsyncIterator[Any], tally: StreamTally,
                 on_end: Callable[[StreamTally, BaseException | None], None]) -> None:
        self._worker = worker
        self._upstream = upstream
        self._on_end = on_end
        self._released = False
        self.tally = tally
        """What the upstream generated so far, before moderation: what is charged if the
        stream is cut short (bounded: counts and a capped text, not every chunk)."""
        self.error: BaseException | None = None
        """Why the stream ended early, if it did (for the request's telemetry)."""

    async def release(self, error: BaseException | None = None) -> None:
        if self._released:
            return
        self._released = True
        self._worker.release()
        error = error or self.error
        if isinstance(error, UpstreamError) and not isinstance(error, UpstreamRejectedError):
            self._worker.circuit.on_failure()  # broke mid-stream: a failure of the worker
        # synchronous: a cancelled client cannot skip the charge
        self._on_end(self.tally, error)
        await self._upstream.aclose()  # type: ignore[attr-defined]


def _authorize(runtime: Runtime, caller: Caller, model: str) -> None:
    if model not in runtime.models and model not in runtime.routes:
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
    if not caller.may_use(model):
        raise PermissionDeniedError(f"Your API key may not use the model '{model}'.", param="model")


async def handle(request: Request[Any, Any, Any], operation: Operation[Req, Resp, Chunk]) -> Response[Any]:
    """Serve one request under the runtime active when it arrived, with its telemetry record.

    The record is finished here when the request fails or answers JSON, and by the relay
    when a stream ends.
    """
    gateway: Gateway = request.app.state.gateway
    request_id = os.urandom(16).hex()  # a uuid4's randomness, at a third of its cost
    request.state[REQUEST_ID_STATE] = request_id  # for the error handler's x-request-id
    record = RequestRecord(gateway.telemetry, operation.name, request.headers, request_id)
    try:
        runtime = gateway.runtime  # read once: the request finishes under this policy
        runtime.enter(record)
        return await serve(request, operation, runtime, record)
    except BaseException as exc:
        record.finish(error=exc)
        raise


async def serve(request: Request[Any, Any, Any], operation: Operation[Req, Resp, Chunk],
                runtime: Runtime, record: RequestRecord) -> Response[Any]:
    """Admit the request, pick a worker, and answer from it (as JSON or as an SSE stream)."""
    caller = runtime.keyring.authenticate(request.headers.get("authorization"))
    record.tenant, record.key = caller.tenant, caller.key_name
    body = await request.body()
    call = operation.parse(body)
    params = call.params
    model = params.model
    record.request_model, record.stream = model, call.is_stream
    record.request_params = _request_attributes(params)
    if runtime.policy.observability.capture_content:
        record.capture, record.request_body = True, body
        record.session = request.headers.get(SESSION_HEADER)
    _authorize(runtime, caller, model)
    headers = {"x-request-id": record.request_id}
    route = runtime.routes.get(model)
    if route is not None:
        # being allowed the route means being allowed both of its tiers
        with record.phase("switchyard.classify") as span:
            decision = route.decide(_messages(call), request.headers, caller.route_thresholds.get(model))
            span.set_attribute("switchyard.tier", decision.tier)
        model = decision.model
        record.routed(route.name, decision.tier, decision.score)
        headers["x-switchyard-tier"] = decision.tier
        if decision.score is not None:
            headers["x-switchyard-difficulty"] = f"{decision.score:.4f}"
    headers["x-switchyard-model"] = model
    user = params.user if isinstance(params.user, str) else None
    sticky_key = request.headers.get(SESSION_HEADER) or user or caller.key_name
    assignment = runtime.canary.assign(model, sticky_key)
    record.model, record.version = model, runtime.versions[model, assignment.version]
    headers[VERSION_HEADER] = record.version
    if assignment.rollout:
        record.on_finish.append(lambda: _report_outcome(runtime, assignment, record))
    with record.phase("switchyard.admission"):
        ticket = await runtime.accounting.admit(runtime.policy, caller, model, call, record.request_id).reserve()
    call = ticket.call  # trimmed, max_tokens clamped to the window and the budget
    settle = runtime.accounting.settle
    moderator = runtime.moderation.for_request(caller.tenant, model)
    if moderator is not None:
        # after admission: a prompt too long for the model is refused (or trimmed) before the
        # costlier read, and only what will be sent upstream is checked
        try:
            call = await check_request(moderator, call, record)
        except BaseException:
            record.charge = settle(ticket, Usage())  # refused before any output: refund the estimate
            raise
    headers.update(ticket.headers)
    trimmed = ticket.headers.get(TRIMMED_HEADER)
    record.trimmed_tokens = int(trimmed) if trimmed else 0
    cached = CacheLookup.start(runtime.response_caches.get((model, assignment.version)), caller.tenant, call,
                               request.headers)
    hit = await cached.get()
    if cached.state:
        headers["x-switchyard-cache"] = record.cache = cached.state
    if hit is not None:
        record.charge = settle(ticket, Usage())  # served without upstream tokens: refund the estimate
        return _from_cache(hit, call, model, headers, record)

    prompt, head_chars = operation.render(call)
    isolated = runtime.policy.models[model].cache_isolation == "tenant"
    if isolated:
        prompt, head_chars = salted_prompt(prompt, head_chars, caller.tenant)
    routing = RoutingRequest(model=model, tenant=caller.tenant, sticky_key=sticky_key,
                             prompt=prompt, head_chars=head_chars)
    deployments = runtime.version_routes[model][assignment.version]

    def prepared(choice: Choice) -> Req:
        """The call as this attempt sends it: its upstream model name and trace context."""
        upstream_model = choice.deployment.upstream_model
        # the parameter table (backends/params.py): refuse or drop what this kind cannot take
        fitted = fit_params(call, choice.worker.backend.kind, also_check=runtime.policy.route_param_targets(
            params.model), drop_unsupported=runtime.policy.models[model].drops_unsupported_params(
            assignment.version, deployments.deployments.index(choice.deployment)))
        trace_headers = record.upstream_call(choice.worker, upstream_model, operation.name)
        if isolated and choice.worker.backend.kind == "sglang":  # the engine's own isolation
            fitted = msgspec.structs.replace(fitted, extra={**fitted.extra, "cache_salt": tenant_salt(caller.tenant)})
        return msgspec.structs.replace(fitted, upstream_model=upstream_model, trace_headers=trace_headers)

    async def send_stream(choice: Choice) -> tuple[Chunk, AsyncIterator[Chunk]]:
        upstream = operation.stream(choice.worker.backend, prepared(choice))
        try:
            # peek before answering 200: a failure before the first byte can still be retried
            # elsewhere, or become a proper HTTP error
            return await anext(upstream), upstream
        except StopAsyncIteration:
            raise UpstreamError(f"{choice.worker.id} ended the stream before sending anything") from None
        except BaseException:
            await upstream.aclose()  # type: ignore[attr-defined]
            raise

    async def send(choice: Choice) -> Resp:
        return await operation.complete(choice.worker.backend, prepared(choice))

    retries, budget = runtime.policy.retries, runtime.retry_budget
    try:
        if call.is_stream:
            choice, (first, upstream) = await call_upstream(deployments, routing, record, retries,
                                                            budget, send_stream)
        else:
            choice, answer = await call_upstream(deployments, routing, record, retries, budget, send)
            choice.worker.release()
    except BaseException:
        record.charge = settle(ticket, Usage())  # failed before any output: nothing was generated
        raise
    if assignment.shadow_version is not None:
        _mirror(runtime, assignment, operation, call, routing, moderator)
    worker, selector = choice.worker, choice.deployment.selector
    hide_cached = isolated and worker.backend.kind != "sglang"  # a provider's cache spans tenants
    headers["x-switchyard-worker"] = worker.id
    if selector.debug_header:
        headers["x-switchyard-route"] = route_header(choice.selection)

    if call.is_stream:
        lease: StreamLease

        async def on_done(tally: StreamTally) -> None:
            selector.on_outcome(worker.id, routing, tally.text)
            if tally.chunks is not None:
                await cached.put_stream(tally.chunks)

        def on_end(tally: StreamTally, error: BaseException | None) -> None:
            text = tally.text  # what the worker generated, moderated or not
            record.charge = settle(ticket, tally.usage, text)
            record.finish_reasons = [reason for _, reason in sorted(tally.finish_reasons.items())]
            if tally.response_id is not None:
                record.response_id = tally.response_id
            if record.capture:
                record.completion = text
            record.finish(200, error)

        record.first_token()
        bounds = runtime.policy.bounds
        tally = StreamTally(operation.text, max_text_chars=bounds.stream_text_chars,
                            keep_chunks_bytes=cached.max_entry_bytes if cached.key else 0)
        lease = StreamLease(worker, upstream, tally, on_end)
        options = call.params.stream_options
        include_usage = bool(options and options.include_usage is True)
        guard = StreamGuard(moderator, record) if moderator is not None and moderator.checks_output else None
        relay = _relay(first, upstream, model, include_usage, lease, on_done, record, guard, hide_cached)
        return Stream(relay, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers},
                      background=BackgroundTask(lease.release))
    text = operation.text(answer)
    record.charge = charge = settle(ticket, answer.usage if isinstance(answer.usage, Usage) else None, text)
    if answer.usage is None:  # SGLang may say ``"usage": null``; the spec has no null: say what was charged
        answer.usage = Usage(prompt_tokens=charge.input_tokens + charge.cached_input_tokens,
                             completion_tokens=charge.output_tokens, total_tokens=charge.total_tokens)
    if hide_cached and isinstance(answer.usage, Usage):
        answer.usage = without_cached_tokens(answer.usage)
    selector.on_outcome(worker.id, routing, text)
    if moderator is not None:
        check_answer(moderator, answer, record)
    answer.model = model
    record.finish_reasons, record.response_id = finish_reasons(answer.choices), answer.id
    if record.capture:
        record.completion = text
    record.finish()
    return Response(open_wire.encode(answer), media_type="application/json", headers=headers,
                    background=BackgroundTask(cached.put, answer) if cached.key else None)


def _report_outcome(runtime: Runtime, assignment: VersionChoice, record: RequestRecord) -> None:
    """Feed the canary's statistics: every upstream-served request of a model in a rollout,
    stable ones too (they are the baseline). Client errors and cache hits say nothing."""
    status = record.status
    if record.upstream_started is None or record.cache == "hit" or (400 <= status < 500 and status != 429):
        return
    ended = record.ended or time.perf_counter()
    first = record.first_token_at if record.first_token_at is not None else ended
    blocked = any(m.startswith("output:") and m.endswith(":block") for m in record.moderation)
    runtime.canaries.record(assignment, Outcome(ok=status < 400, status=status, ttft_s=first - record.started,
                                                e2e_s=ended - record.started, moderation_blocked=blocked))


_SHADOWS: set[asyncio.Task[None]] = set()


def _mirror(runtime: Runtime, assignment: VersionChoice, operation: Operation[Any, Any, Any], call: Any,
            routing: RoutingRequest, moderator: Moderator | None) -> None:
    """Send a copy to the shadow version in the background, bounded by its permit; its answer
    is discarded after its latency, errors and moderation verdict are recorded. Never delays
    or fails the request, and is not charged to the tenant (the mirror is the release
    engineer's cost). Mirrors go out non-streamed: their first token is their whole answer."""
    permit = runtime.canaries.try_shadow(assignment)
    if permit is None or assignment.shadow_version is None:
        return
    route = runtime.version_routes[assignment.model][assignment.shadow_version]
    mirrored = msgspec.structs.replace(call, params=msgspec.structs.replace(call.params, stream=False))

    async def run() -> None:
        started = time.perf_counter()
        outcome = Outcome(ok=False, status=502)
        try:
            choice = await choose(route, routing)
            choice.worker.acquire()
            try:
                request = msgspec.structs.replace(mirrored, upstream_model=choice.deployment.upstream_model)
                answer = await operation.complete(choice.worker.backend, request)
            finally:
                choice.worker.release()
            elapsed = time.perf_counter() - started
            blocked = moderator is not None and moderator.checks_output and \
                moderator.check_text(operation.text(answer), "output").blocked is not None
            outcome = Outcome(ok=True, status=200, ttft_s=elapsed, e2e_s=elapsed, moderation_blocked=blocked)
        except SwitchyardError as exc:
            outcome = Outcome(ok=False, status=exc.status_code)
        except Exception:  # a mirror must never take anything down
            log.exception("shadow request to %s failed", assignment.shadow_version)
        finally:
            permit.release()
        runtime.canaries.record(assignment, outcome, shadow=True)

    task = asyncio.get_running_loop().create_task(run(), name="canary-shadow")
    _SHADOWS.add(task)
    task.add_done_callback(_SHADOWS.discard)


def _request_attributes(params: Any) -> dict[str, Any]:
    """The GenAI request attributes the client set (``gen_ai.request.*``)."""
    out: dict[str, Any] = {}
    for field_name, attribute in _REQUEST_ATTRIBUTES:
        value = getattr(params, field_name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(attribute, value)
    return out


_REQUEST_ATTRIBUTES = (
    ("max_completion_tokens", "gen_ai.request.max_tokens"), ("max_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"),
    ("seed", "gen_ai.request.seed"), ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)


def _messages(call: ChatRequest | TextRequest) -> list[Message]:
    """What the difficulty classifier reads: the chat, or a text prompt as one user turn."""
    if isinstance(call, ChatRequest):
        return call.params.messages
    prompt, _ = render_text(call.params.prompt)
    return [Message(role="user", content=prompt)]


def route_header(selection: Selection) -> str:
    """``reason; worker=score, ...``: why the router picked this worker."""
    scores = ", ".join(f"{k}={v:.3g}" for k, v in selection.scores.items())
    return f"{selection.reason}; {scores}" if scores else selection.reason


def _from_cache(hit: ChatResponse, call: ChatRequest | TextRequest, model: str,
                headers: dict[str, str], record: RequestRecord) -> Response[Any]:
    hit.model = model
    record.finish_reasons, record.response_id = finish_reasons(hit.choices), hit.id
    record.finish()
    if not call.is_stream:
        return Response(open_wire.encode(hit), media_type="application/json", headers=headers)
    options = call.params.stream_options
    chunks = replay(hit, include_usage=bool(options and options.include_usage is True))

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield encode_event(chunk)
        yield DONE

    return Stream(body(), media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})


async def _relay(first: Chunk, upstream: AsyncIterator[Chunk], model: str, include_usage: bool,
                 lease: StreamLease, on_done: Callable[[StreamTally], Awaitable[None]],
                 record: RequestRecord, guard: StreamGuard | None,
                 hide_cached: bool = False) -> AsyncIterator[bytes]:
    """Re-emit upstream chunks under the public model name; usage only if the client asked.

    The lease's tally records each chunk for ``on_done``, which runs once the client has
    ``[DONE]``: routing learns the worker now holds prompt + answer, and the response cache
    stores the answer.
    With output moderation, each chunk's text is what the guard releases; a block ends the
    stream with ``finish_reason: content_filter`` and closes the upstream request.
    """
    chunk = first
    tally = lease.tally
    try:
        while True:
            tally.add(chunk)
            for out in guard.apply(chunk) if guard is not None else (chunk,):
                if include_usage or out.choices:
                    if not include_usage:
                        out.usage = msgspec.UNSET
                    elif hide_cached and isinstance(out.usage, Usage):  # a copy: the tally charges the real
                        out.usage = without_cached_tokens(out.usage)
                    out.model = model
                    yield encode_event(out)
            if guard is not None and guard.blocked is not None:
                yield DONE
                return  # the finally releases the lease: the upstream request is closed now
            try:
                chunk = await anext(upstream)
            except StopAsyncIteration:
                break
            record.chunk()
        yield DONE
        await on_done(tally)
    except SwitchyardError as exc:
        # after the first byte nothing can be retried: end with an error event the SDK raises
        lease.error = exc
        yield encode_error_event(exc)
    except (GeneratorExit, asyncio.CancelledError) as exc:  # the client went away mid-stream
        lease.error = exc
        raise
    finally:
        if guard is not None:
            guard.close()
        await lease.release()


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's chat completions, streamed or not."""
    return await handle(request, CHAT)


@post("/v1/completions", status_code=200)
async def text_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's legacy text completions, streamed or not."""
    return await handle(request, TEXT)
