"""``POST /v1/chat/completions`` and ``POST /v1/completions``: the request path as stages.

Each stage owns what it opens and closes it on every exit::

    caller, call = accept(...)                       # key, body, door's wire format
    target = resolve_target(...)                     # difficulty route, canary version
    async with admit(...) as ticket:                 # reserve; refund on error; settle once
        call = screen(...)                           # input moderation, response cache
        exchange = Exchange(...)                     # routing, retries, fallback, shadow
        answer / stream = exchange.complete() / open_stream()   # worker slot: the attempt's
        return relay(...)                            # stream stages, or the JSON answer

A stream's ticket and worker slot pass to its ``StreamLease``, which settles and releases
when the stream ends, however it ends.
"""

from __future__ import annotations

import asyncio
import os
from functools import partial
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask

from backends import open_wire
from backends.errors import InvalidRequestError
from backends.types import Usage
from gateway.accounting import TRIMMED_HEADER, Ticket
from gateway.after_send import run_after_send
from gateway.doors import OPENAI_CHAT, OPENAI_TEXT, Door
from gateway.errors import DOOR_STATE, REQUEST_ID_STATE
from gateway.exchange import Exchange
from gateway.input_screen import Screen, screen_input
from gateway.moderation import StreamGuard, answered_text, check_answer, guard_answer, off_loop
from gateway.operations import Chunk, Req, Resp, request_attributes
from gateway.relay import (
    StreamLease,
    encoded,
    from_cache,
    json_response,
    metered,
    moderated,
    published,
    stream_response,
)
from gateway.response_cache import CacheLookup
from gateway.runtime import Runtime
from gateway.state import Gateway
from gateway.stream_tally import StreamTally
from gateway.target import SESSION_HEADER, Target, resolve_target
from gateway.telemetry import RequestRecord, finish_reasons
from policies.keys import Caller
from policies.moderation import Echo, Moderator
from router.base import Selection
from router.decide import Choice
from router.isolation import without_cached_tokens

__all__ = ["chat_completions", "handle", "route_header", "serve", "text_completions"]


async def handle(request: Request[Any, Any, Any], door: Door[Req, Resp, Chunk]) -> Response[Any]:
    """Serve one request under the runtime active when it arrived, with its telemetry record.

    The record is finished here when the request fails or answers JSON, and by the relay
    when a stream ends.
    """
    gateway: Gateway = request.app.state.gateway
    request_id = os.urandom(16).hex()  # a uuid4's randomness, at a third of its cost
    request.state[REQUEST_ID_STATE] = request_id  # for the error handler's x-request-id
    request.state[DOOR_STATE] = door.error_body  # errors leave in the door's shape
    record = RequestRecord(gateway.telemetry, door.operation.name, request.headers, request_id, door.name)
    try:
        runtime = gateway.runtime  # read once: the request finishes under this policy
        runtime.enter(record)
        return await serve(request, door, runtime, record)
    except BaseException as exc:
        record.finish(error=exc)
        raise


async def serve(request: Request[Any, Any, Any], door: Door[Req, Resp, Chunk],
                runtime: Runtime, record: RequestRecord) -> Response[Any]:
    """Accept, resolve, admit, then answer from upstream (or the response cache)."""
    caller, call = await _accept(request, door, runtime, record)
    target = resolve_target(runtime, caller, call, request.headers, record)
    _check_kind(runtime, door, target.model)
    with record.phase("switchyard.admission"):
        ticket = await runtime.accounting.admit(runtime.policy, caller, target.model, call,
                                                record.request_id).reserve()
    ticket.on_settle = record.charged
    async with ticket:  # refunds if anything below raises, settles a JSON answer once
        return await _answer(request, door, runtime, record, caller, target, ticket)


def _check_kind(runtime: Runtime, door: Door[Req, Resp, Chunk], model: str) -> None:
    """400 before admission for a model of another kind (an embedding model asked to chat)."""
    kind = runtime.policy.models[model].kind
    if kind != door.operation.model_kind:
        raise InvalidRequestError(f"The model '{model}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind} model:"
                                  f" it does not serve {door.name} requests.", param="model")


