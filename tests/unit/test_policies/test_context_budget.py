"""Fitting prompts into the context window: properties of the arithmetic, and the policies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.types import FunctionCall, Message, ToolCall
from policies.context_budget import ContextLengthExceededError, fit_context, turns
from policies.limits_config import ContextConfig


def count(message: Message) -> int:
    """A stand-in counter: 4 overhead tokens plus one per character."""
    return 4 + len(message.text()) + sum(len(c.function.arguments) for c in message.tool_calls or ())


def msg(role: Any, text: str = "", **extra: Any) -> Message:
    return Message(role=role, content=text, **extra)


def tool_turn(call_id: str, size: int) -> list[Message]:
    call = ToolCall(call_id, FunctionCall("lookup", "{}"))
    return [msg("assistant", tool_calls=[call]), msg("tool", "r" * size, tool_call_id=call_id)]


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    out = [msg("system", "s" * draw(st.integers(0, 40))) for _ in range(draw(st.integers(0, 2)))]
    for turn in range(draw(st.integers(1, 8))):
        out.append(msg("user", "u" * draw(st.integers(0, 120))))
        for call in range(draw(st.integers(0, 2))):
            out += tool_turn(f"c{turn}-{call}", draw(st.integers(0, 80)))
            if draw(st.booleans()):  # parallel calls answered by several tool messages
                out[-2].tool_calls.append(ToolCall(f"c{turn}-{call}b", FunctionCall("f", "{}")))  # type: ignore[union-attr]
                out.append(msg("tool", "x", tool_call_id=f"c{turn}-{call}b"))
        if draw(st.booleans()):
            out.append(msg("assistant", "a" * draw(st.integers(0, 120))))
    return out


limits_strategy = st.builds(
    lambda window, reserve, action, overflow: ContextConfig(
        context_window=window, reserve_output_tokens=min(reserve, window - 1),
        overflow_action=action, max_tokens_overflow=overflow),
    st.integers(20, 1500), st.integers(0, 200),
    st.sampled_from(["drop_oldest", "truncate_middle"]), st.just("clamp"))


def has_orphan_tool_message(messages: list[Message]) -> bool:
    answered: set[str] = set()
    for message in messages:
        if message.role == "assistant":
            answered = {c.id for c in message.tool_calls or ()}
        elif message.role == "tool":
            if message.tool_call_id not in answered:
                return True
        else:
            answered = set()
    return False


def is_subsequence(small: list[Message], big: list[Message]) -> bool:
    items = iter(big)
    return all(any(m is b for b in items) for m in small)


@settings(max_examples=300, deadline=None)
@given(conversations(), limits_strategy, st.integers(0, 30), st.none() | st.integers(1, 5000))
def test_trimmed_prompts_fit_and_keep_their_structure(
        chat: list[Message], limits: ContextConfig, fixed: int, max_tokens: int | None) -> None:
    assert not has_orphan_tool_message(chat)
    try:
        result = fit_context(chat, count, limits, fixed_tokens=fixed, max_tokens=max_tokens)
    except ContextLengthExceededError as exc:
        # refused only when the system prompt and the last turn alone do not fit
        head, groups = turns(chat)
        protected = fixed + sum(count(chat[i]) for i in [*range(head), *groups[-1]])
        assert protected > limits.context_window - max(limits.reserve_output_tokens, 1)
        assert str(limits.context_window) in exc.message
        return
    kept = result.messages
    assert result.prompt_tokens == fixed + sum(count(m) for m in kept)
    assert result.prompt_tokens <= limits.context_window - max(limits.reserve_output_tokens, 1)
    assert result.trimmed_tokens == fixed + sum(count(m) for m in chat) - result.prompt_tokens
    assert result.trimmed_messages == len(chat) - len(kept)
    assert is_subsequence(kept, chat)
    assert not has_orphan_tool_message(kept)
    head, _ = turns(chat)
    assert kept[:head] == chat[:head]  # the system prompt stays, first
    last_user = max(i for i, m in enumerate(chat) if m.role == "user")
    assert kept[-(len(chat) - last_user):] == chat[last_user:]  # so does the last turn, whole
    if result.is_trimmed:  # what is kept is a prefix and a suffix: the prefix cache still hits
        first_gap = next(i for i, (a, b) in enumerate(zip(kept, chat)) if a is not b)
        assert kept[first_gap:] == chat[len(chat) - (len(kept) - first_gap):]
        assert kept[first_gap].role == "user"  # roles still alternate after the system prompt
    assert 1 <= result.output_budget <= limits.context_window - result.prompt_tokens
    if max_tokens is not None:
        assert result.max_tokens == min(max_tokens, result.output_budget)
        assert result.prompt_tokens + result.max_tokens <= limits.context_window


def conversation() -> list[Message]:
    return [msg("system", "s" * 20),                    # 24 tokens
            msg("user", "first question" + "." * 36),    # 54
            msg("assistant", "a" * 50),                  # 54
            msg("user", "u" * 50), *tool_turn("c1", 46),  # 54, 6, 50
            msg("assistant", "a" * 50),                  # 54
            msg("user", "latest question")]              # 19


def test_a_prompt_that_fits_is_untouched() -> None:
    chat = conversation()
    result = fit_context(chat, count, ContextConfig(context_window=1000), max_tokens=100)
    assert result.messages == chat and not result.is_trimmed
    assert (result.prompt_tokens, result.max_tokens, result.trimmed_tokens) == (315, 100, 0)


def test_reject_names_the_counts() -> None:
    limits = ContextConfig(context_window=300, reserve_output_tokens=20)
    with pytest.raises(ContextLengthExceededError) as caught:
        fit_context(conversation(), count, limits)
    error = caught.value
    assert (error.status_code, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "maximum context length is 300 tokens" in error.message
    assert "resulted in 315 tokens" in error.message and "20 are kept" in error.message


def test_drop_oldest_keeps_the_system_prompt_and_the_newest_turns() -> None:
    chat = conversation()
    limits = ContextConfig(context_window=250, overflow_action="drop_oldest")
    result = fit_context(chat, count, limits)
    assert result.messages == [chat[0], *chat[3:]]  # the first turn (108 tokens) went
    assert (result.trimmed_messages, result.trimmed_tokens) == (2, 108)


def test_truncate_middle_keeps_the_first_turn_as_a_stable_prefix() -> None:
    chat = conversation()
    limits = ContextConfig(context_window=250, overflow_action="truncate_middle")
    result = fit_context(chat, count, limits)
    # the middle turn goes whole, its tool call with its result
    assert result.messages == [chat[0], chat[1], chat[2], chat[7]]
    assert result.trimmed_tokens == 54 + 6 + 50 + 54
    # when the first turn must go too, it goes last
    result = fit_context(chat, count, ContextConfig(context_window=60, overflow_action="truncate_middle"))
    assert result.messages == [chat[0], chat[7]]


def test_the_last_turn_is_never_dropped() -> None:
    chat = [msg("system", "s"), msg("user", "u" * 500)]
    with pytest.raises(ContextLengthExceededError, match="still leaves 514 tokens"):
        fit_context(chat, count, ContextConfig(context_window=100, overflow_action="drop_oldest"),
                    fixed_tokens=5)


def test_max_tokens_is_clamped_or_rejected() -> None:
    chat = conversation()  # 315 tokens
    limits = ContextConfig(context_window=400, max_output_tokens=64)
    assert fit_context(chat, count, limits, max_tokens=1000).max_tokens == 64
    assert fit_context(chat, count, ContextConfig(context_window=400), max_tokens=1000).max_tokens == 85
    assert fit_context(chat, count, limits).max_tokens is None
    strict = ContextConfig(context_window=400, max_tokens_overflow="reject")
    with pytest.raises(ContextLengthExceededError) as caught:
        fit_context(chat, count, strict, max_tokens=1000)
    assert caught.value.param == "max_tokens"
    assert "you requested 1315 tokens (315 in the messages, 1000 in the completion)" in caught.value.message


def test_config_rejects_a_reserve_that_leaves_no_prompt() -> None:
    with pytest.raises(ValueError, match="reserve_output_tokens"):
        ContextConfig(context_window=100, reserve_output_tokens=100)
