"""The SGLang simulator emits SGLang 0.5.23's shapes: same keys in the same order per object,
nulls in the same places, same event sequence, as the fixtures generated from SGLang's code.

Values (text, counts, ids) differ by design; what a client or the gateway could trip over (a
key, its type, a null, an event kind) may not. When SGLang changes, regenerate the fixtures and
this test says where the simulator must follow.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backends.sim import RunningSim, SimConfig, start_sim
from tests.contracts.fixture_server import SGLANG_FIXTURES, Fixture

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}]
CALL = [{"role": "user", "content": "Please call get_weather for Paris."}]
THINK = {"chat_template_kwargs": {"enable_thinking": True}}
USAGE = {"stream_options": {"include_usage": True}}


def shape(value: Any) -> Any:
    """The JSON value's structure: key order, types, where the nulls are."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    shapes: list[Any] = []
    for item in value:  # a list: the distinct shapes of its elements
        if shape(item) not in shapes:
            shapes.append(shape(item))
    return ["list", shapes]


def kind(event: Any) -> str:
    """What an SSE event of an SGLang stream is."""
    if event == "[DONE]":
        return "done"
    if "error" in event:
        return "error"
    if not event["choices"]:
        return "usage"
    choice = event["choices"][0]
    if "text" in choice:
        return "text_finish" if choice["finish_reason"] else "text"
    delta = choice["delta"]
    if delta.get("tool_calls"):
        return "tool_name" if delta["tool_calls"][0]["function"]["name"] else "tool_arguments"
    if choice["finish_reason"]:
        return "finish"
    if delta.get("role"):
        return "role"
    return "reasoning" if delta.get("reasoning_content") is not None else "content"


def events(body: bytes) -> list[Any]:
    out: list[Any] = []
    for block in body.decode().split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            payload = block.removeprefix("data: ")
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def order(kinds: list[str]) -> list[str]:
    """The kinds in order of first appearance (one call or two, one piece or many)."""
    return list(dict.fromkeys(kinds))


def assert_same_stream_shape(got: bytes, fixture_name: str) -> None:
    want_events, got_events = events(Fixture.load(SGLANG_FIXTURES, fixture_name).body), events(got)
    want_kinds, got_kinds = [kind(e) for e in want_events], [kind(e) for e in got_events]
    assert order(got_kinds) == order(want_kinds), (got_kinds, want_kinds)
    by_kind: dict[str, list[Any]] = {}
    for event, k in zip(want_events, want_kinds, strict=True):
        by_kind.setdefault(k, [])
        if shape(event) not in by_kind[k]:
            by_kind[k].append(shape(event))
    for event, k in zip(got_events, got_kinds, strict=True):
        assert shape(event) in by_kind[k], f"{k} event {event} has a shape SGLang never sends"


def assert_same_shape(got: Any, fixture_name: str) -> None:
    want = json.loads(Fixture.load(SGLANG_FIXTURES, fixture_name).body)
    assert shape(got) == shape(want), f"\nsim:    {got}\nSGLang: {want}"


@pytest.fixture
async def sglang() -> AsyncIterator[httpx.AsyncClient]:
    sim = await start_sim(SimConfig(zero_latency=True, model="Qwen/Qwen3-8B"))
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        yield client
    await sim.aclose()


@pytest.fixture
async def reporting() -> AsyncIterator[RunningSim]:
    sim = await start_sim(SimConfig(zero_latency=True, enable_cache_report=True))
    yield sim
    await sim.aclose()


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": "Qwen/Qwen3-8B", **body})


@pytest.mark.parametrize(("body", "fixture"), [
    ({"messages": MESSAGES}, "chat_plain.json"),
    ({"messages": CALL, "tools": TOOLS}, "chat_tool_calls.json"),
    ({"messages": MESSAGES, "tools": TOOLS, "tool_choice": {
        "type": "function", "function": {"name": "get_weather"}}}, "chat_tool_calls.json"),
    ({"messages": MESSAGES, **THINK}, "chat_reasoning.json"),
    ({"messages": MESSAGES, "reasoning_effort": "high"}, "chat_reasoning.json"),
])
async def test_chat_bodies(sglang: httpx.AsyncClient, body: dict[str, Any], fixture: str) -> None:
    response = await chat(sglang, **body)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/json")
    assert_same_shape(response.json(), fixture)


@pytest.mark.parametrize(("body", "fixture"), [
    ({"messages": MESSAGES, **USAGE}, "chat_stream_plain.sse"),
    ({"messages": MESSAGES}, "chat_stream_plain_no_usage.sse"),
    ({"messages": CALL, "tools": TOOLS, **USAGE}, "chat_stream_tool_calls.sse"),
    ({"messages": MESSAGES, **THINK, **USAGE}, "chat_stream_reasoning.sse"),
])
async def test_chat_streams(sglang: httpx.AsyncClient, body: dict[str, Any], fixture: str) -> None:
    response = await chat(sglang, stream=True, **body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert_same_stream_shape(response.content, fixture)


async def test_cache_report_only_when_enabled(sglang: httpx.AsyncClient,
                                              reporting: RunningSim) -> None:
    # off (SGLang's default): prompt_tokens_details is null, streamed or not
    assert (await chat(sglang, messages=MESSAGES)).json()["usage"]["prompt_tokens_details"] is None
    async with httpx.AsyncClient(base_url=reporting.url, timeout=10) as client:
        for _ in range(2):  # the second one hits the prefix cache
            body = (await chat(client, messages=MESSAGES)).json()
        assert_same_shape(body, "chat_plain_cache_report.json")
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        streamed = await chat(client, messages=MESSAGES, stream=True, **USAGE)
        assert_same_stream_shape(streamed.content, "chat_stream_plain_cache_report.sse")


async def test_text_completions(sglang: httpx.AsyncClient) -> None:
    body = {"model": "Qwen/Qwen3-8B", "prompt": "Paris is", "max_tokens": 4}
    response = await sglang.post("/v1/completions", json=body)
    assert_same_shape(response.json(), "completion.json")
    streamed = await sglang.post("/v1/completions", json={**body, "stream": True, **USAGE})
    assert_same_stream_shape(streamed.content, "completion_stream.sse")


@pytest.mark.parametrize("body", [
    {"messages": []},
    {"messages": MESSAGES, "tool_choice": "required"},
    {"messages": MESSAGES, "tools": TOOLS, "tool_choice": {
        "type": "function", "function": {"name": "not_a_tool"}}},
])
async def test_bad_requests_get_sglangs_error(sglang: httpx.AsyncClient,
                                              body: dict[str, Any]) -> None:
    response = await chat(sglang, **body)
    assert response.status_code == 400
    assert_same_shape(response.json(), "error_400.json")
    assert response.json()["type"] == "BadRequestError"


async def test_tool_call_follows_the_schema(sglang: httpx.AsyncClient) -> None:
    message = (await chat(sglang, messages=CALL, tools=TOOLS)).json()["choices"][0]["message"]
    call = message["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "sim", "unit": "celsius"}
    plain = (await chat(sglang, messages=MESSAGES, tools=TOOLS)).json()["choices"][0]
    assert "tool_calls" not in plain["message"] and plain["finish_reason"] == "stop"
    never = (await chat(sglang, messages=CALL, tools=TOOLS, tool_choice="none")).json()
    assert "tool_calls" not in never["choices"][0]["message"]
