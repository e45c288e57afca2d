"""Anthropic translation of structured outputs, reasoning effort, sampling, metadata and
signed thinking blocks (issue 14 points 8-11), as pure functions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from backends.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    AnthropicMessage,
    StreamEvent,
    StreamTranslator,
    to_anthropic_body,
    to_chat_response,
)
from backends.errors import InvalidRequestError, UnsupportedError
from backends.types import ChatChunk, ChatRequest
from gateway.wire import parse_chat

ASK = {"role": "user", "content": "Weather in Paris?"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


def chat(messages: list[dict[str, Any]] | None = None, **fields: Any) -> ChatRequest:
    """Parsed as the gateway parses a client's body, so extras land where they really do."""
    body = {"model": "claude", "messages": messages or [ASK], **fields}
    request = parse_chat(msgspec.json.encode(body))
    return msgspec.structs.replace(request, upstream_model="claude-up")


def test_json_schema_response_format_becomes_output_config_format() -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "Weather", "schema": SCHEMA, "strict": True}}
    body = to_anthropic_body(chat(response_format=rf))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    # an Anthropic-only output_config field sent as an extra joins ours
    both = to_anthropic_body(chat(response_format=rf, output_config={"effort": "low"}))
    assert both["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "low"}
    assert "output_config" not in to_anthropic_body(chat(response_format={"type": "text"}))


def test_json_object_mode_has_no_anthropic_counterpart() -> None:
    with pytest.raises(UnsupportedError) as info:
        to_anthropic_body(chat(response_format={"type": "json_object"}))
    assert info.value.param == "response_format"


@pytest.mark.parametrize(("effort", "limit", "budget", "max_tokens"), [
    ("minimal", None, 1024, 1024 + DEFAULT_MAX_TOKENS),
    ("medium", None, 8192, 8192 + DEFAULT_MAX_TOKENS),
    ("high", 20_000, 16384, 20_000),
    ("max", 3000, 2999, 3000),  # the budget counts toward the limit, as OpenAI's reasoning does
])
def test_reasoning_effort_becomes_a_thinking_budget(
    effort: str, limit: int | None, budget: int, max_tokens: int
) -> None:
    fields: dict[str, Any] = {"reasoning_effort": effort}
    if limit is not None:
        fields["max_completion_tokens"] = limit
    body = to_anthropic_body(chat(**fields))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == max_tokens and "reasoning_effort" not in body


def test_reasoning_effort_edges() -> None:
    assert to_anthropic_body(chat(reasoning_effort="none"))["thinking"] == {"type": "disabled"}
    with pytest.raises(InvalidRequestError, match="above 1024"):
        to_anthropic_body(chat(reasoning_effort="low", max_tokens=800))
    with pytest.raises(UnsupportedError) as info:
        to_anthropic_body(chat(reasoning_effort="low", temperature=0.2))
    assert info.value.param == "temperature"


def test_temperature_and_top_p_are_never_sent_together() -> None:
    assert "top_p" not in to_anthropic_body(chat(temperature=0.2, top_p=0.5))
    assert to_anthropic_body(chat(top_p=0.5))["top_p"] == 0.5
    with pytest.raises(UnsupportedError):
        to_anthropic_body(chat(temperature=1.4))


def test_metadata_never_overwrites_the_user_id() -> None:
    body = to_anthropic_body(chat(user="u-1", metadata={"user_id": "spoofed", "team": "a"}))
    assert body["metadata"] == {"user_id": "u-1"}
    body = to_anthropic_body(chat(user="u-1", safety_identifier="hashed-7"))
    assert body["metadata"] == {"user_id": "hashed-7"} and "safety_identifier" not in body
    assert "metadata" not in to_anthropic_body(chat(metadata={"team": "a"}))


def test_service_tier_translates_and_other_openai_params_never_pass_raw() -> None:
    body = to_anthropic_body(chat(service_tier="default", store=True, prompt_cache_key="k", top_k=3))
    assert body["service_tier"] == "standard_only" and body["top_k"] == 3
    assert "store" not in body and "prompt_cache_key" not in body


SIGNED = {"type": "thinking", "thinking": "Paris is in France.", "signature": "c2lnbmVk"}
REDACTED = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
CALL = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def test_thinking_blocks_go_back_first_in_their_assistant_turn() -> None:
    messages = [ASK,
                {"role": "assistant", "content": "Checking.", "tool_calls": [CALL],
                 "reasoning_content": "Paris is in France.", "thinking_blocks": [SIGNED, REDACTED]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}]
    turn = to_anthropic_body(chat(messages))["messages"][1]
    assert turn["role"] == "assistant"
    assert [b["type"] for b in turn["content"]] == ["thinking", "redacted_thinking", "text", "tool_use"]
    assert turn["content"][:2] == [SIGNED, REDACTED]


def test_reasoning_content_with_a_signature_is_a_thinking_block_and_without_one_is_not() -> None:
    signed = {"role": "assistant", "content": None, "tool_calls": [CALL],
              "reasoning_content": "Paris is in France.", "signature": "c2lnbmVk"}
    result = {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    turn = to_anthropic_body(chat([ASK, signed, result]))["messages"][1]
    assert turn["content"][0] == SIGNED
    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    turn = to_anthropic_body(chat([ASK, unsigned, result]))["messages"][1]
    assert [b["type"] for b in turn["content"]] == ["tool_use"]


def test_malformed_thinking_blocks_are_refused() -> None:
    bad = {"role": "assistant", "content": "x", "thinking_blocks": [{"type": "text", "text": "x"}]}
    with pytest.raises(InvalidRequestError) as info:
        to_anthropic_body(chat([ASK, bad]))
    assert info.value.param == "messages[1].thinking_blocks[0]"


def test_thinking_comes_back_as_reasoning_content_and_signed_blocks() -> None:
    message = msgspec.convert({
        "id": "msg_1", "model": "claude-up", "stop_reason": "tool_use",
        "content": [SIGNED, REDACTED, {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                       "input": {"city": "Paris"}}],
        "usage": {"input_tokens": 5, "output_tokens": 9}}, AnthropicMessage)
    reply = to_chat_response(message, created=1).choices[0].message
    assert reply.reasoning_content == "Paris is in France."
    assert reply.thinking_blocks == [SIGNED, REDACTED]
    assert reply.tool_calls and reply.tool_calls[0].name == "get_weather"


def feed(events: list[dict[str, Any]]) -> list[ChatChunk]:
    translator = StreamTranslator(created=1, model="claude-up")
    return [c for e in events for c in translator.feed(msgspec.convert(e, StreamEvent))]


def test_streamed_thinking_arrives_as_reasoning_deltas_then_the_whole_signed_block() -> None:
    chunks = feed([
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-up", "usage": {}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Paris is"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " in France."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmVk"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": REDACTED},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Sunny."}},
    ])
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.reasoning_content for d in deltas if isinstance(d.reasoning_content, str)) == \
        "Paris is in France."
    blocks = [b for d in deltas if isinstance(d.thinking_blocks, list) for b in d.thinking_blocks]
    assert blocks == [SIGNED, REDACTED]
    assert deltas[-1].content == "Sunny."
