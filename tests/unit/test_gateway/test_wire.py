from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import open_wire
from backends.errors import InvalidJSONError, InvalidRequestError, SwitchyardError
from backends.openai_compat import encode_body
from backends.types import ChatParams
from gateway import wire
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


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4))
_undeclared = st.dictionaries(st.sampled_from(["vendor", "cache_hint", "x_trace"]), _leaf, max_size=2)
_content = st.one_of(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6), st.none(),
                     st.just([{"type": "text", "text": "hi"}]), st.integers())


@st.composite
def _chat_bodies(draw: st.DrawFn) -> bytes:
    """Chat requests as clients send them: declared fields, sometimes undeclared ones (top level,
    in a message, in a tool), content parts, and values the schema refuses."""
    messages = [{"role": draw(st.sampled_from(["user", "user", "assistant", "system", "robot"])),
                 "content": draw(_content), **draw(st.one_of(st.just({}), _undeclared))}
                for _ in range(draw(st.sampled_from([1, 1, 2, 0])))]
    body: dict[str, Any] = {"model": draw(st.sampled_from(["m", "m", 7])), "messages": messages,
                            **draw(st.one_of(st.just({}), _undeclared))}
    optional = {"temperature": st.sampled_from([0.5, 1, 1.5, 5, "hot"]), "max_tokens": st.sampled_from([16, 0, None]),
                "stream": st.booleans(), "seed": st.sampled_from([1, 2**70]),
                "tools": st.just([{"type": "function", "function": {"name": "f", "parameters": {}}}])}
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    if "tools" in body and draw(st.booleans()):
        body["tools"][0]["function"]["vendor"] = 1
    text = json.dumps(body)
    return (text + draw(st.sampled_from(["", "", "", " ", "}"]))).encode()


def _walked(body: bytes) -> tuple[Any, ...]:
    try:
        params, extra = wire._convert(wire.decode_object(body), ChatParams)
    except SwitchyardError as exc:
        return type(exc), str(exc)
    return open_wire.encode(params), extra, params


@settings(max_examples=300)
@given(body=_chat_bodies())
def test_a_request_decoded_straight_into_its_struct_is_what_the_walk_makes(body: bytes) -> None:
    expected = _walked(body)
    try:
        params, extra = wire._parse(body, ChatParams)
    except SwitchyardError as exc:
        assert (type(exc), str(exc)) == expected
        return
    assert (open_wire.encode(params), extra, params) == expected


def test_a_request_of_declared_keys_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*_: Any) -> Any:
        raise AssertionError("walked")

    monkeypatch.setattr(open_wire, "adopt", walk)
    call = parse_chat(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}')
    assert (call.params.max_tokens, call.extra) == (5, {})
    with pytest.raises(AssertionError, match="walked"):
        parse_chat(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"vendor":1}')
