"""AnthropicBackend against the simulated Anthropic API, over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest
from multidict import CIMultiDict

from backends.anthropic import AnthropicBackend
from backends.errors import UpstreamError
from backends.http import Timeouts, open_session
from backends.sim import RunningSim, SimConfig, start_sim
from backends.sse import SSEDecoder
from backends.types import (
    ChatChunk,
    ChatParams,
    ChatRequest,
    PromptTokensDetails,
    Usage,
)

API_KEY = "sk-ant-sim-key-0123456789"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(
        SimConfig(
            kind="anthropic",
            worker_id="claude-sim-0",
            model="claude-sim",
            api_key=API_KEY,
            base_ttft_ms=1,
            itl_ms=2,
        )
    )
    yield running
    await running.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = open_session()
    yield s
    await s.close()


@pytest.fixture
async def backend(
    sim: RunningSim, session: aiohttp.ClientSession
) -> AsyncIterator[AnthropicBackend]:
    async with httpx.AsyncClient() as control:
        yield AnthropicBackend(
            "claude/0", sim.url, session, control, Timeouts(first_byte=5, idle=5), API_KEY
        )


def chat(
    content: str = "Tell me about radix trees", *, stream: bool = False, **params: Any
) -> ChatRequest:
    p = msgspec.convert(
        {
            "model": "claude",
            "stream": stream,
            "messages": [{"role": "user", "content": content}],
            **params,
        },
        ChatParams,
    )
    return ChatRequest(params=p, extra={}, upstream_model="claude-sim-1")


def usage_of(chunks: list[ChatChunk]) -> Usage:
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and isinstance(usage, Usage)
    return usage


async def test_complete(backend: AnthropicBackend) -> None:
    out = await backend.complete(chat(max_tokens=8, seed=1, presence_penalty=0.1))
    choice = out.choices[0]
    assert out.id.startswith("msg_") and out.model == "claude-sim-1"
    assert choice.finish_reason == "length"
    assert choice.message.content and len(choice.message.content.split()) == 8
    assert isinstance(out.usage, Usage)
    assert out.usage.completion_tokens == 8 and out.usage.prompt_tokens > 0


async def test_repeated_prompt_reports_cached_tokens(backend: AnthropicBackend) -> None:
    first = await backend.complete(chat(max_tokens=4))
    second = await backend.complete(chat(max_tokens=4))
    assert isinstance(first.usage, Usage) and isinstance(second.usage, Usage)
    assert second.usage.cached_tokens > 0
    assert second.usage.prompt_tokens == first.usage.prompt_tokens  # cache reads count as prompt


async def test_stream_text_matches_complete(backend: AnthropicBackend) -> None:
    whole = await backend.complete(chat(max_tokens=6))
    chunks = [c async for c in backend.stream(chat(max_tokens=6, stream=True))]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert usage_of(chunks).completion_tokens == 6


async def test_stop_sequence(backend: AnthropicBackend) -> None:
    whole = (await backend.complete(chat(max_tokens=12))).choices[0].message.content or ""
    stop = whole.split()[3]
    out = await backend.complete(chat(max_tokens=12, stop=[" " + stop]))
    assert out.choices[0].finish_reason == "stop"
    assert whole.startswith(out.choices[0].message.content or "")


async def test_tool_call_round_trip(backend: AnthropicBackend) -> None:
    ask = [{"role": "user", "content": "What is the weather? Please use the tool."}]
    p = msgspec.convert({"model": "claude", "messages": ask, "tools": [WEATHER]}, ChatParams)
    out = await backend.complete(ChatRequest(params=p, extra={}))
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert isinstance(choice.message.tool_calls, list)
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert msgspec.json.decode(call.function.arguments) == {"city": "sim", "days": 1}

    follow_up = ask + [
        {"role": "assistant", "content": None, "tool_calls": [msgspec.to_builtins(call)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    p = msgspec.convert(
        {"model": "claude", "messages": follow_up, "tools": [WEATHER], "max_tokens": 5}, ChatParams
    )
    answer = await backend.complete(ChatRequest(params=p, extra={}))
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content


async def test_streamed_tool_call(backend: AnthropicBackend) -> None:
    request = chat(
        "use the tool for Paris",
        stream=True,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    chunks = [c async for c in backend.stream(request)]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert (
        calls[0].id
        and calls[0].type == "function"
        and calls[0].function == {"name": "get_weather", "arguments": ""}
    )
    assert {tc.index for tc in calls} == {0}
    arguments = "".join(tc.function["arguments"] for tc in calls)  # type: ignore[index]
    assert msgspec.json.decode(arguments) == {"city": "sim", "days": 1}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert usage_of(chunks).completion_tokens > 0


async def test_prompt_caching_reports_cache_writes_then_reads(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    async with httpx.AsyncClient() as control:
        backend = AnthropicBackend(
            "claude/0", sim.url, session, control, Timeouts(), API_KEY, prompt_caching=True
        )
        system = "You are a careful assistant. " * 200
        p = msgspec.convert(
            {
                "model": "claude",
                "max_tokens": 3,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": "hi"},
                ],
            },
            ChatParams,
        )
        first = await backend.complete(ChatRequest(params=p, extra={}))
        sent = sim.engine.recent_requests()[-1]["body"]
        assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
        second = await backend.complete(ChatRequest(params=p, extra={}))
    assert isinstance(second.usage, Usage) and second.usage.cached_tokens > 1000
    assert isinstance(first.usage, Usage) and isinstance(first.usage.prompt_tokens_details, PromptTokensDetails)
    assert first.usage.prompt_tokens_details.cache_write_tokens > 1000, "the first call writes the cache"


async def test_cancelling_a_stream_closes_the_connection(
    sim: RunningSim, backend: AnthropicBackend
) -> None:
    stream = backend.stream(chat(max_tokens=5000, stream=True))
    await anext(aiter(stream))
    await anext(aiter(stream))
    assert sim.engine.stats.running == 1
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if sim.engine.stats.cancelled == 1:
            break
        await asyncio.sleep(0.02)
    assert (sim.engine.stats.cancelled, sim.engine.stats.running) == (1, 0)


async def test_task_cancellation_closes_the_connection(
    sim: RunningSim, backend: AnthropicBackend
) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream(chat(max_tokens=5000, stream=True)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if sim.engine.stats.cancelled == 1:
            break
        await asyncio.sleep(0.02)
    assert (sim.engine.stats.cancelled, sim.engine.stats.running) == (1, 0)


async def test_wrong_key_is_an_upstream_error_without_the_key(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    async with httpx.AsyncClient() as control:
        backend = AnthropicBackend(
            "claude/0", sim.url, session, control, Timeouts(), "sk-ant-wrong-0123456789"
        )
        with pytest.raises(UpstreamError) as info:
            await backend.complete(chat())
    assert info.value.status_code == 502 and "wrong" not in info.value.message


# --- the sim's own wire format ------------------------------------------------------------


async def post(
    sim: RunningSim, session: aiohttp.ClientSession, body: dict[str, Any], key: str | None = API_KEY,
    *, version: str | None = "2023-06-01", bearer: bool = False,
) -> tuple[int, CIMultiDict[str], bytes]:
    headers = ({"authorization": f"Bearer {key}"} if bearer else {"x-api-key": key}) if key else {}
    if version:
        headers["anthropic-version"] = version
    async with session.post(f"{sim.url}/v1/messages", json=body, headers=headers) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


HI = {"role": "user", "content": "hi"}
BASE: dict[str, Any] = {"model": "claude-sim", "max_tokens": 4, "messages": [HI]}


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({**BASE, "sim_fail": 429}, 429, "rate_limit_error"),
        ({**BASE, "sim_fail": 529}, 529, "overloaded_error"),
        ({**BASE, "sim_fail": 500}, 500, "api_error"),
        ({k: v for k, v in BASE.items() if k != "max_tokens"}, 400, "invalid_request_error"),
        ({**BASE, "messages": []}, 400, "invalid_request_error"),
        (
            {**BASE, "messages": [{"role": "assistant", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        ({**BASE, "messages": [HI, HI]}, 400, "invalid_request_error"),
        ({**BASE, "n": 2}, 400, "invalid_request_error"),
    ],
)
async def test_sim_errors_in_anthropic_shape(
    sim: RunningSim,
    session: aiohttp.ClientSession,
    body: dict[str, Any],
    status: int,
    error_type: str,
) -> None:
    got_status, headers, raw = await post(sim, session, body)
    assert got_status == status
    payload = msgspec.json.decode(raw)
    assert payload["type"] == "error" and payload["error"]["type"] == error_type
    assert payload["error"]["message"]
    assert headers["x-sim-worker"] == "claude-sim-0"
    if status == 429:
        assert headers["retry-after"] == "1"


async def test_sim_requires_the_key(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    status, _, raw = await post(sim, session, BASE, key=None)
    assert status == 401
    assert msgspec.json.decode(raw)["error"]["type"] == "authentication_error"


async def test_sim_stream_event_sequence(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(
        sim, session, {**BASE, "stream": True, "sim_reply": ["Hel", "lo"]}
    )
    assert status == 200 and headers["x-sim-worker"] == "claude-sim-0"
    assert headers["Content-Type"].startswith("text/event-stream")
    events = SSEDecoder().feed(raw)
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [msgspec.json.decode(e.data) for e in events]
    assert all(d["type"] == e.event for d, e in zip(data, events, strict=True))
    start = data[0]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert set(start["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    }
    assert [d["delta"]["text"] for d in data[3:5]] == ["Hel", "lo"]
    assert data[6]["delta"]["stop_reason"] == "end_turn" and data[6]["usage"]["output_tokens"] > 0


async def test_sim_message_shape(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    status, _, raw = await post(
        sim, session, {**BASE, "sim_reply": "Hello there", "system": "Be nice."}
    )
    message = msgspec.json.decode(raw)
    assert status == 200
    assert message["type"] == "message" and message["model"] == "claude-sim"
    assert message["content"] == [{"type": "text", "text": "Hello there"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None


# --- what the real API enforces -----------------------------------------------------------


async def test_sim_takes_the_key_as_bearer_like_the_sdk(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    status, _, _ = await post(sim, session, BASE, bearer=True)
    assert status == 200
    status, _, _ = await post(sim, session, BASE, key="sk-ant-wrong-0123456789", bearer=True)
    assert status == 401


async def test_sim_requires_anthropic_version(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    status, _, raw = await post(sim, session, BASE, version=None)
    assert status == 400 and "anthropic-version" in msgspec.json.decode(raw)["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"temperature": 0.5, "top_p": 0.9}, "cannot both be specified"),
        ({"reasoning_effort": "low"}, "reasoning_effort: Extra inputs"),
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
        ({"output_config": {"effort": "huge"}}, "output_config.effort"),
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "max_tokens"),
    ],
)
async def test_sim_refuses_what_the_api_refuses(
    sim: RunningSim, session: aiohttp.ClientSession, extra: dict[str, Any], needle: str
) -> None:
    status, _, raw = await post(sim, session, {**BASE, **extra})
    error = msgspec.json.decode(raw)["error"]
    assert status == 400 and error["type"] == "invalid_request_error"
    assert needle in error["message"]


async def test_sim_answers_the_minimal_instance_of_an_output_schema(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1},
                       "unit": {"$ref": "#/$defs/Unit"}, "note": {"type": "string"}},
        "required": ["city", "days", "unit"],
        "additionalProperties": False,
        "$defs": {"Unit": {"enum": ["C", "F"]}},
    }
    body = {**BASE, "max_tokens": 64, "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    status, _, raw = await post(sim, session, body)
    message = msgspec.json.decode(raw)
    assert status == 200 and message["stop_reason"] == "end_turn"
    assert msgspec.json.decode(message["content"][0]["text"]) == {"city": "", "days": 1, "unit": "C"}


THINK = {"type": "enabled", "budget_tokens": 1024}


async def test_sim_thinking_opens_the_answer_signed_and_must_come_back(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    ask = {"role": "user", "content": "Please use the tool for Paris."}
    body = {**BASE, "max_tokens": 2048, "thinking": THINK, "tools": [tool], "messages": [ask]}
    status, _, raw = await post(sim, session, body)
    first = msgspec.json.decode(raw)
    assert status == 200 and [b["type"] for b in first["content"]] == ["thinking", "tool_use"]
    thinking, call = first["content"]
    assert thinking["thinking"] and thinking["signature"]
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}

    without = {**body, "messages": [ask, {"role": "assistant", "content": [call]}, result]}
    status, _, raw = await post(sim, session, without)
    assert status == 400 and "Expected `thinking`" in msgspec.json.decode(raw)["error"]["message"]

    tampered = {**thinking, "thinking": thinking["thinking"] + " (edited)"}
    forged = {**body, "messages": [ask, {"role": "assistant", "content": [tampered, call]}, result]}
    status, _, raw = await post(sim, session, forged)
    assert status == 400 and "signature" in msgspec.json.decode(raw)["error"]["message"]

    carried = {**body, "messages": [ask, {"role": "assistant", "content": [thinking, call]}, result]}
    status, _, raw = await post(sim, session, carried)
    assert status == 200, raw


async def test_sim_streams_thinking_then_signature(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    body = {**BASE, "max_tokens": 2048, "thinking": THINK, "stream": True, "sim_reply": "Hi"}
    status, _, raw = await post(sim, session, body)
    data = [msgspec.json.decode(e.data) for e in SSEDecoder().feed(raw)]
    assert status == 200
    deltas = [d["delta"]["type"] for d in data if d["type"] == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas and deltas[-1] == "text_delta"
    starts = [(d["index"], d["content_block"]["type"]) for d in data if d["type"] == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text")]
