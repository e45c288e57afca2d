"""Open-world wire values: nulls where the owners allow them, undeclared fields survive."""

from __future__ import annotations

import json
import re
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


_maybe_unknown = st.one_of(st.just({}), _unknown_keys)
_text = st.one_of(st.none(), st.text(max_size=8))
_usage = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 99), "completion_tokens": st.integers(0, 99), "total_tokens": st.integers(0, 99)},
    optional={"prompt_tokens_details": st.one_of(st.none(), st.fixed_dictionaries(
        {"cached_tokens": st.one_of(st.none(), st.integers(0, 9))}))})
_odd = st.one_of(st.just("not a number"), st.just([1]), st.none(), st.integers())


def _with(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in extra.items() if k not in base}, **base}


@st.composite
def _chunk_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Stream chunks as upstreams send them: declared keys, sometimes undeclared ones at any
    depth, sometimes a declared key with a value of the wrong type."""
    delta = _with({"content": draw(_text), "role": draw(_text)}, draw(_maybe_unknown))
    if draw(st.booleans()):
        delta["tool_calls"] = [_with({"index": 0, "function": {"arguments": "{"}}, draw(_maybe_unknown))]
    choice = _with({"index": 0, "delta": delta, "finish_reason": draw(_text),
                    "logprobs": None, "matched_stop": draw(st.one_of(st.none(), st.integers(0, 9)))},
                   draw(_maybe_unknown))
    body = _with({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": draw(st.lists(st.just(choice), max_size=2))}, draw(_maybe_unknown))
    usage = draw(st.one_of(st.none(), _usage))
    if usage is not None or draw(st.booleans()):
        body["usage"] = _with(usage, draw(_maybe_unknown)) if usage is not None else None
    if draw(st.integers(0, 5)) == 0:  # a declared key the struct cannot take
        body[draw(st.sampled_from(["created", "choices", "usage", "id"]))] = draw(_odd)
    return body


@given(body=_chunk_bodies())
def test_decoding_straight_into_the_struct_gives_what_the_walk_gives(body: dict[str, Any]) -> None:
    text = json.dumps(body)
    try:
        walked = open_wire.convert(json.loads(text), ChatChunk)
    except msgspec.ValidationError as exc:
        with pytest.raises(msgspec.ValidationError, match=re.escape(str(exc))):
            open_wire.decode(text, ChatChunk)
        return
    decoded = open_wire.decode(text, ChatChunk)
    assert decoded == walked
    assert open_wire.encode(decoded) == open_wire.encode(walked)
    assert json.loads(open_wire.encode(decoded)) == body


def test_a_chunk_of_declared_keys_is_not_walked_and_one_with_more_is(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[type[Any]] = []
    adopt = open_wire.adopt

    def noting(obj: Any, raw: dict[str, Any]) -> bool:
        walked.append(type(obj))
        return adopt(obj, raw)

    monkeypatch.setattr(open_wire, "adopt", noting)
    declared = json.dumps(SGLANG_TOOL_DELTA)
    assert json.loads(open_wire.encode(open_wire.decode(declared, ChatChunk))) == SGLANG_TOOL_DELTA
    assert walked == []
    vendor = {**SGLANG_TOOL_DELTA, "choices": [{**SGLANG_TOOL_DELTA["choices"][0], "vendor_score": 0.5}]}  # type: ignore[index]
    assert json.loads(open_wire.encode(open_wire.decode(json.dumps(vendor), ChatChunk))) == vendor
    assert walked[0] is ChatChunk  # the walk, from the top