async def _accept(request: Request[Any, Any, Any], door: Door[Req, Resp, Chunk], runtime: Runtime,
                  record: RequestRecord) -> tuple[Caller, Req]:
    """The caller (401 before the body is read) and the parsed call, noted on the record."""
    caller = runtime.keyring.authenticate(door.credential(request.headers))
    record.tenant, record.key = caller.tenant, caller.key_name
    body = await request.body()
    call = door.parse(body)
    record.request_model, record.stream = call.params.model, call.is_stream
    model = runtime.policy.model_named(call.params.model)
    if model != call.params.model:  # an alias (Claude Code's model names): the model it names
        call = msgspec.structs.replace(call, params=open_wire.replace(call.params, model=model))
    record.request_params = request_attributes(call.params)
    if runtime.policy.observability.capture_content:
        record.capture, record.request_body = True, body
        record.session = request.headers.get(SESSION_HEADER)
    return caller, call


async def _answer(request: Request[Any, Any, Any], door: Door[Req, Resp, Chunk], runtime: Runtime,
                  record: RequestRecord, caller: Caller, target: Target, ticket: Ticket[Any]) -> Response[Any]:
    moderator = runtime.moderation.for_request(caller.tenant, target.model)
    # after admission: a prompt too long for the model is refused (or trimmed) before the
    # costlier read, and only what will be sent upstream (ticket.call) is checked
    async with screen_input(runtime, target, moderator, ticket.call, record) as screen:
        return await _screened(request, door, runtime, record, caller, target, ticket, moderator, screen)


async def _screened(request: Request[Any, Any, Any], door: Door[Req, Resp, Chunk], runtime: Runtime,
                    record: RequestRecord, caller: Caller, target: Target, ticket: Ticket[Any],
                    moderator: Moderator | None, screen: Screen[Any]) -> Response[Any]:
    call: Req = screen.call  # trimmed, clamped, checked (or being checked beside the upstream call)
    headers = {**target.headers, **ticket.headers}
    trimmed = ticket.headers.get(TRIMMED_HEADER)
    record.trimmed_tokens = int(trimmed) if trimmed else 0
    # only generated answers are cached (an operation that computes its answer is not)
    cache = runtime.response_caches.get((target.model, target.assignment.version)) if door.operation.generates else None
    cached = CacheLookup.start(cache, caller.tenant, call, request.headers)
    hit = await cached.get()
    if cached.state:
        headers["x-switchyard-cache"] = record.cache = cached.state
    if hit is not None:
        await screen.passed()
        ticket.settle(Usage())  # served without upstream tokens: nothing to charge
        return from_cache(hit, call, door, target.model, headers, record)
    exchange = Exchange(runtime, door.operation, call, caller, target, record,
                        screen.passed if screen.overlapped else None)
    if call.is_stream:
        return await _stream(exchange, door, runtime, record, target, ticket, call, moderator, cached, headers)
    choice, answer = await exchange.complete()
    exchange.mirror(moderator)
    headers.update(_worker_headers(choice))
    offload = moderator is not None and off_loop(moderator)
    if moderator is not None and door.operation.generates and (offload or moderator.config.guard):
        # the cascade's encoder costs ms a window: check the answer in a worker thread; a guard
        # model is asked here about what was borderline; then finish inline (settling touches
        # the loop's state) with nothing left to check
        generated: Any = answer  # a ChatResponse or TextResponse: the operation generates
        borderline = (await asyncio.to_thread(check_answer, moderator, generated, record) if offload
                      else check_answer(moderator, generated, record))
        await guard_answer(moderator, borderline, record)
        moderator = None
    return _whole(request, exchange, door, record, target, ticket, choice, call, answer, moderator, cached, headers)


