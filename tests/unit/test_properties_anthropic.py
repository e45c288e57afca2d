"""Properties of the OpenAI ⇄ Anthropic translation (``backends/anthropic_translate.py``).

``tests/unit/test_backends/test_anthropic_translate.py`` checks recorded streams and that any
message list becomes alternating turns with its text in order. These add:

* the stream translator fed any valid Anthropic event sequence (text, tool use and thinking
  blocks, pings anywhere, usage in ``message_start`` and ``message_delta``, any stop reason),
  directly and through the SSE decoder under any chunking, as the backend feeds it: the text,
  the tool calls, the finish reason and the usage all come out consistent with what was sent;
* request translation of structured content: every tool call, tool result and image survives,
  in order, with its id;
* any set of OpenAI parameters, through the parameter table (dropping what Claude refuses) and
  the translation, gives a body the SDK's closed ``MessageCreateParams`` accepts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.anthropic_translate import (
    StreamEvent,
    StreamTranslator,
    finish_reason,
    to_anthropic_body,
    translate_messages,
)
from backends.params import fit_params
from backends.sse import SSEDecoder
from backends.types import (
    ChatChunk,
    ContentPart,
    FunctionCall,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    ToolCall,
    Usage,
)
from gateway.wire import parse_chat
from tests.contracts.test_anthropic_wire import check_request_body

texts = st.text(st.characters(codec="utf-8"), max_size=12)
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=10)
counts = st.none() | st.integers(0, 10**6)
STOP_REASONS = ["end_turn", "stop_sequence", "pause_turn", "max_tokens", "model_context_window_exceeded",
                "tool_use", "refusal", "a_reason_added_next_year", None]


@dataclass
class Block:
    """One content block: what is streamed for it, and what it must become."""

    kind: str  # text | tool_use | thinking
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    text: str = ""
    tool: tuple[str, str, str] | None = None
    """(id, name, arguments) of a tool_use block."""


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    kind = draw(st.sampled_from(["text", "tool_use", "thinking"]))
    pieces = draw(st.lists(texts, max_size=4))
    if kind == "text":
        first = draw(texts)
        return Block(kind, {"type": "text", "text": first},
                     [{"type": "text_delta", "text": p} for p in pieces], text=first + "".join(pieces))
    if kind == "tool_use":
        tool_id, name = f"toolu_{draw(ids)}", draw(ids)
        return Block(kind, {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
                     [{"type": "input_json_delta", "partial_json": p} for p in pieces],
                     tool=(tool_id, name, "".join(pieces)))
    return Block(kind, {"type": "thinking", "thinking": ""},
                 [{"type": "thinking_delta", "thinking": p} for p in pieces]
                 + [{"type": "signature_delta", "signature": draw(ids)}])


def usage_of(draw: st.DrawFn) -> dict[str, int]:
    fields = {"input_tokens": draw(counts), "output_tokens": draw(counts),
              "cache_read_input_tokens": draw(counts), "cache_creation_input_tokens": draw(counts)}
    return {k: v for k, v in fields.items() if v is not None}


@dataclass
class Stream:
    events: list[dict[str, Any]]
    blocks: list[Block]
    message_id: str
    model: str
    stop_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)
    """The usage Anthropic means in the end: later counts replace earlier ones, field by field."""


@st.composite
def anthropic_streams(draw: st.DrawFn) -> Stream:
    message_id, model = f"msg_{draw(ids)}", draw(st.sampled_from(["", "claude-x"]))
    start_usage = usage_of(draw)
    content = draw(st.lists(blocks(), max_size=5))
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "content": [], "model": model,
        "stop_reason": None, "usage": start_usage}}]
    for index, block in enumerate(content):
        events.append({"type": "content_block_start", "index": index, "content_block": block.start})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in block.deltas]
        events.append({"type": "content_block_stop", "index": index})
    stop = draw(st.sampled_from(STOP_REASONS))
    usage = dict(start_usage)
    deltas = draw(st.integers(1, 2))
    for i in range(deltas):
        delta_usage = usage_of(draw)
        usage.update(delta_usage)
        events.append({"type": "message_delta", "usage": delta_usage,
                       "delta": {"stop_reason": stop if i == deltas - 1 else None, "stop_sequence": None}})
    events.append({"type": "message_stop"})
    for at in sorted(draw(st.lists(st.integers(1, len(events)), max_size=3)), reverse=True):
        events.insert(at, {"type": "ping"})  # Anthropic sends pings anywhere after message_start
    return Stream(events, content, message_id, model, stop, usage)


def feed_directly(events: list[dict[str, Any]]) -> tuple[list[ChatChunk], StreamTranslator]:
    translator = StreamTranslator(created=7, model="fallback")
    chunks = [c for e in events for c in translator.feed(msgspec.convert(e, StreamEvent))]
    return chunks, translator


def feed_as_bytes(events: list[dict[str, Any]], cuts: list[int]) -> list[ChatChunk]:
    """As ``backends/anthropic.py`` does: SSE bytes in arbitrary pieces, decoded, translated."""
    raw = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + msgspec.json.encode(e) + b"\n\n"
                   for e in events)
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in itertools.pairwise([0, *points, len(raw)])]
    decoder, translator = SSEDecoder(), StreamTranslator(created=7, model="fallback")
    events_out = [e for piece in pieces for e in decoder.feed(piece)] + decoder.close()
    return [c for e in events_out for c in translator.feed(msgspec.json.decode(e.data, type=StreamEvent))]


def tool_calls_of(chunks: list[ChatChunk]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) per tool index, assembled from the deltas as a client does."""
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, ["", "", ""])
                function = delta.function if isinstance(delta.function, dict) else {}
                if isinstance(delta.id, str):
                    call[0] = delta.id
                call[1] = function.get("name", call[1])
                call[2] += function.get("arguments", "")
    assert sorted(calls) == list(range(len(calls))), "tool indexes count up from 0"
    return [(c[0], c[1], c[2]) for _, c in sorted(calls.items())]


