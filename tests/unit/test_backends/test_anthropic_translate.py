"""OpenAI ⇄ Anthropic translation: request rules, response mapping, stream events."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.anthropic_translate import (
    CACHE_MIN_TOKENS,
    CHARS_PER_TOKEN,
    DEFAULT_MAX_TOKENS,
    LEADING_USER_TEXT,
    AnthropicMessage,
    StreamEvent,
    StreamTranslator,
    finish_reason,
    to_anthropic_body,
    to_chat_response,
    translate_messages,
)
from backends.errors import InvalidRequestError, UnsupportedError
from backends.types import (
    ChatChunk,
    ChatParams,
    ChatRequest,
    FunctionCall,
    Message,
    PromptTokensDetails,
    Role,
    ToolCall,
)


def chat(
    messages: list[dict[str, Any]], extra: dict[str, Any] | None = None, **params: Any
) -> ChatRequest:
    p = msgspec.convert({"model": "claude", "messages": messages, **params}, ChatParams)
    return ChatRequest(params=p, extra=extra or {}, upstream_model="claude-upstream")


def body(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return to_anthropic_body(chat(messages, **params))


def call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# --- request ------------------------------------------------------------------------------


def test_system_and_developer_messages_become_top_level_system() -> None:
    out = body(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        ]
    )
    assert out["system"] == "Be brief.\n\nUse French."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_consecutive_same_role_turns_are_merged() -> None:
    out = body(
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
            {"role": "user", "content": "e"},
        ]
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert [b["text"] for b in out["messages"][0]["content"]] == ["a", "b"]
    assert [b["text"] for b in out["messages"][1]["content"]] == ["c", "d"]


def test_conversation_opening_with_assistant_gets_a_leading_user_turn() -> None:
    out = body([{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "hi"}])
    assert out["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": LEADING_USER_TEXT}],
    }
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


def test_empty_text_is_dropped() -> None:
    out = body(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": ""},
            {
                "role": "user",
                "content": [{"type": "text", "text": ""}, {"type": "text", "text": "r"}],
            },
        ]
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "r"}]}
    ]


def test_tool_calls_and_results_round_trip_into_blocks() -> None:
    out = body(
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    call("call_1", "get_weather", '{"city": "Paris"}'),
                    call("call_2", "get_time", ""),
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "noon"}],
            },
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER],
    )
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "noon"}],
            },
            {"type": "text", "text": "thanks"},
        ],
    }
    assert out["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather in a city",
        }
    ]


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    out = body(
        [{"role": "user", "content": "x"}],
        tools=[{"type": "function", "function": {"name": "now"}}],
    )
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_bad_tool_arguments_name_the_field(arguments: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        body(
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [call("c", "f", arguments)]},
            ]
        )
    assert info.value.param == "messages[1].tool_calls[0]"


def test_images_become_base64_or_url_sources() -> None:
    out = body(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ],
            }
        ]
    )
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }


def test_non_base64_data_url_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as info:
        body(
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
                }
            ]
        )
    assert info.value.param == "messages[0].content[0]"


def test_audio_parts_are_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        body(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                    ],
                }
            ]
        )


def test_parameters_map_openai_only_ones_are_left_out_and_extras_pass() -> None:
    request = chat(
        [{"role": "user", "content": "x"}],
        extra={"top_k": 5, "repetition_penalty": 1.1, "sim_reply": "hi", "store": True,
               "metadata": {"team": "a"}},
        max_tokens=100,
        temperature=0.3,
        top_p=0.9,
        stop="END",
        user="u-42",
        seed=7,
        response_format={"type": "text"},
    )
    out = to_anthropic_body(request, stream=True)
    assert out == {
        "model": "claude-upstream",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        "temperature": 0.3,  # top_p is left out: current Claude models refuse the pair
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},  # OpenAI's metadata never overwrites it
        "top_k": 5,
        "repetition_penalty": 1.1,
        "sim_reply": "hi",
        "stream": True,
    }


def test_max_tokens_defaults_and_max_completion_tokens_wins() -> None:
    assert body([{"role": "user", "content": "x"}])["max_tokens"] == DEFAULT_MAX_TOKENS
    assert (
        body([{"role": "user", "content": "x"}], max_tokens=None)["max_tokens"]
        == DEFAULT_MAX_TOKENS
    )
    out = body([{"role": "user", "content": "x"}], max_tokens=10, max_completion_tokens=20)
    assert out["max_tokens"] == 20


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    assert (
        body([{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice=choice)["tool_choice"]
        == expected
    )


def test_parallel_tool_calls_false_disables_parallel_use() -> None:
    out = body([{"role": "user", "content": "x"}], tools=[WEATHER], parallel_tool_calls=False)
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("params", "field"), [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")])
def test_unsupported_fields_are_named(params: dict[str, Any], field: str) -> None:
    with pytest.raises(UnsupportedError) as info:
        body([{"role": "user", "content": "x"}], **params)
    assert info.value.param == field
    assert field in info.value.message


def test_prompt_caching_marks_a_long_prefix_only() -> None:
    short = to_anthropic_body(
        chat(
            [{"role": "system", "content": "short"}, {"role": "user", "content": "x"}],
            tools=[WEATHER],
        ),
        prompt_caching=True,
    )
    assert short["system"] == "short"
    assert "cache_control" not in short["tools"][-1]

    long_system = "policy " * (CACHE_MIN_TOKENS * CHARS_PER_TOKEN // 6)
    out = to_anthropic_body(
        chat(
            [{"role": "system", "content": long_system}, {"role": "user", "content": "x"}],
            tools=[WEATHER, WEATHER],
        ),
        prompt_caching=True,
    )
    assert out["system"] == [
        {"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}
    ]
    assert out["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in out["tools"][0]


def test_prompt_caching_off_never_marks() -> None:
    long_system = "x" * (CACHE_MIN_TOKENS * CHARS_PER_TOKEN * 2)
    out = body([{"role": "system", "content": long_system}, {"role": "user", "content": "x"}])
    assert out["system"] == long_system


# --- response -----------------------------------------------------------------------------


def message(**fields: Any) -> AnthropicMessage:
    base = {
        "id": "msg_01",
        "model": "claude-3-5",
        "content": [],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    return msgspec.convert({**base, **fields}, AnthropicMessage)


def test_text_response() -> None:
    out = to_chat_response(
        message(content=[{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]), 123
    )
    assert (out.id, out.created, out.model) == ("msg_01", 123, "claude-3-5")
    assert out.choices[0].message.content == "Hello"
    assert out.choices[0].finish_reason == "stop"


def test_tool_use_response() -> None:
    out = to_chat_response(
        message(
            stop_reason="tool_use",
            content=[
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        ),
        0,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls == [
        ToolCall(
            id="toolu_1", function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}')
        )
    ]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, None),
    ],
)
def test_stop_reasons(stop: str | None, expected: str | None) -> None:
    assert finish_reason(stop) == expected


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    out = to_chat_response(
        message(
            usage={
                "input_tokens": 10,
                "output_tokens": 7,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 200,
            }
        ),
        0,
    )
    assert out.usage is not None and not isinstance(out.usage, msgspec.UnsetType)
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (
        1210,
        7,
        1217,
    )
    assert out.usage.cached_tokens == 1000
    details = out.usage.prompt_tokens_details
    assert isinstance(details, PromptTokensDetails) and details.cache_write_tokens == 200


# --- stream -------------------------------------------------------------------------------

RECORDED_STREAM: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_s",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-3-5",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 25,
                "output_tokens": 1,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 0,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " check."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42},
    },
    {"type": "message_stop"},
]


def run_stream(events: list[dict[str, Any]]) -> tuple[list[ChatChunk], StreamTranslator]:
    translator = StreamTranslator(created=7, model="fallback")
    chunks: list[ChatChunk] = []
    for event in events:
        chunks += translator.feed(msgspec.convert(event, StreamEvent))
    return chunks, translator


def test_stream_events_become_chunks() -> None:
    chunks, translator = run_stream(RECORDED_STREAM)
    assert translator.finished
    wire = [msgspec.to_builtins(c) for c in chunks]
    assert all(
        c["id"] == "msg_s" and c["model"] == "claude-3-5" and c["created"] == 7 for c in wire
    )
    deltas = [c["choices"][0]["delta"] for c in wire]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1:3] == [{"content": "Let me"}, {"content": " check."}]
    assert deltas[3] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert deltas[4:6] == [
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]
    assert wire[-1]["choices"][0]["finish_reason"] == "tool_calls" and deltas[-1] == {}
    usage = msgspec.to_builtins(translator.usage_chunk())
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 125,
        "completion_tokens": 42,
        "total_tokens": 167,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
    }


def test_second_tool_block_gets_the_next_tool_index() -> None:
    events = RECORDED_STREAM[:1] + [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "a", "name": "f"},
        },
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "b", "name": "g"},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
    ]
    chunks, _ = run_stream(events)
    indexes = [tc.index for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert indexes == [0, 1, 1]


def test_message_delta_usage_replaces_earlier_counts() -> None:
    events = RECORDED_STREAM[:1] + [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9, "input_tokens": 30},
        },
        {"type": "message_stop"},
    ]
    _, translator = run_stream(events)
    usage = translator.usage_chunk().usage
    assert usage is not None and not isinstance(usage, msgspec.UnsetType)
    assert (usage.prompt_tokens, usage.completion_tokens) == (130, 9)


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
texts = st.text(max_size=12)
ids = st.text("abcdefghij0123456789_", min_size=1, max_size=8)


@st.composite
def tool_calls(
    draw: st.DrawFn, arguments: st.SearchStrategy[dict[str, Any]] = json_objects
) -> list[ToolCall]:
    args = draw(st.lists(arguments, max_size=3))
    return [
        ToolCall(
            id=f"call_{i}_{draw(ids)}",
            function=FunctionCall(name=draw(ids), arguments=msgspec.json.encode(a).decode()),
        )
        for i, a in enumerate(args)
    ]


@st.composite
def messages(draw: st.DrawFn) -> Message:
    role: Role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))
    if role == "assistant":
        calls = draw(tool_calls(st.dictionaries(ids, st.integers(), max_size=2)))
        return Message(
            role="assistant",
            content=draw(st.none() | st.just(msgspec.UNSET) | texts),
            tool_calls=calls or msgspec.UNSET,
        )
    if role == "tool":
        return Message(role="tool", content=draw(texts), tool_call_id=draw(ids))
    return Message(role=role, content=draw(texts))


@settings(max_examples=300)
@given(st.lists(messages(), max_size=12))
def test_any_message_list_translates_to_alternating_turns_starting_with_user(
    msgs: list[Message],
) -> None:
    system, turns = translate_messages(msgs)
    roles = [t["role"] for t in turns]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert not turns or roles[0] == "user"
    for turn in turns:
        blocks = turn["content"]
        assert blocks, "no turn is empty"
        assert all(b.get("text", "x") for b in blocks), "no empty text block"
        kinds = [b["type"] == "tool_result" for b in blocks]
        assert kinds == sorted(kinds, reverse=True), "tool results open their turn"
    # nothing is lost: every non-empty text arrives, in order
    sent = [m.text() for m in msgs if m.role not in ("system", "developer", "tool") and m.text()]
    got = [b["text"] for t in turns for b in t["content"] if b["type"] == "text"]
    opening = [m.role for m in msgs if m.role not in ("system", "developer")
               and (m.role == "tool" or m.text() or m.tool_calls)]
    if opening[:1] == ["assistant"]:  # the translation prepended a user turn
        assert got[0] == LEADING_USER_TEXT
        got = got[1:]
    assert got == sent
    assert system == "\n\n".join(
        m.text() for m in msgs if m.role in ("system", "developer") and m.text()
    )


@settings(max_examples=200)
@given(texts, tool_calls())
def test_assistant_turn_survives_a_round_trip_as_a_response(
    text: str, calls: list[ToolCall]
) -> None:
    original = Message(role="assistant", content=text, tool_calls=calls or msgspec.UNSET)
    _, turns = translate_messages([Message(role="user", content="q"), original])
    blocks = turns[1]["content"] if len(turns) > 1 else []
    reply = msgspec.convert(
        {"id": "msg", "content": blocks, "stop_reason": "end_turn"}, AnthropicMessage
    )
    back = to_chat_response(reply, 0).choices[0].message
    assert (back.content or "") == text
    got = back.tool_calls if isinstance(back.tool_calls, list) else []
    assert [(c.id, c.function.name) for c in got] == [(c.id, c.function.name) for c in calls]
    assert [msgspec.json.decode(c.function.arguments) for c in got] == [
        msgspec.json.decode(c.function.arguments) for c in calls
    ]