async def _stream(exchange: Exchange[Req, Resp, Chunk], door: Door[Req, Resp, Chunk], runtime: Runtime,
                  record: RequestRecord, target: Target, ticket: Ticket[Any], call: Req,
                  moderator: Moderator | None, cached: CacheLookup, headers: dict[str, str]) -> Response[Any]:
    choice, first, upstream = await exchange.open_stream()
    exchange.mirror(moderator)
    headers.update(_worker_headers(choice))
    worker, selector, routing = choice.worker, choice.deployment.selector, exchange.routing

    async def on_done(tally: StreamTally) -> None:
        selector.on_outcome(worker.id, routing, tally.text)
        if tally.chunks is not None:
            await cached.put_stream(tally.chunks)

    def on_end(tally: StreamTally, error: BaseException | None) -> None:
        text = tally.text  # what the worker generated, moderated or not
        ticket.settle(tally.usage, text)
        record.finish_reasons = [reason for _, reason in sorted(tally.finish_reasons.items())]
        if tally.response_id is not None:
            record.response_id = tally.response_id
        if record.capture:
            record.completion = text
        record.finish(200, error)

    record.first_token()
    tally = StreamTally(door.operation.text, max_text_chars=runtime.policy.bounds.stream_text_chars,
                        keep_chunks_bytes=cached.max_entry_bytes if cached.key else 0)
    lease = StreamLease(worker, upstream, tally, on_end)
    include_usage = call.include_usage
    chunks = metered(first, upstream, tally, record)
    if moderator is not None and moderator.checks_output:
        chunks = moderated(chunks, StreamGuard(moderator, record, Echo(partial(answered_text, call))))
    chunks = published(chunks, target.model, include_usage, exchange.hides_cached_tokens(choice))
    ticket.hand_off()  # the lease settles it when the stream ends
    return stream_response(encoded(chunks, door.stream(call), lease, on_done), lease, headers)


def _whole(request: Request[Any, Any, Any], exchange: Exchange[Req, Resp, Chunk], door: Door[Req, Resp, Chunk],
           record: RequestRecord, target: Target, ticket: Ticket[Any], choice: Choice, call: Req, answer: Resp,
           moderator: Moderator | None, cached: CacheLookup, headers: dict[str, str]) -> Response[Any]:
    text = door.operation.text(answer)
    charge = ticket.settle(answer.usage if isinstance(answer.usage, Usage) else None, text)
    if answer.usage is None:  # SGLang may say ``"usage": null``; the spec has no null: say what was charged
        answer.usage = Usage(prompt_tokens=charge.input_tokens + charge.cached_input_tokens,
                             completion_tokens=charge.output_tokens, total_tokens=charge.total_tokens)
    if exchange.hides_cached_tokens(choice) and isinstance(answer.usage, Usage):
        answer.usage = without_cached_tokens(answer.usage)

    def bookkeeping() -> None:  # nothing the client receives: once the answer is out
        choice.deployment.selector.on_outcome(choice.worker.id, exchange.routing, text)
        record.finish()

    run_after_send(request, bookkeeping)
    if door.operation.generates:
        _generated(answer, moderator, record)
    answer.model = target.model
    if record.capture:
        record.completion = text
    return json_response(door.answer(answer, call), headers,
                         BackgroundTask(cached.put, answer) if cached.key else None)


def _generated(answer: Any, moderator: Moderator | None, record: RequestRecord) -> None:
    """What only a generated answer (``ChatResponse``, ``TextResponse``) has: output
    moderation, finish reasons, an id. Typed ``Any``: the path is generic over operations, and
    only those whose ``Operation.generates`` is set call this."""
    if moderator is not None:
        check_answer(moderator, answer, record)
    record.finish_reasons, record.response_id = finish_reasons(answer.choices), answer.id


def _worker_headers(choice: Choice) -> dict[str, str]:
    headers = {"x-switchyard-worker": choice.worker.id}
    if choice.deployment.selector.debug_header:
        headers["x-switchyard-route"] = route_header(choice.selection)
    return headers


def route_header(selection: Selection) -> str:
    """``reason; worker=score, ...``: why the router picked this worker."""
    scores = ", ".join(f"{k}={v:.3g}" for k, v in selection.scores.items())
    return f"{selection.reason}; {scores}" if scores else selection.reason


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's chat completions, streamed or not."""
    return await handle(request, OPENAI_CHAT)


@post("/v1/completions", status_code=200)
async def text_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI's legacy text completions, streamed or not."""
    return await handle(request, OPENAI_TEXT)

