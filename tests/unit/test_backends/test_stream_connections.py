"""What a streamed answer leaves of its upstream connection (``backends.http.end_stream``).

A stream that ended with ``[DONE]`` hands its connection back to the pool, even when the
chunked body's last bytes come in a later write (as aiohttp's and uvicorn's servers send them);
one whose end never comes is closed after ``STREAM_TAIL_S``; one the gateway stops reading is
closed at once, so the upstream sees the disconnect. The upstream is a real aiohttp server on
127.0.0.1:0 that records the client port of every request: one port, one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import msgspec
import pytest
from aiohttp import web

from backends import http
from backends.http import Timeouts, open_session
from backends.openai_compat import OpenAICompatBackend
from backends.types import ChatParams, ChatRequest
from tests.aiohttp_app import start_app

Ending = Callable[[web.StreamResponse], Awaitable[None]]


def _event(text: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


class Upstream:
    """Streams two words and ``[DONE]``, then ends as ``ending`` says; keeps each request's
    client port and whether the server saw that client go away."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.gone = asyncio.Event()
        self.release = asyncio.Event()
        self.ending: Ending = self._end_later
        self.words = 2
        self.url = ""

    @staticmethod
    async def _end_later(response: web.StreamResponse) -> None:
        await asyncio.sleep(0.02)  # the zero-length last chunk as a write of its own

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        self.ports.append(request.transport.get_extra_info("peername")[1])
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for word in range(self.words):
                await response.write(_event(f"w{word} "))
                await asyncio.sleep(0.005)
            await response.write(b"data: [DONE]\n\n")
            await self.ending(response)
        except (ConnectionError, asyncio.CancelledError):
            self.gone.set()
            raise
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner, server.url = await start_app(app)
    yield server
    server.release.set()
    await runner.cleanup()


@pytest.fixture
async def backend(upstream: Upstream) -> AsyncIterator[OpenAICompatBackend]:
    session = open_session()
    async with httpx.AsyncClient() as control:
        yield OpenAICompatBackend("up/0", upstream.url, session, control, Timeouts(first_byte=5, idle=5))
    await session.close()


def _chat() -> ChatRequest:
    params = msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                             ChatParams)
    return ChatRequest(params=params, extra={}, upstream_model="m")


async def _words(backend: OpenAICompatBackend) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in backend.stream(_chat())])


async def _end_at_once(response: web.StreamResponse) -> None:
    return None


@pytest.mark.parametrize("ending", [Upstream._end_later, _end_at_once], ids=["end-later", "end-at-once"])
async def test_streams_that_end_with_done_share_one_connection(
        upstream: Upstream, backend: OpenAICompatBackend, ending: Ending) -> None:
    upstream.ending = ending
    for _ in range(3):
        assert await _words(backend) == "w0 w1 "
        await asyncio.sleep(0.3)  # the body's end (20 ms later) has arrived and handed the connection back
    assert len(upstream.ports) == 3 and len(set(upstream.ports)) == 1


async def test_a_stream_whose_body_never_ends_loses_its_connection_after_the_tail_bound(
        upstream: Upstream, backend: OpenAICompatBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "STREAM_TAIL_S", 0.1)

    async def never(response: web.StreamResponse) -> None:
        while not upstream.release.is_set():  # [DONE] sent, the body left open: comments follow
            await response.write(b": still here\n\n")
            await asyncio.sleep(0.02)

    upstream.ending = never
    assert await _words(backend) == "w0 w1 "  # the client is not kept waiting for the body's end
    await asyncio.wait_for(upstream.gone.wait(), 5)
    upstream.ending = Upstream._end_later
    assert await _words(backend) == "w0 w1 "
    assert len(set(upstream.ports)) == 2


async def test_a_stream_left_mid_way_closes_its_connection_at_once(
        upstream: Upstream, backend: OpenAICompatBackend) -> None:
    upstream.words = 1000
    stream = backend.stream(_chat())
    await anext(aiter(stream))
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(upstream.gone.wait(), 2)
    upstream.words = 2
    assert await _words(backend) == "w0 w1 "
    assert len(set(upstream.ports)) == 2
