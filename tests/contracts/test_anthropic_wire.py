"""The Anthropic side checked against the official ``anthropic`` SDK's own definitions.

(a) Every request body the gateway sends to the Anthropic simulator in these tests validates
    against ``anthropic.types.message_create_params.MessageCreateParams{Non,}Streaming``,
    strictly where the SDK's types are closed (its TypedDicts), plus the three sampling fields
    the SDK's 1.x signatures dropped but the API still takes (``SAMPLING``).
(b) Every message and stream event the simulator emits validates against ``anthropic.types``.
(c) The official SDK calls the simulator directly and works.
(d) Issue 14 points 8-11 end to end: the ``openai`` SDK through the gateway to Claude.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from typing_extensions import TypedDict

from backends.sse import SSEDecoder
from gateway.local_stack import (
    ANTHROPIC_MODEL,
    AUTO_ROUTE,
    DEMO_KEY,
    LOCAL_MODEL,
    UPSTREAM_ANTHROPIC_KEY,
)
from tests.conftest import ThreadedStack

LENIENT_MODEL = "claude-lenient"
"""The same Claude deployment with ``drop_unsupported_params: true``."""


class SAMPLING(TypedDict, total=False):
    """Fields the SDK's signatures dropped in 1.0 and the Messages API still accepts."""

    temperature: float
    top_p: float
    top_k: int


@pydantic.with_config(pydantic.ConfigDict(extra="forbid"))
class StrictNonStreaming(MessageCreateParamsNonStreaming, SAMPLING, total=False):
    """The SDK's request type, closed: an unknown top-level (or nested TypedDict) key fails."""


@pydantic.with_config(pydantic.ConfigDict(extra="forbid"))
class StrictStreaming(MessageCreateParamsStreaming, SAMPLING, total=False):
    """The streaming variant, closed the same way."""


NON_STREAMING = pydantic.TypeAdapter(StrictNonStreaming)
STREAMING = pydantic.TypeAdapter(StrictStreaming)
EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


