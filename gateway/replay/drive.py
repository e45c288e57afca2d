"""Send recorded traffic to a gateway with the real ``openai`` client and measure each answer.

Every request is streamed (``stream_options.include_usage``) whatever it recorded, so time to
first token can be measured at the client: the time from sending to the first chunk with
content. Requests leave at their recorded times scaled by ``speed``, or as fast as
``concurrency`` allows; either way at most ``concurrency`` are in flight, and the turns of one
session are sent in order, each after the previous one finished, as a chat client does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import openai

from gateway.replay.traffic import Traffic, TrafficRequest

SESSION_HEADER = "x-switchyard-session"
TRIMMED_HEADER = "x-switchyard-trimmed-tokens"


@dataclass(frozen=True, slots=True)
class DriveOptions:
    """How traffic is sent."""

    speed: float = 1.0
    """Recorded inter-arrival times are divided by this; 0 ignores them (as fast as possible)."""
    concurrency: int = 16
    """Most requests in flight at once."""
    timeout_s: float = 120.0
    """Longest wait for one request."""


@dataclass(slots=True)
class Outcome:
    """What happened to one replayed request."""

    line: int
    tenant: str
    status: int = 0
    """HTTP status; 0 when no response came (connection error, timeout)."""
    code: str | None = None
    """OpenAI error code of a rejection, or of an error event in the stream."""
    tier: str | None = None
    """``cheap`` or ``strong`` for a difficulty route (``x-switchyard-tier``)."""
    model: str | None = None
    """The public model that answered (``x-switchyard-model``)."""
    worker: str | None = None
    """The gateway's id of the worker that answered (``x-switchyard-worker``)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    trimmed_tokens: int = 0
    conversation: str = ""
    """The request's conversation (its session, else its opening): tier switches are counted per
    conversation."""

    @property
    def answered(self) -> bool:
        """A 200 whose stream ended without an error event."""
        return self.status == 200 and self.code is None


async def drive(base_url: str, traffic: Traffic, key_for: Callable[[str], str], default_tenant: str,
                options: DriveOptions | None = None) -> list[Outcome]:
    """Send every request of ``traffic`` to the gateway at ``base_url``; outcomes in file order.

    Args:
        base_url: The gateway (without ``/v1``).
        traffic: What to send.
        key_for: The plain API key to send for a tenant.
        default_tenant: Tenant of requests recorded without one.
        options: Pace and concurrency.
    """
    options = options or DriveOptions()
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0,
                                timeout=options.timeout_s)
    clients: dict[str, openai.AsyncOpenAI] = {}  # copies sharing one connection pool
    slots = asyncio.Semaphore(options.concurrency)
    previous: dict[str, asyncio.Event] = {}
    tasks: list[asyncio.Task[Outcome]] = []
    loop = asyncio.get_running_loop()
    start, first_ts = loop.time(), min((r.ts for r in traffic.requests if r.ts is not None), default=0.0)
    try:
        for request in traffic.requests:
            if options.speed > 0 and request.ts is not None:
                await asyncio.sleep((request.ts - first_ts) / options.speed - (loop.time() - start))
            tenant = request.tenant if request.tenant is not None else default_tenant
            done = asyncio.Event()
            after = previous.get(request.session) if request.session else None
            if request.session:
                previous[request.session] = done
            sender = clients.setdefault(tenant, client.with_options(api_key=key_for(tenant)))
            tasks.append(asyncio.create_task(_turn(sender, request, tenant, after, done, slots)))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await client.close()


async def _turn(client: openai.AsyncOpenAI, request: TrafficRequest, tenant: str,
                after: asyncio.Event | None, done: asyncio.Event, slots: asyncio.Semaphore) -> Outcome:
    try:
        if after is not None:
            await after.wait()  # the previous turn of this session
        async with slots:
            return await send(client, request, tenant)
    finally:
        done.set()


async def send(client: openai.AsyncOpenAI, request: TrafficRequest, tenant: str) -> Outcome:
    """Send one request, streamed, and measure it."""
    outcome = Outcome(request.line, tenant, conversation=conversation_of(request))
    headers = {SESSION_HEADER: request.session} if request.session else {}
    started = time.perf_counter()
    try:
        stream = await _open(client, request, headers)
    except openai.APIStatusError as exc:
        outcome.status, outcome.code = exc.status_code, exc.code or exc.type or "error"
        return outcome
    except openai.APIConnectionError as exc:
        outcome.code = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"
        return outcome
    outcome.status = stream.response.status_code
    _read_headers(outcome, stream.response.headers)
    try:
        async for chunk in stream:
            if outcome.ttft_s is None and _has_content(chunk):
                outcome.ttft_s = time.perf_counter() - started
            usage = _usage(chunk)
            if usage is not None:
                outcome.prompt_tokens, outcome.cached_tokens, outcome.completion_tokens = usage
    except openai.APIError as exc:  # an error event in the stream, after the 200
        outcome.code = exc.code or "stream_error"
    except (openai.APIConnectionError, ConnectionError):
        outcome.code = "stream_cut"
    return outcome


def conversation_of(request: TrafficRequest) -> str:
    """The session, else the opening messages (through the first user turn) and ``user``."""
    if request.session:
        return request.session
    opening: list[Any] = [request.body.get("user")]
    for message in request.body.get("messages") or [request.body.get("prompt")]:
        opening.append(message)
        if isinstance(message, dict) and message.get("role") == "user":
            break
    return hashlib.sha256(json.dumps(opening, sort_keys=True, default=str).encode()).hexdigest()[:16]


async def _open(client: openai.AsyncOpenAI, request: TrafficRequest,
                headers: dict[str, str]) -> openai.AsyncStream[object]:
    # The body goes as recorded (every field: max_tokens, temperature, user, tools, ...), and
    # chunks stay plain JSON: the typed params and chunk models of ``chat.completions.create``
    # cost ~1 ms per chunk, which in a one-process replay would show up as TTFT.
    body = {**request.body, "stream": True, "stream_options": {"include_usage": True}}
    path = "/chat/completions" if request.endpoint == "chat" else "/completions"
    return await client.post(path, body=body, cast_to=object, stream=True,
                             stream_cls=openai.AsyncStream[object], options={"headers": headers})


def _read_headers(outcome: Outcome, headers: Mapping[str, str]) -> None:
    outcome.tier = headers.get("x-switchyard-tier")
    outcome.model = headers.get("x-switchyard-model")
    outcome.worker = headers.get("x-switchyard-worker")
    trimmed = headers.get(TRIMMED_HEADER)
    outcome.trimmed_tokens = int(trimmed) if trimmed and trimmed.isdigit() else 0


def _has_content(chunk: Any) -> bool:
    """A chunk carrying generated text or a tool call (not the opening role-only delta)."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls"))
    return bool(choice.get("text"))


def _usage(chunk: Any) -> tuple[int, int, int] | None:
    """(prompt, cached, completion) tokens of a usage chunk."""
    usage = chunk.get("usage") if isinstance(chunk, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(usage.get("prompt_tokens") or 0), int(cached or 0), int(usage.get("completion_tokens") or 0)
