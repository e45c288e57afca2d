from __future__ import annotations

import msgspec
import pytest

from backends.errors import InvalidJSONError, InvalidRequestError
from backends.openai_compat import encode_body
from gateway.wire import parse_chat, parse_text


def chat(**fields: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.encode(body)


def test_extras_pass_through_and_model_is_replaced() -> None:
    request = parse_chat(chat(top_k=5, regex="a+", temperature=0.5, n=2, seed=7))
    assert request.extra == {"top_k": 5, "regex": "a+"}
    request = msgspec.structs.replace(request, upstream_model="upstream-m")
    sent = msgspec.json.decode(encode_body(request, stream=True))
    assert sent["model"] == "upstream-m"
    assert sent["top_k"] == 5 and sent["regex"] == "a+" and sent["n"] == 2 and sent["seed"] == 7
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "max_tokens" not in sent, "fields the client did not send are not sent upstream"


def test_tools_and_tool_messages_round_trip() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    tools = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]
    body = msgspec.json.encode({"model": "m", "messages": messages, "tools": tools,
                                "response_format": {"type": "json_object"}, "logprobs": True,
                                "stop": ["\n"]})
    sent = msgspec.json.decode(encode_body(parse_chat(body), stream=False))
    assert sent["messages"] == messages
    assert sent["tools"] == tools and sent["response_format"] == {"type": "json_object"}
    assert sent["logprobs"] is True and sent["stop"] == ["\n"] and "stream_options" not in sent


@pytest.mark.parametrize(("body", "param"), [
    (chat(messages=[{"role": "bot", "content": "hi"}]), "messages[0].role"),
    (chat(messages=[]), "messages"),
    (chat(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    (chat(max_tokens=10**30), "max_tokens"),
    (chat(temperature=9), "temperature"),
    (chat(n=0), "n"),
    (chat(stream="yes"), "stream"),
    (msgspec.json.encode({"messages": [{"role": "user", "content": "x"}]}), None),
])
def test_schema_errors_name_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(body)
    assert info.value.param == param
    assert info.value.status_code == 400


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"text"', b'{"model": "a\xff"}', b"\xff\xfe"])
def test_not_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(InvalidJSONError):
        parse_chat(body)


def test_deeply_nested_json_is_a_clean_400() -> None:
    deep = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises((InvalidJSONError, InvalidRequestError)):
        parse_chat(deep)


def test_text_completion_prompt_shapes() -> None:
    for prompt in ("hi", ["a", "b"], [1, 2, 3], [[1], [2]]):
        assert parse_text(msgspec.json.encode({"model": "m", "prompt": prompt})).params.prompt == prompt
    with pytest.raises(InvalidRequestError) as info:
        parse_text(msgspec.json.encode({"model": "m", "prompt": {"a": 1}}))
    assert info.value.param == "prompt"
