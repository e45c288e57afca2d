"""The upstream read bounds (``bounds:`` of the policy) on real sockets: body size, event size,
inflated size, the non-streamed deadline and the stream duration (issue 15, findings 2 and 7)."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from backends.errors import (
    UpstreamDeadlineError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamTooLargeError,
)
from backends.guard import GUARD_BODY_BYTES, GuardAnswer, ask_guard
from backends.http import (
    Timeouts,
    iter_chunks,
    open_session,
    read_body,
    read_error_body,
)
from backends.read_clock import ReadClock
from backends.sse import SSEDecoder
from policies.bounds_config import BoundsConfig
from policies.document import Policy
from tests.aiohttp_app import drip, huge_chunked, start_app

KIB, MIB = 1024, 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner, url = await start_app(app)
    return runner, url + "/"


async def _get(handler: Handler) -> AsyncIterator[aiohttp.ClientResponse]:
    runner, url = await _serve(handler)
    session = open_session()
    try:
        response = await session.get(url)
        try:
            yield response
        finally:
            response.close()
    finally:
        await session.close()
        await runner.cleanup()


# --- the SSE decoder: one event's size -------------------------------------------------------


def test_an_event_over_the_bound_fails_before_its_end_arrives() -> None:
    decoder = SSEDecoder(max_event_bytes=1024, source="pool/0")
    assert decoder.feed(b'data: {"ok": 1}\n\n')[0].data == '{"ok": 1}'
    decoder.feed(b"data: " + b"x" * 600)
    with pytest.raises(UpstreamTooLargeError) as caught:
        decoder.feed(b"x" * 600)  # no blank line yet: the event could grow forever
    assert caught.value.bound == "upstream_event_bytes"
    assert caught.value.status_code == 502 and "pool/0" in caught.value.message


def test_a_whole_event_over_the_bound_in_one_chunk_fails_too() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(UpstreamTooLargeError):
        decoder.feed(b"data: " + b"y" * 2000 + b"\n\ndata: small\n\n")


def test_a_10_mb_event_costs_linear_time_not_quadratic() -> None:
    # the old decoder re-joined and re-scanned its whole buffer on every chunk: ~3 s of CPU here
    event = b"data: " + b"x" * (10 * MIB) + b"\n\n"
    decoder = SSEDecoder()
    started = time.process_time()
    events = [e for i in range(0, len(event), 64 * KIB) for e in decoder.feed(event[i:i + 64 * KIB])]
    assert time.process_time() - started < 1.0
    assert len(events) == 1 and len(events[0].data) == 10 * MIB


# --- non-streamed bodies: size, inflated size, deadline --------------------------------------


async def _read(handler: Handler, timeouts: Timeouts) -> bytes:
    async for response in _get(handler):
        started = asyncio.get_running_loop().time()
        return await read_body(response, timeouts, "pool/0", started)
    raise AssertionError("unreachable")


async def test_a_body_over_the_bound_stops_being_read_at_the_bound() -> None:
    sent: list[int] = []
    with pytest.raises(UpstreamTooLargeError) as caught:
        await _read(huge_chunked(sent), Timeouts(max_body_bytes=1 * MIB))
    assert caught.value.bound == "upstream_body_bytes"
    await asyncio.sleep(0.2)
    assert len(sent) < 200  # the connection was closed: the upstream could not send it all


async def test_an_announced_length_over_the_bound_is_refused_unread() -> None:
    async def announced(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * (3 * MIB))

    with pytest.raises(UpstreamTooLargeError):
        await _read(announced, Timeouts(max_body_bytes=1 * MIB))


async def test_a_gzip_bomb_is_not_inflated_past_the_bound() -> None:
    bomb = gzip.compress(b"\0" * (50 * MIB), compresslevel=9)
    assert len(bomb) < 100 * KIB
    seen: list[str] = []

    async def gzipped(request: web.Request) -> web.Response:
        seen.append(request.headers.get("accept-encoding", ""))
        return web.Response(body=bomb, headers={"content-encoding": "gzip",
                                                "content-type": "application/json"})

    with pytest.raises(UpstreamTooLargeError) as caught:
        await _read(gzipped, Timeouts(max_body_bytes=8 * MIB, max_decompressed_bytes=2 * MIB))
    assert caught.value.bound == "upstream_decompressed_bytes"
    assert seen == ["identity"]  # and it was not even asked for


async def test_a_body_under_every_bound_is_read_whole() -> None:
    payload = gzip.compress(b'{"a": 1}' * 1000)

    async def fine(request: web.Request) -> web.Response:
        return web.Response(body=payload, headers={"content-encoding": "gzip"})

    assert await _read(fine, Timeouts()) == b'{"a": 1}' * 1000


async def test_a_dripping_body_ends_at_the_deadline() -> None:
    async def dripping(request: web.Request) -> web.StreamResponse:
        return await drip(request, b" " * 10, 0.05)  # never silent for long: idle never fires

    started = time.monotonic()
    with pytest.raises(UpstreamDeadlineError) as caught:
        await _read(dripping, Timeouts(idle=5.0, total=1.0))
    assert caught.value.bound == "upstream_deadline_s" and caught.value.status_code == 504
    assert time.monotonic() - started < 4.0


async def test_a_silent_body_is_still_an_idle_timeout() -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        return await drip(request, b"{", 30)

    with pytest.raises(UpstreamTimeoutError) as caught:
        await _read(silent, Timeouts(first_byte=5.0, idle=0.3, total=10.0))
    assert not isinstance(caught.value, UpstreamDeadlineError)


async def test_an_error_body_is_read_only_as_far_as_its_message() -> None:
    async def huge_error(request: web.Request) -> web.StreamResponse:
        return await drip(request, b"e" * 64 * KIB, 0.001, headers={"content-type": "text/plain"})

    async for response in _get(huge_error):
        raw = await read_error_body(response, Timeouts(idle=2.0))
        assert 0 < len(raw) <= 64 * KIB


# --- streams: duration and inflated size ------------------------------------------------------


async def _drain(handler: Handler, timeouts: Timeouts) -> int:
    received = 0
    async for response in _get(handler):
        async for chunk in iter_chunks(response, timeouts, "pool/0"):
            received += len(chunk)
    return received


async def test_a_stream_that_never_ends_ends_at_its_duration() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        return await drip(request, b'data: {"x": 1}\n\n', 0.01)

    started = time.monotonic()
    with pytest.raises(UpstreamDeadlineError) as caught:
        await _drain(endless, Timeouts(idle=5.0, stream_total=1.0))
    assert caught.value.bound == "stream_duration_s"
    assert time.monotonic() - started < 4.0


async def _first_then(request: web.Request, pause_s: float) -> web.StreamResponse:
    """One event at once, then silence for ``pause_s`` or until the client goes, then the end."""
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b'data: {"x": 1}\n\n')
    ends = time.monotonic() + pause_s
    while time.monotonic() < ends and request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.02)
    return response


async def test_the_idle_bound_after_a_longer_first_byte_bound_fires_at_its_own_time() -> None:
    # the stream's one timer was armed for the first byte (20 s); the idle read must pull it in
    async def one_then_silent(request: web.Request) -> web.StreamResponse:
        return await _first_then(request, 30)

    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match="sent nothing for 0.3s"):
        await _drain(one_then_silent, Timeouts(first_byte=20.0, idle=0.3))
    assert time.monotonic() - started < 10.0


async def test_a_trickle_longer_than_the_idle_bound_in_all_is_never_idle() -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(25):
            await response.write(b'data: {"x": 1}\n\n')
            await asyncio.sleep(0.06)  # 1.5 s in all; no gap near the 1 s bound
        return response

    assert await _drain(trickle, Timeouts(first_byte=1.0, idle=1.0)) == 25 * 16


async def test_a_slow_reader_is_not_an_idle_upstream() -> None:
    # only waiting for the upstream counts: time the consumer spends between reads does not
    async def quick(request: web.Request) -> web.StreamResponse:
        return await drip(request, b'data: {"x": 1}\n\n', 0.01)

    received = 0
    async for response in _get(quick):
        chunks = iter_chunks(response, Timeouts(first_byte=0.3, idle=0.3), "pool/0")
        async for chunk in chunks:
            received += len(chunk)
            if received >= 3 * 16:
                break
            await asyncio.sleep(0.8)
        await chunks.aclose()  # type: ignore[attr-defined]
    assert received >= 3 * 16


async def test_a_cancelled_read_is_a_cancellation_not_a_timeout() -> None:
    async def one_then_silent(request: web.Request) -> web.StreamResponse:
        return await _first_then(request, 30)

    async for response in _get(one_then_silent):
        reading = asyncio.ensure_future(_chunks_of(response, Timeouts(idle=0.5)))
        await asyncio.sleep(0.1)  # the first event read, the second awaited
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await asyncio.sleep(0.6)  # past the idle bound: the stopped timer cancels nothing


async def _chunks_of(response: aiohttp.ClientResponse, timeouts: Timeouts) -> int:
    return len([chunk async for chunk in iter_chunks(response, timeouts, "pool/0")])


async def _read_past(deadline_s: float, *, cancel: bool) -> None:
    """A read of a silent stream whose deadline has passed, cancelled from outside too or not."""
    async def one_then_silent(request: web.Request) -> web.StreamResponse:
        return await _first_then(request, 30)

    async for response in _get(one_then_silent):
        await response.content.readany()  # the first event: what follows is silence
        loop = asyncio.get_running_loop()
        clock = ReadClock(loop)
        deadline = loop.time() + deadline_s
        reading = asyncio.ensure_future(clock.read(response.content, deadline))
        await asyncio.sleep(0)  # the read waits, its timer armed
        if cancel:  # in the same turn of the loop as the deadline, before the read resumes
            loop.call_at(deadline, reading.cancel)
        try:
            await reading
        finally:
            clock.stop()


async def test_a_read_past_its_deadline_is_a_timeout() -> None:
    with pytest.raises(TimeoutError):
        await _read_past(0.0, cancel=False)


async def test_an_outside_cancel_at_the_deadline_stays_a_cancellation() -> None:
    with pytest.raises(asyncio.CancelledError):
        await _read_past(0.0, cancel=True)


async def test_a_compressed_stream_inflates_only_so_far() -> None:
    bomb = gzip.compress(b"data: " + b"a" * (20 * MIB) + b"\n\n", compresslevel=9)

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"content-encoding": "gzip", "content-type": "text/event-stream"})

    with pytest.raises(UpstreamTooLargeError) as caught:
        await _drain(gzipped, Timeouts(max_decompressed_bytes=1 * MIB))
    assert caught.value.bound == "upstream_decompressed_bytes"


async def test_compression_is_asked_for_only_when_the_policy_says_so() -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("accept-encoding", ""))
        return web.Response(text="ok")

    runner, url = await _serve(record)
    try:
        for compression in (False, True):
            async with open_session(compression=compression) as session, session.get(url) as response:
                await response.read()
    finally:
        await runner.cleanup()
    assert seen[0] == "identity" and "gzip" in seen[1]


# --- the policy section -----------------------------------------------------------------------


def test_bounds_are_a_strict_policy_section_with_defaults() -> None:
    document = {"backends": {"b": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
                "models": {"m": {"deployments": [{"backend": "b", "model": "m"}]}}}
    assert Policy.model_validate(document).bounds == BoundsConfig()
    tuned = Policy.model_validate({**document, "bounds": {"upstream_body_bytes": 2 * MIB, "header_read_s": 3}})
    assert tuned.bounds.upstream_body_bytes == 2 * MIB and tuned.bounds.header_read_s == 3
    with pytest.raises(ValidationError):
        Policy.model_validate({**document, "bounds": {"upstream_body_byte": 1}})
    with pytest.raises(ValidationError):
        Policy.model_validate({**document, "bounds": {"stream_duration_s": 0}})


# --- a guard model's answer -------------------------------------------------------------------


async def _ask(handler: Handler) -> GuardAnswer:
    runner, url = await _serve(handler)
    try:
        return await ask_guard("llama_guard", url, "llama-guard-3-1b", "some text", "assistant", timeout_s=5.0)
    finally:
        await runner.cleanup()


async def test_a_guard_answer_over_its_bound_is_a_guard_error_not_a_read_of_it_all() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:  # chunked: no length announced
        return await drip(request, b"s" * 64 * KIB, 0.001, headers={"content-type": "application/json"})

    async def announced(request: web.Request) -> web.Response:
        return web.Response(body=b" " * (GUARD_BODY_BYTES + 1), content_type="application/json")

    for handler in (endless, announced):
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="over 262144 bytes"):
            await _ask(handler)
        assert time.monotonic() - started < 4.0


async def test_a_guard_answer_under_its_bound_is_read() -> None:
    async def safe(request: web.Request) -> web.Response:
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": "unsafe\nS10"}}]})

    assert await _ask(safe) == GuardAnswer(True, ("S10",))
