"""Open-world wire values: nulls where the owners allow them, undeclared fields survive."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import open_wire
from backends.types import ChatChunk, ChatResponse, TextResponse
from gateway.wire import parse_chat

# A chunk as SGLang 0.5.23 dumps it with pydantic: explicit nulls, fields we do not model.
SGLANG_TOOL_DELTA = {
    "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
    "choices": [{"index": 0, "delta": {
        "role": None, "content": None, "reasoning_content": None,
        "tool_calls": [{"id": None, "index": 0, "type": None,
                        "function": {"name": None, "arguments": "{\"city\": "}}]},
        "logprobs": None, "finish_reason": None, "matched_stop": None}],
    "usage": None,
}


def test_sglang_nulls_decode_and_come_back_unchanged() -> None:
    chunk = open_wire.decode(json.dumps(SGLANG_TOOL_DELTA), ChatChunk)
    assert chunk.choices[0].delta.role is None
    assert chunk.choices[0].delta.tool_calls[0].id is None  # type: ignore[index]
    assert json.loads(open_wire.encode(chunk)) == SGLANG_TOOL_DELTA


def test_a_declared_change_wins_and_undeclared_fields_stay() -> None:
    chunk = open_wire.decode(json.dumps({**SGLANG_TOOL_DELTA, "vendor": {"x": 1}}), ChatChunk)
    chunk.model = "public"
    chunk.usage = msgspec.UNSET  # removed by the gateway: must not come back from the original
    out = json.loads(open_wire.encode(chunk))
    assert out["model"] == "public" and "usage" not in out
    assert out["vendor"] == {"x": 1} and out["choices"][0]["matched_stop"] is None


def test_spec_fields_the_gateway_does_not_model_survive_a_response() -> None:
    body: dict[str, Any] = {
        "id": "r", "object": "chat.completion", "created": 1, "model": "m", "service_tier": "default",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": {"content": [], "refusal": None},
                     "message": {"role": "assistant", "content": None, "refusal": None,
                                 "annotations": [{"type": "url_citation", "url_citation": {"url": "u"}}],
                                 "audio": {"id": "a", "data": "AAA", "expires_at": 1, "transcript": "t"},
                                 "function_call": {"name": "f", "arguments": "{}"},
                                 "tool_calls": [{"id": "t1", "type": "custom",
                                                 "custom": {"name": "grep", "input": "x"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                  "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0},
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}},
    }
    answer = open_wire.decode(json.dumps(body), ChatResponse)
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.type, call.name, call.arguments) == ("custom", "grep", "x")
    assert json.loads(open_wire.encode(answer)) == body


def test_replace_keeps_what_the_struct_does_not_declare() -> None:
    text = open_wire.decode(b'{"id":"t","created":1,"model":"m","choices":[],"extra_field":7}', TextResponse)
    assert json.loads(open_wire.encode(open_wire.replace(text, model="p")))["extra_field"] == 7


def test_request_features_of_the_spec_pass_nested_and_top_level() -> None:
    body = {"model": "m", "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_hint": 1}]},
                         {"role": "assistant", "content": None, "audio": {"id": "aud_1"},
                          "tool_calls": [{"id": "t", "type": "custom", "custom": {"name": "g", "input": "q"}}]},
                         {"role": "tool", "tool_call_id": "t", "content": "done"}],
            "tools": [{"type": "custom", "custom": {"name": "g", "format": {"type": "text"}}}]}
    call = parse_chat(json.dumps(body).encode())
    assert call.extra == {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    sent = json.loads(open_wire.encode(call.params))
    assert sent["messages"] == body["messages"] and sent["tools"] == body["tools"]


_json = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=8)
_unknown_keys = st.dictionaries(st.text(min_size=1, max_size=6).filter(
    lambda k: k not in ChatChunk.__struct_fields__), _json, max_size=3)


@given(top=_unknown_keys, choice=_unknown_keys, delta=_unknown_keys)
def test_any_undeclared_field_at_any_depth_round_trips(top: dict[str, Any], choice: dict[str, Any],
                                                         delta: dict[str, Any]) -> None:
    choice = {k: v for k, v in choice.items() if k not in ("index", "delta", "finish_reason", "logprobs")}
    delta = {k: v for k, v in delta.items() if k not in
             ("role", "content", "tool_calls", "refusal", "reasoning_content", "thinking_blocks")}
    body = {**top, "id": "x", "created": 1, "model": "m", "object": "chat.completion.chunk",
            "choices": [{**choice, "index": 0, "finish_reason": None, "delta": {**delta, "content": "hi"}}]}
    assert json.loads(open_wire.encode(open_wire.decode(json.dumps(body), ChatChunk))) == body


@pytest.mark.parametrize("tools", [[{"type": "function"}], [{"type": "custom"}]])
def test_a_tool_without_its_definition_is_refused(tools: list[dict[str, Any]]) -> None:
    from backends.errors import InvalidRequestError
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    with pytest.raises(InvalidRequestError, match=r"tools\[0\]"):
        parse_chat(json.dumps(body).encode())