@settings(max_examples=300)
@given(anthropic_streams(), st.lists(st.integers(min_value=0), max_size=12))
def test_any_valid_stream_translates_consistently(stream: Stream, cuts: list[int]) -> None:
    chunks, translator = feed_directly(stream.events)
    assert feed_as_bytes(stream.events, cuts) == chunks, "chunking the bytes changes nothing"
    assert translator.finished
    assert all((c.id, c.created, c.model) == (stream.message_id, 7, stream.model or "fallback") for c in chunks)
    assert all(len(c.choices) == 1 and c.choices[0].index == 0 for c in chunks)
    opening = chunks[0].choices[0].delta
    assert (opening.role, opening.content) == ("assistant", "")
    # the text, in order, with nothing from thinking blocks
    text = "".join(c.choices[0].delta.content for c in chunks if isinstance(c.choices[0].delta.content, str))
    assert text == "".join(b.text for b in stream.blocks if b.kind == "text")
    assert tool_calls_of(chunks) == [b.tool for b in stream.blocks if b.tool is not None]
    # one finish reason, on the last chunk, mapped from the stop reason
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason is not None]
    expected = finish_reason(stream.stop_reason)
    assert finishes == ([expected] if expected else [])
    if expected:
        assert chunks[-1].choices[0].finish_reason == expected
    usage = translator.usage_chunk().usage
    assert isinstance(usage, Usage) and translator.usage_chunk().choices == []
    u = stream.usage
    cached = u.get("cache_read_input_tokens", 0)
    prompt = u.get("input_tokens", 0) + cached + u.get("cache_creation_input_tokens", 0)
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, u.get("output_tokens", 0))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.cached_tokens == cached


@settings(max_examples=100)
@given(anthropic_streams())
def test_a_stream_cut_before_message_stop_is_not_finished(stream: Stream) -> None:
    stop = next(i for i, e in enumerate(stream.events) if e["type"] == "message_stop")
    _, translator = feed_directly(stream.events[:stop])
    assert not translator.finished  # the backend raises UpstreamError for it


