"""AnthropicBackend's HTTP side: error table, timeouts, headers, stream shutdown.

The upstream is a tiny real aiohttp server on 127.0.0.1:0 answering recorded Anthropic bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
from aiohttp import web

from backends.anthropic import AnthropicBackend
from backends.errors import (
    SwitchyardError,
    UnsupportedError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from backends.http import Timeouts, open_session
from backends.types import ChatParams, ChatRequest, TextParams, TextRequest, Usage
from tests.aiohttp_app import start_app

API_KEY = "sk-ant-api03-SECRETSECRETSECRET"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Upstream:
    """A one-route server whose answer each test sets; records what it received."""

    def __init__(self) -> None:
        self.handler: Handler = self._unset
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.disconnected = asyncio.Event()
        self.release = asyncio.Event()
        """Set at teardown: handlers that hang wait on it, so the server stops at once."""
        self.url = ""

    async def _unset(self, request: web.Request) -> web.StreamResponse:
        raise AssertionError("no handler set")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.json()))
        return await self.handler(request)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/v1/messages", server.dispatch)
    runner, server.url = await start_app(app)
    yield server
    server.release.set()
    await runner.cleanup()


@pytest.fixture
async def backend(upstream: Upstream) -> AsyncIterator[AnthropicBackend]:
    session = open_session()
    async with httpx.AsyncClient() as control:
        yield AnthropicBackend(
            "claude/0",
            upstream.url,
            session,
            control,
            Timeouts(connect=1, first_byte=1, idle=0.5),
            API_KEY,
        )
    await session.close()


def chat(stream: bool = False, **params: Any) -> ChatRequest:
    p = msgspec.convert(
        {
            "model": "claude",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
            **params,
        },
        ChatParams,
    )
    return ChatRequest(params=p, extra={}, upstream_model="claude-3-5-haiku")


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_011",
    }


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + msgspec.json.encode(e) + b"\n\n"
        for e in events
    )


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-3-5-haiku",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    },
}
TEXT_START = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "text", "text": ""},
}
TEXT_DELTA = {
    "type": "content_block_delta",
    "index": 0,
    "delta": {"type": "text_delta", "text": "Hi"},
}
ENDING = (
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"},
)


ERROR_TABLE = [
    (
        400,
        error_body("invalid_request_error", "messages: field required"),
        UpstreamRejectedError,
        400,
    ),
    (401, error_body("authentication_error", f"invalid x-api-key {API_KEY}"), UpstreamError, 502),
    (403, error_body("permission_error", "not allowed"), UpstreamError, 502),
    (404, error_body("not_found_error", "model: claude-9"), UpstreamRejectedError, 400),
    (
        413,
        error_body("request_too_large", "Request exceeds the maximum size"),
        UpstreamRejectedError,
        400,
    ),
    (
        429,
        error_body("rate_limit_error", "Number of requests has exceeded your rate limit"),
        UpstreamRateLimitedError,
        429,
    ),
    (500, error_body("api_error", "Internal server error"), UpstreamError, 502),
    (529, error_body("overloaded_error", "Overloaded"), UpstreamUnavailableError, 503),
]


def answer_with(
    status: int, payload: dict[str, Any] | str, headers: dict[str, str] | None = None
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if isinstance(payload, str):
            return web.Response(
                status=status, text=payload, content_type="text/html", headers=headers
            )
        return web.json_response(payload, status=status, headers=headers)

    return handler


@pytest.mark.parametrize(("status", "payload", "cls", "client_status"), ERROR_TABLE)
@pytest.mark.parametrize("stream", [False, True])
async def test_error_table(
    upstream: Upstream,
    backend: AnthropicBackend,
    stream: bool,
    status: int,
    payload: dict[str, Any],
    cls: type[SwitchyardError],
    client_status: int,
) -> None:
    upstream.handler = answer_with(status, payload, {"retry-after": "7"} if status == 429 else None)
    with pytest.raises(SwitchyardError) as info:
        if stream:
            await anext(aiter(backend.stream(chat(stream=True))))
        else:
            await backend.complete(chat())
    error = info.value
    assert type(error) is cls
    assert error.status_code == client_status
    assert API_KEY not in error.message and "SECRET" not in error.message
    assert "claude/0" in error.message
    if status == 429:
        assert error.headers == {"retry-after": "7"}


async def test_body_without_error_json_falls_back_to_status_and_is_not_echoed(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    upstream.handler = answer_with(
        413, "<html><body>413 Request Entity Too Large cloudflare</body></html>"
    )
    with pytest.raises(UpstreamRejectedError) as info:
        await backend.complete(chat())
    assert "cloudflare" not in info.value.message and "<html>" not in info.value.message


async def test_overloaded_passes_on_retry_after(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    upstream.handler = answer_with(
        529, error_body("overloaded_error", "Overloaded"), {"retry-after": "3"}
    )
    with pytest.raises(UpstreamUnavailableError) as info:
        await backend.complete(chat())
    assert info.value.headers == {"retry-after": "3"}


async def test_request_headers_and_translated_body(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    reply = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    upstream.handler = answer_with(200, reply)
    out = await backend.complete(chat(max_tokens=5, n=1, seed=3))
    headers, body = upstream.requests[0]
    assert headers["x-api-key"] == API_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "model": "claude-3-5-haiku",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    assert out.choices[0].message.content == "Hello"
    assert out.model == "claude-3-5-haiku"


async def test_unreadable_success_body_is_an_upstream_error(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    upstream.handler = answer_with(200, "<html>not json</html>")
    with pytest.raises(UpstreamError):
        await backend.complete(chat())


async def test_unsupported_request_fails_before_sending(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    stream = backend.stream(chat(stream=True, n=2))
    with pytest.raises(UnsupportedError):
        await anext(aiter(stream))
    assert upstream.requests == []


async def test_error_event_mid_stream_raises_mapped(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(MESSAGE_START, TEXT_START, TEXT_DELTA))
        await response.write(sse(error_body("overloaded_error", f"Overloaded {API_KEY}")))
        return response

    upstream.handler = handler
    got = []
    with pytest.raises(UpstreamUnavailableError) as info:
        async for chunk in backend.stream(chat(stream=True)):
            got.append(chunk)
    assert [c.choices[0].delta.content for c in got] == ["", "Hi"]
    assert API_KEY not in info.value.message


async def test_stream_cut_before_message_stop_is_an_error(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(MESSAGE_START, TEXT_START, TEXT_DELTA))
        return response

    upstream.handler = handler
    with pytest.raises(UpstreamError, match="before message_stop"):
        async for _ in backend.stream(chat(stream=True)):
            pass


async def test_first_byte_timeout(upstream: Upstream, backend: AnthropicBackend) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await upstream.release.wait()
        return web.Response()

    upstream.handler = handler
    with pytest.raises(UpstreamTimeoutError):
        await backend.complete(chat())
    with pytest.raises(UpstreamTimeoutError):
        await anext(aiter(backend.stream(chat(stream=True))))


async def test_idle_timeout_mid_stream(upstream: Upstream, backend: AnthropicBackend) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(MESSAGE_START))
        await upstream.release.wait()
        return response

    upstream.handler = handler
    stream = backend.stream(chat(stream=True))
    assert (await anext(aiter(stream))).choices[0].delta.role == "assistant"
    with pytest.raises(UpstreamTimeoutError):
        await anext(aiter(stream))
    await stream.aclose()  # type: ignore[attr-defined]


async def test_unreachable_upstream() -> None:
    session = open_session()
    async with httpx.AsyncClient() as control:
        backend = AnthropicBackend(
            "claude/9", "http://127.0.0.1:9", session, control, Timeouts(), None
        )
        with pytest.raises(UpstreamUnavailableError):
            await backend.complete(chat())
    await session.close()


async def test_aclose_mid_stream_closes_the_connection(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(MESSAGE_START, TEXT_START))
        try:
            for _ in range(200):
                await response.write(sse(TEXT_DELTA))
                await asyncio.sleep(0.01)
        except ConnectionError:
            upstream.disconnected.set()
        return response

    upstream.handler = handler
    stream = backend.stream(chat(stream=True))
    await anext(aiter(stream))
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(upstream.disconnected.wait(), 2)


async def test_full_stream_ends_with_usage_chunk(
    upstream: Upstream, backend: AnthropicBackend
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        # split mid-event: the decoder must reassemble across reads
        payload = sse(MESSAGE_START, TEXT_START, {"type": "ping"}, TEXT_DELTA, *ENDING)
        await response.write(payload[:50])
        await asyncio.sleep(0.01)
        await response.write(payload[50:])
        return response

    upstream.handler = handler
    chunks = [c async for c in backend.stream(chat(stream=True))]
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None, None, "stop"]
    assert chunks[-1].choices == []
    assert isinstance(chunks[-1].usage, Usage) and chunks[-1].usage.completion_tokens == 2


async def test_legacy_completions_and_health(backend: AnthropicBackend) -> None:
    text = TextRequest(params=TextParams(model="claude", prompt="hi"), extra={})
    with pytest.raises(UnsupportedError):
        await backend.complete_text(text)
    with pytest.raises(UnsupportedError):
        await anext(aiter(backend.stream_text(text)))
    health = await backend.health()
    assert health.ok and health.detail == "not probed"
    assert backend.kind == "anthropic" and backend.name == "claude/0"
