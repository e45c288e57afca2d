"""``POST /v1/chat/completions`` and ``POST /v1/completions``: admit, route, call, relay."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from backends.base import Backend
from backends.errors import ModelNotFoundError, PermissionDeniedError, SwitchyardError, UpstreamError
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
from gateway.response_cache import CacheLookup, replay
from gateway.runtime import Runtime
from gateway.sse import DONE, encode_error_event, encode_event
from gateway.state import Gateway
from gateway.wire import parse_chat, parse_text
from policies.keys import Caller
from router.base import RoutingRequest, Selection
from router.decide import choose
from router.prompt_text import render_chat, render_text

Req = TypeVar("Req", ChatRequest, TextRequest)
Resp = TypeVar("Resp", ChatResponse, TextResponse)
Chunk = TypeVar("Chunk", ChatChunk, TextResponse)

_ENCODER = msgspec.json.Encoder()
SESSION_HEADER = "x-switchyard-session"
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
    if not answer.choices:
        return ""
    choice = answer.choices[0]
    content = choice.message.content if isinstance(choice, ChatChoice) else choice.delta.content
    return content if isinstance(content, str) else ""


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

    def __init__(self, worker: Worker, upstream: AsyncIterator[Any],
                 on_end: Callable[[list[Any]], None]) -> None:
        self._worker = worker
        self._upstream = upstream
        self._on_end = on_end
        self._released = False
        self.received: list[Any] = []
        """Chunks relayed so far: what is charged if the stream is cut short."""

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._worker.in_flight -= 1
        self._on_end(self.received)  # synchronous: a cancelled client cannot skip the charge
        await self._upstream.aclose()  # type: ignore[attr-defined]


def _authorize(runtime: Runtime, caller: Caller, model: str) -> None:
    if model not in runtime.models and model not in runtime.routes:
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
    if not caller.may_use(model):
        raise PermissionDeniedError(f"Your API key may not use the model '{model}'.", param="model")


async def serve(request: Request[Any, Any, Any], operation: Operation[Req, Resp, Chunk]) -> Response[Any]:
    """Admit the request, pick a worker, and answer from it (as JSON or as an SSE stream)."""
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime  # read once: the request finishes under this policy
    caller = runtime.keyring.authenticate(request.headers.get("authorization"))
    call = operation.parse(await request.body())
    params = call.params
    model = params.model
    _authorize(runtime, caller, model)
    headers = {"x-request-id": os.urandom(16).hex()}  # a uuid4's randomness, at a third of its cost
    route = runtime.routes.get(model)
    if route is not None:
        # being allowed the route means being allowed both of its tiers
        decision = route.decide(_messages(call), request.headers, caller.route_thresholds.get(model))
        model = decision.model
        headers["x-switchyard-tier"] = decision.tier
        if decision.score is not None:
            headers["x-switchyard-difficulty"] = f"{decision.score:.4f}"
    headers["x-switchyard-model"] = model
    call, ticket = await runtime.accounting.admit(runtime.policy, caller, model, call, headers["x-request-id"])
    headers.update(ticket.headers)
    settle = runtime.accounting.settle
    cached = CacheLookup.start(runtime.response_caches.get(model), caller.tenant, call, request.headers)
    hit = await cached.get()
    if cached.state:
        headers["x-switchyard-cache"] = cached.state
    if hit is not None:
        settle(ticket, Usage())  # served without upstream tokens: refund the estimate
        return _from_cache(hit, call, model, headers)

    user = params.user if isinstance(params.user, str) else None
    prompt, head_chars = operation.render(call)
    routing = RoutingRequest(model=model, tenant=caller.tenant,
                             sticky_key=request.headers.get(SESSION_HEADER) or user or caller.key_name,
                             prompt=prompt, head_chars=head_chars)
    choice = await choose(runtime.models[model], routing)
    call = msgspec.structs.replace(call, upstream_model=choice.deployment.upstream_model)
    worker, selector = choice.worker, choice.deployment.selector
    headers["x-switchyard-worker"] = worker.id
    if selector.debug_header:
        headers["x-switchyard-route"] = route_header(choice.selection)

    async def on_done(chunks: list[Chunk]) -> None:
        selector.on_outcome(worker.id, routing, "".join(operation.text(c) for c in chunks))
        await cached.put_stream(chunks)

    def on_end(chunks: list[Chunk]) -> None:
        usage = next((c.usage for c in reversed(chunks) if isinstance(c.usage, Usage)), None)
        settle(ticket, usage, "".join(operation.text(c) for c in chunks))

    if call.is_stream:
        return await _stream(operation, worker, call, model, headers, on_done, on_end)
    worker.in_flight += 1
    try:
        answer = await operation.complete(worker.backend, call)
    except BaseException:
        settle(ticket, Usage())  # failed before any output: nothing was generated
        raise
    finally:
        worker.in_flight -= 1
    settle(ticket, answer.usage if isinstance(answer.usage, Usage) else None, operation.text(answer))
    selector.on_outcome(worker.id, routing, operation.text(answer))
    answer.model = model
    return Response(_ENCODER.encode(answer), media_type="application/json", headers=headers,
                    background=BackgroundTask(cached.put, answer) if cached.key else None)


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
                headers: dict[str, str]) -> Response[Any]:
    hit.model = model
    if not call.is_stream:
        return Response(_ENCODER.encode(hit), media_type="application/json", headers=headers)
    options = call.params.stream_options
    chunks = replay(hit, include_usage=bool(options and options.include_usage is True))

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield encode_event(chunk)
        yield DONE

    return Stream(body(), media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})


async def _stream(operation: Operation[Req, Resp, Chunk], worker: Worker, call: Req, model: str,
                  headers: dict[str, str], on_done: Callable[[list[Chunk]], Awaitable[None]],
                  on_end: Callable[[list[Chunk]], None]) -> Response[Any]:
    worker.in_flight += 1
    upstream = operation.stream(worker.backend, call)
    lease = StreamLease(worker, upstream, on_end)
    try:
        # peek before answering 200: a failure before the first byte is still a proper HTTP error
        first = await anext(upstream)
    except StopAsyncIteration:
        await lease.release()
        raise UpstreamError(f"{worker.id} ended the stream before sending anything") from None
    except BaseException:
        await lease.release()
        raise
    options = call.params.stream_options
    include_usage = bool(options and options.include_usage is True)
    body = _relay(first, upstream, model, include_usage, lease, on_done)
    return Stream(body, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers},
                  background=BackgroundTask(lease.release))


async def _relay(first: Chunk, upstream: AsyncIterator[Chunk], model: str, include_usage: bool,
                 lease: StreamLease,
                 on_done: Callable[[list[Chunk]], Awaitable[None]]) -> AsyncIterator[bytes]:
    """Re-emit upstream chunks under the public model name; usage only if the client asked.

    The chunks are kept for ``on_done``, which runs once the client has ``[DONE]``: routing
    learns the worker now holds prompt + answer, and the response cache stores the answer.
    """
    chunk = first
    received: list[Chunk] = lease.received
    try:
        while True:
            received.append(chunk)
            if include_usage or chunk.choices:
                if not include_usage:
                    chunk.usage = msgspec.UNSET
                chunk.model = model
                yield encode_event(chunk)
            try:
                chunk = await anext(upstream)
            except StopAsyncIteration:
                break
        yield DONE
        await on_done(received)
    except SwitchyardError as exc:
        # after the first byte nothing can be retried: end with an error event the SDK raises
        yield encode_error_event(exc)
    finally:
        await lease.release()


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's chat completions, streamed or not."""
    return await serve(request, CHAT)


@post("/v1/completions", status_code=200)
async def text_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's legacy text completions, streamed or not."""
    return await serve(request, TEXT)