# --- requests -----------------------------------------------------------------------------


arguments = st.dictionaries(ids, st.integers(), max_size=2).map(lambda d: msgspec.json.encode(d).decode())
"""Tool call arguments: a JSON object as text."""


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """User turns with text and image parts, assistant turns calling tools, tool results."""
    part = st.one_of(st.builds(TextPart, text=texts), st.builds(
        lambda u: ImagePart(image_url=ImageURL(url=f"https://img.example/{u}.png")), ids))
    out: list[Message] = []
    for turn in range(draw(st.integers(1, 4))):
        parts: list[ContentPart] = list(draw(st.lists(part, min_size=1, max_size=3)))
        out.append(Message(role="user", content=parts))
        calls = [ToolCall(id=f"call_{turn}_{i}", function=FunctionCall(name=draw(ids), arguments=draw(arguments)))
                 for i in range(draw(st.integers(0, 2)))]
        if calls:
            out.append(Message(role="assistant", content=draw(st.none() | texts), tool_calls=calls))
        elif draw(st.booleans()):
            out.append(Message(role="assistant", content=draw(texts)))
        out += [Message(role="tool", tool_call_id=c.id, content=draw(texts)) for c in calls]
    return out


@settings(max_examples=300)
@given(conversations())
def test_tool_calls_results_and_images_survive_in_order(messages: list[Message]) -> None:
    _, turns = translate_messages(messages)
    blocks = [b for t in turns for b in t["content"]]
    calls = [c for m in messages if isinstance(m.tool_calls, list) for c in m.tool_calls]
    assert [(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"] == [
        (c.id, c.function.name, msgspec.json.decode(c.function.arguments)) for c in calls]
    results = [b for b in blocks if b["type"] == "tool_result"]
    tools = [m for m in messages if m.role == "tool"]
    assert [b["tool_use_id"] for b in results] == [m.tool_call_id for m in tools]
    assert [b.get("content", "") for b in results] == [m.content for m in tools]
    images = [p.image_url.url for m in messages if isinstance(m.content, list)
              for p in m.content if isinstance(p, ImagePart)]
    assert [b["source"]["url"] for b in blocks if b["type"] == "image"] == images
    # every tool_use is answered by the next turn, which opens with the results
    for turn, after in itertools.pairwise(turns):
        used = [b["id"] for b in turn["content"] if b["type"] == "tool_use"]
        if used:
            answered = [b["tool_use_id"] for b in after["content"][:len(used)]]
            assert answered == used


# --- the parameter table, then the translation: what reaches Claude is on its contract ------

_OPENAI_VALUES: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"}, "frequency_penalty": 0.5, "logit_bias": {"1": 2},
    "logprobs": True, "top_logprobs": 2, "max_completion_tokens": 3000, "metadata": {"team": "a"},
    "modalities": ["text"], "n": 2, "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "x"}, "presence_penalty": 0.1,
    "prompt_cache_key": "k", "prompt_cache_retention": "24h", "reasoning_effort": "low",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "safety_identifier": "s", "seed": 3, "service_tier": "default", "stop": ["END"], "store": True,
    "temperature": 1.0, "top_p": 0.5, "user": "u", "verbosity": "low", "web_search_options": {},
    "moderation": None, "functions": [{"name": "f"}], "function_call": "auto",
}


@settings(max_examples=150)
@given(st.sets(st.sampled_from(sorted(_OPENAI_VALUES))), st.booleans())
def test_any_openai_parameters_reach_claude_on_contract_or_not_at_all(names: set[str], stream: bool) -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}],
            **{name: _OPENAI_VALUES[name] for name in names}}
    request = fit_params(parse_chat(msgspec.json.encode(body)), "anthropic", drop_unsupported=True)
    sent = to_anthropic_body(request, stream=stream)
    check_request_body(sent)  # the SDK's closed MessageCreateParams: nothing OpenAI-only slips by
    assert "top_p" not in sent or "temperature" not in sent