def _exhaust(value: Any) -> Any:
    """Pydantic validates the SDK's ``Iterable[...]`` fields lazily: iterate them to check."""
    if isinstance(value, dict):
        return {k: _exhaust(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ValidatorIterator":
        return [_exhaust(v) for v in value]
    return value


def check_request_body(body: dict[str, Any]) -> None:
    """Raise ``pydantic.ValidationError`` unless ``body`` is a valid Messages API request."""
    sent = {k: v for k, v in body.items() if not k.startswith("sim_")}  # the sim's test hooks
    adapter = STREAMING if sent.get("stream") is True else NON_STREAMING
    _exhaust(adapter.validate_python(sent))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    def add_lenient(document: dict[str, Any]) -> None:
        claude = document["models"][ANTHROPIC_MODEL]
        document["models"][LENIENT_MODEL] = {**claude, "drop_unsupported_params": True}

    threaded = ThreadedStack(tmp_path_factory.mktemp("anthropic-wire"), edit_policy=add_lenient)
    yield threaded
    threaded.close()


@pytest.fixture
def client(stack: ThreadedStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)


@pytest.fixture
def sent(stack: ThreadedStack) -> Iterator[list[dict[str, Any]]]:
    """The bodies the Anthropic sim receives during the test; each checked against (a)."""
    url = stack.stack.anthropic.url
    before = len(stack.sim_requests(url))
    bodies: list[dict[str, Any]] = []
    yield bodies
    recent = stack.sim_requests(url)[before:]
    assert len(recent) < 100, "the sim keeps the last 100: this test sent too many to check"
    for request in recent:
        check_request_body(request["body"])


def received(stack: ThreadedStack, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every body the sim received so far in this test (also fills ``sent``)."""
    sent[:] = [r["body"] for r in stack.sim_requests(stack.stack.anthropic.url)]
    return sent


# --- (a) the validator itself refuses what the API refuses ---------------------------------

BASE: dict[str, Any] = {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("bad", [
    {**BASE, "reasoning_effort": "low"},
    {**BASE, "metadata": {"user_id": "u", "team": "a"}},
    {**BASE, "output_config": {"format": {"type": "json_schema", "json_schema": {}}}},
    {**BASE, "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]}]},
])
def test_the_request_check_refuses_off_contract_bodies(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        check_request_body(bad)
    check_request_body({**BASE, "temperature": 0.5, "stream": True})


# --- (b) and (c): the simulator against the SDK ------------------------------------------


def _raw(stack: ThreadedStack, body: dict[str, Any]) -> httpx.Response:
    headers = {"x-api-key": UPSTREAM_ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    return httpx.post(stack.stack.anthropic.url + "/v1/messages", json=body, headers=headers, timeout=10)


TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
SHAPES: list[dict[str, Any]] = [
    BASE,
    {**BASE, "stop_sequences": ["zzz"], "temperature": 0.3},
    {**BASE, "tools": [TOOL], "tool_choice": {"type": "any"}},
    {**BASE, "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {**BASE, "output_config": {"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}},
]


@pytest.mark.parametrize("body", SHAPES)
def test_sim_output_validates_against_anthropic_types(stack: ThreadedStack, body: dict[str, Any]) -> None:
    response = _raw(stack, body)
    assert response.status_code == 200, response.text
    message = Message.model_validate(response.json())
    assert message.usage.output_tokens > 0
    streamed = _raw(stack, {**body, "stream": True})
    # the SDK's stream reader skips ``ping`` events before parsing: they are no
    # RawMessageStreamEvent, and the API sends them all the same
    raw_events = SSEDecoder().feed(streamed.content)
    assert "ping" in [e.event for e in raw_events]
    events = [EVENT.validate_json(e.data) for e in raw_events if e.event != "ping"]
    assert all(e.type == raw.event for e, raw in zip(events, (r for r in raw_events if r.event != "ping"),
                                                         strict=True))
    assert events[0].type == "message_start" and events[-1].type == "message_stop"


def test_official_sdk_against_the_sim(stack: ThreadedStack) -> None:
    client = anthropic.Anthropic(base_url=stack.stack.anthropic.url, api_key=UPSTREAM_ANTHROPIC_KEY,
                                 max_retries=0)
    message = client.messages.create(model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].type == "text" and message.stop_reason == "max_tokens"
    with client.messages.stream(model="claude-x", max_tokens=2048, messages=[{"role": "user", "content": "hi"}],
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and text == final.content[1].text
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature and thinking.thinking
    with pytest.raises(anthropic.BadRequestError, match="cannot both be specified"):
        client.messages.create(model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"temperature": 0.5, "top_p": 0.5})


# --- (d) points 8-11 through the gateway --------------------------------------------------


class Weather(pydantic.BaseModel):
    city: str
    days: int


def test_point_8_structured_outputs_reach_claude(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]]
) -> None:
    completion = client.chat.completions.parse(
        model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "Weather in Paris for 3 days?"}],
        response_format=Weather, max_tokens=200)
    assert completion.choices[0].message.parsed == Weather(city="", days=0)
    body = received(stack, sent)[-1]
    assert body["output_config"]["format"]["type"] == "json_schema"
    assert body["output_config"]["format"]["schema"]["required"] == ["city", "days"]
    assert "response_format" not in body


OPENAI_ONLY_DROPPED: dict[str, Any] = {
    "store": True, "metadata": {"team": "a"}, "seed": 4, "prompt_cache_key": "k", "verbosity": "low",
    "prediction": {"type": "content", "content": "x"}, "service_tier": "auto",
}


def test_point_9_openai_only_params_are_dropped_or_translated(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]]
) -> None:
    completion = client.chat.completions.create(
        model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, user="u-7",
        reasoning_effort="minimal", max_completion_tokens=1100, **OPENAI_ONLY_DROPPED)
    assert completion.choices[0].message.content is not None
    body = received(stack, sent)[-1]
    assert body["metadata"] == {"user_id": "u-7"}, "OpenAI's metadata never overwrites user_id"
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["service_tier"] == "auto"
    assert not {"store", "seed", "prompt_cache_key", "verbosity", "prediction", "reasoning_effort"} & set(body)


def test_point_9_refused_params_name_the_parameter_and_the_kind(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]]
) -> None:
    before = len(received(stack, sent))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4, logit_bias={"50256": -100})
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "logit_bias" and "anthropic" in error["message"]
    assert len(received(stack, sent)) == before, "nothing reached Claude"
    # the same request to the lenient deployment: dropped, answered
    client.chat.completions.create(model=LENIENT_MODEL, messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=4, logit_bias={"50256": -100}, n=2 - 1)
    assert "logit_bias" not in received(stack, sent)[-1]


@pytest.mark.parametrize("tier", ["cheap", "strong"])
def test_point_9_the_auto_route_treats_both_tiers_alike(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]], tier: str
) -> None:
    forced = {"x-switchyard-tier": tier}
    raw = client.chat.completions.with_raw_response.create(
        model=AUTO_ROUTE, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
        extra_headers=forced, **OPENAI_ONLY_DROPPED)
    assert raw.headers["x-switchyard-model"] == (LOCAL_MODEL if tier == "cheap" else ANTHROPIC_MODEL)
    assert raw.parse().choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=AUTO_ROUTE, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4, presence_penalty=0.5, extra_headers=forced)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "presence_penalty"


def test_point_10_temperature_and_top_p_are_never_sent_together(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]]
) -> None:
    client.chat.completions.create(model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=4, temperature=0.4, top_p=0.9)
    body = received(stack, sent)[-1]
    assert body["temperature"] == 0.4 and "top_p" not in body
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4, temperature=1.5)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "temperature"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_point_11_thinking_and_tools_continue_over_two_turns(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]]
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Please use the tool for Paris."}]
    first = client.chat.completions.create(model=ANTHROPIC_MODEL, messages=messages, tools=[WEATHER_TOOL],
                                           reasoning_effort="low", max_completion_tokens=3000)
    reply = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and reply.tool_calls
    kept = reply.model_dump(exclude_none=True)
    assert kept["reasoning_content"] and kept["thinking_blocks"][0]["signature"]
    messages += [kept, {"role": "tool", "tool_call_id": reply.tool_calls[0].id, "content": "sunny, 21C"}]
    second = client.chat.completions.create(model=ANTHROPIC_MODEL, messages=messages, tools=[WEATHER_TOOL],
                                            reasoning_effort="low", max_completion_tokens=3000)
    assert second.choices[0].message.content
    turn = received(stack, sent)[-1]["messages"][1]
    assert turn["role"] == "assistant" and turn["content"][0] == kept["thinking_blocks"][0]

    # without the block, Claude (and the sim) refuse the continuation: the gateway relays a 400
    bare = {k: v for k, v in kept.items() if k not in ("thinking_blocks", "reasoning_content")}
    with pytest.raises(openai.BadRequestError, match="thinking"):
        client.chat.completions.create(model=ANTHROPIC_MODEL, messages=[messages[0], bare, messages[2]],
                                       tools=[WEATHER_TOOL], reasoning_effort="low", max_completion_tokens=3000)


def test_point_11_streamed_thinking_carries_the_signed_block(
    client: openai.OpenAI, stack: ThreadedStack, sent: list[dict[str, Any]]
) -> None:
    chunks = list(client.chat.completions.create(
        model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "Please use the tool for Paris."}],
        tools=[WEATHER_TOOL], reasoning_effort="low", max_completion_tokens=3000, stream=True))
    deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    blocks = [b for d in deltas for b in d.get("thinking_blocks") or []]
    assert reasoning and len(blocks) == 1
    assert blocks[0]["type"] == "thinking" and blocks[0]["thinking"] == reasoning and blocks[0]["signature"]
    assert received(stack, sent)[-1]["stream"] is True


def test_the_anthropic_wire_file_is_checked_here() -> None:
    # guard against the module being collected without its checks: the validator is strict
    assert Path(__file__).name == "test_anthropic_wire.py"
    with pytest.raises(pydantic.ValidationError):
        check_request_body({**BASE, "n": 2})
    assert msgspec.json.encode(BASE)
