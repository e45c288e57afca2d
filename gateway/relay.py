"""The answer on its way back: small stream stages, the stream's lease, and JSON answers.

A stream passes through one stage per concern, each an async generator doing one thing::

    encoded(published(moderated(metered(upstream, tally), guard), model, ...), encoder, ...)

(``moderated`` only when output moderation is on: a stage that passes every chunk through
would still cost a generator hop per chunk.)

``metered`` records every upstream chunk in the lease's ``StreamTally`` (what is charged,
before moderation changes anything); ``moderated`` lets the output guard release, hold or
block text; ``published`` puts the public model name on and drops (or coarsens) usage the
client did not ask for; ``encoded`` writes the door's stream format (OpenAI's SSE framing,
Anthropic's events, ...) and turns a failure after the first byte into the error the door's
SDK raises. The ``StreamLease`` holds the worker slot and the upstream stream until the
response ends, whichever way it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar import Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from backends import open_wire
from backends.errors import SwitchyardError, UpstreamError, UpstreamRejectedError
from backends.pool import Worker
from backends.types import ChatRequest, ChatResponse, EmbeddingRequest, TextRequest, Usage
from gateway.doors.base import Door, StreamEncoder
from gateway.moderation import StreamGuard
from gateway.response_cache import replay
from gateway.stream_tally import StreamTally
from gateway.telemetry import RequestRecord, finish_reasons
from router.isolation import without_cached_tokens

log = logging.getLogger("switchyard.gateway")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


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


async def metered(first: Any, upstream: AsyncIterator[Any], tally: StreamTally,
                  record: RequestRecord) -> AsyncIterator[Any]:
    """The upstream's chunks, the first one already read, each recorded before it goes on."""
    chunk = first
    while True:
        tally.add(chunk)
        yield chunk
        try:
            chunk = await anext(upstream)
        except StopAsyncIteration:
            tally.complete = True
            return
        record.chunk()


async def moderated(chunks: AsyncIterator[Any], guard: StreamGuard) -> AsyncIterator[Any]:
    """What output moderation releases; a block ends the stream after its final chunk."""
    try:
        async for chunk in chunks:
            # the cascade's encoder costs ms a window: off the loop, one chunk at a time, in order
            outs = await asyncio.to_thread(guard.apply, chunk) if guard.needs_thread(chunk) else guard.apply(chunk)
            if guard.asking:  # a borderline window waits for the guard model's answer
                outs = await guard.consult(chunk, outs)
            for out in outs:
                yield out
            if guard.blocked is not None:
                return  # the lease's release closes the upstream request now
    finally:
        guard.close()


async def published(chunks: AsyncIterator[Any], model: str, include_usage: bool,
                    hide_cached: bool) -> AsyncIterator[Any]:
    """Chunks as the client may see them: the public model name, usage only if asked for
    (the gateway always asks upstream), cached tokens withheld where isolation says so."""
    async for out in chunks:
        if not include_usage:
            if not out.choices:
                continue  # the usage-only chunk the client did not ask for
            out.usage = msgspec.UNSET
        elif hide_cached and isinstance(out.usage, Usage):  # a copy: the tally charges the real
            out.usage = without_cached_tokens(out.usage)
        if hide_cached:
            # a native rendering (the provider's own events) would still carry its cache counts
            out.__dict__.pop(open_wire.NATIVE_EVENTS, None)
        out.model = model
        yield out


async def encoded(chunks: AsyncIterator[Any], encoder: StreamEncoder, lease: StreamLease,
                  on_done: Callable[[StreamTally], Awaitable[None]]) -> AsyncIterator[bytes]:
    """The door's stream format; ``on_done`` once a whole stream was relayed, before its end
    marker: a client that repeats the request as soon as it has the end finds the cache entry
    (the marker waits for one cache write, not for anything before it)."""
    try:
        async for chunk in chunks:
            data = encoder.chunk(chunk)
            if data:
                yield data
        if lease.tally.complete:  # not cut by moderation: routing and the cache may learn from it
            try:
                await on_done(lease.tally)
            except Exception:  # bookkeeping must not cost the client the end of what it has whole
                log.exception("after a whole stream: the cache write or routing's outcome failed")
        yield encoder.done()
    except SwitchyardError as exc:
        # after the first byte nothing can be retried: end with the error the door's SDK raises
        lease.error = exc
        yield encoder.error(exc)
    except (GeneratorExit, asyncio.CancelledError) as exc:  # the client went away mid-stream
        lease.error = exc
        raise
    finally:
        await lease.release()


def stream_response(body: AsyncIterator[bytes], lease: StreamLease, headers: dict[str, str]) -> Stream:
    """The SSE response; its background task releases the lease if the body never ran."""
    return Stream(body, media_type="text/event-stream", headers={**SSE_HEADERS, **headers},
                  background=BackgroundTask(lease.release))


def json_response(body: bytes, headers: dict[str, str], background: BackgroundTask | None = None) -> Response[Any]:
    """A whole answer, encoded by its door."""
    return Response(body, media_type="application/json", headers=headers, background=background)


def from_cache(hit: ChatResponse, call: ChatRequest | TextRequest | EmbeddingRequest, door: Door[Any, Any, Any], model: str,
               headers: dict[str, str], record: RequestRecord) -> Response[Any]:
    """A response-cache hit, as the door's JSON or replayed as the stream it would have been."""
    hit.model = model
    record.finish_reasons, record.response_id = finish_reasons(hit.choices), hit.id
    record.finish()
    if not call.is_stream:
        return json_response(door.answer(hit, call), headers)
    chunks = replay(hit, include_usage=call.include_usage)
    encoder = door.stream(call)

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            data = encoder.chunk(chunk)
            if data:
                yield data
        yield encoder.done()

    return Stream(body(), media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
