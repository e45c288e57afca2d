from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from backends.types import ChatChoice, ChatResponse, FunctionCall, ResponseMessage, ToolCall, Usage
from gateway.response_cache import ResponseCache, assemble, is_deterministic, replay
from gateway.stores import MemoryCacheStore
from gateway.wire import parse_chat


def chat(**fields: object):  # type: ignore[no-untyped-def]
    return parse_chat(msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}))


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_deterministic(chat(temperature=0))
    assert is_deterministic(chat(seed=3, temperature=0.9))
    assert not is_deterministic(chat())
    assert not is_deterministic(chat(temperature=0.2))


def test_key_ignores_streaming_and_separates_tenants_and_versions() -> None:
    cache = ResponseCache(MemoryCacheStore(10), 60, 10_000, "m:v1")
    plain = cache.key("acme", chat(temperature=0))
    assert plain == cache.key("acme", chat(temperature=0, stream=True, stream_options={"include_usage": True}))
    assert plain != cache.key("other", chat(temperature=0))
    assert plain != ResponseCache(MemoryCacheStore(10), 60, 10_000, "m:v2").key("acme", chat(temperature=0))
    assert plain != cache.key("acme", chat(temperature=0, top_k=3))


texts = st.text(min_size=0, max_size=40)
calls = st.lists(st.tuples(st.text("abc", min_size=1, max_size=5), texts), max_size=3)


@given(st.lists(st.tuples(texts, calls, st.sampled_from(["stop", "length", "tool_calls"])), min_size=1, max_size=3),
       st.booleans())
def test_replay_then_assemble_round_trips(choices: list[tuple[str, list[tuple[str, str]], str]], usage: bool) -> None:
    response = ChatResponse(id="r1", created=1, model="m", usage=Usage(3, 4, 7) if usage else None, choices=[
        ChatChoice(index=i, finish_reason=reason, message=ResponseMessage(
            content=text if text or not tool_calls else None,
            tool_calls=[ToolCall(id=f"c{j}", function=FunctionCall(name=n, arguments=a))
                        for j, (n, a) in enumerate(tool_calls)] or msgspec.UNSET))
        for i, (text, tool_calls, reason) in enumerate(choices)])
    rebuilt = assemble(replay(response, include_usage=True))
    assert rebuilt is not None
    assert msgspec.json.encode(rebuilt) == msgspec.json.encode(response)


def test_an_unfinished_stream_is_not_cached() -> None:
    response = ChatResponse(id="r", created=1, model="m", choices=[
        ChatChoice(index=0, finish_reason="stop", message=ResponseMessage(content="hello"))])
    chunks = replay(response, include_usage=False)
    assert assemble(chunks[:-1]) is None
