"""More properties of ``policies/context_budget.fit_context``.

``tests/unit/test_policies/test_context_budget.py`` already checks, for any conversation, that
the result fits the window, keeps the system prompt and the last turn (or refuses), keeps a
prefix plus a suffix without orphaned tool results, and that the trimmed counts add up. Its
strategies are reused here for what it does not check: that trimming drops no more than it
must, that a fitted prompt fits again unchanged, that a larger window never keeps less, that
``reject`` refuses exactly what the other actions would trim, and ``max_tokens_overflow:
reject`` exactly what ``clamp`` would clamp.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.types import Message
from policies.context_budget import (
    BudgetResult,
    ContextLengthExceededError,
    fit_context,
    turns,
)
from policies.limits_config import ContextConfig
from tests.unit.test_policies.test_context_budget import (
    conversations,
    count,
    limits_strategy,
)


def fit(chat: list[Message], limits: ContextConfig, fixed: int = 0,
        max_tokens: int | None = None) -> BudgetResult | None:
    """The result, or None when the prompt cannot be made to fit."""
    try:
        return fit_context(chat, count, limits, fixed_tokens=fixed, max_tokens=max_tokens)
    except ContextLengthExceededError:
        return None


def kept_indexes(result: BudgetResult, chat: list[Message]) -> set[int]:
    ids = {id(m) for m in result.messages}
    return {i for i, m in enumerate(chat) if id(m) in ids}


def drop_order(chat: list[Message], limits: ContextConfig) -> list[range]:
    """The documented order turns go in: oldest first; ``truncate_middle`` keeps the first
    turn until nothing else is left; the last turn never goes."""
    _, groups = turns(chat)
    droppable = groups[:-1]
    if limits.overflow_action == "truncate_middle" and len(droppable) > 1:
        return [*droppable[1:], droppable[0]]
    return droppable


@settings(max_examples=300)
@given(conversations(), limits_strategy, st.integers(0, 30))
def test_trimming_drops_no_more_than_it_must(chat: list[Message], limits: ContextConfig, fixed: int) -> None:
    result = fit(chat, limits, fixed)
    if result is None or not result.is_trimmed:
        return
    kept = kept_indexes(result, chat)
    dropped_groups = [g for g in drop_order(chat, limits) if not set(g) & kept]
    assert dropped_groups, "something was trimmed, so some turn went"
    # the turns that went are the first ones in drop order, whole
    assert dropped_groups == drop_order(chat, limits)[:len(dropped_groups)]
    assert set(range(len(chat))) - kept == {i for g in dropped_groups for i in g}
    # and one turn fewer would not have fitted
    limit = limits.context_window - max(limits.reserve_output_tokens, 1)
    last = dropped_groups[-1]
    assert result.prompt_tokens + sum(count(chat[i]) for i in last) > limit


@settings(max_examples=300)
@given(conversations(), limits_strategy, st.integers(0, 30), st.none() | st.integers(1, 5000))
def test_a_fitted_prompt_fits_again_unchanged(chat: list[Message], limits: ContextConfig, fixed: int,
                                             max_tokens: int | None) -> None:
    first = fit(chat, limits, fixed, max_tokens)
    if first is None:
        return
    again = fit(first.messages, limits, fixed, first.max_tokens)
    assert again is not None and not again.is_trimmed
    assert all(a is b for a, b in zip(again.messages, first.messages, strict=True))
    assert (again.prompt_tokens, again.max_tokens, again.output_budget) == (
        first.prompt_tokens, first.max_tokens, first.output_budget)


@settings(max_examples=300)
@given(conversations(), limits_strategy, st.integers(0, 30), st.integers(1, 2000))
def test_a_larger_window_never_keeps_less(chat: list[Message], limits: ContextConfig, fixed: int,
                                          more: int) -> None:
    larger = limits.model_copy(update={"context_window": limits.context_window + more})
    small, large = fit(chat, limits, fixed), fit(chat, larger, fixed)
    if small is None:
        return
    assert large is not None, "what fits a window fits a larger one"
    assert kept_indexes(small, chat) <= kept_indexes(large, chat)


@settings(max_examples=300)
@given(conversations(), limits_strategy, st.integers(0, 30))
def test_reject_refuses_exactly_what_trimming_would_trim(chat: list[Message], limits: ContextConfig,
                                                        fixed: int) -> None:
    strict = limits.model_copy(update={"overflow_action": "reject"})
    trimming = fit(chat, limits, fixed)
    try:
        result = fit_context(chat, count, strict, fixed_tokens=fixed)
    except ContextLengthExceededError as exc:
        assert exc.param == "messages"
        assert trimming is None or trimming.is_trimmed
        return
    assert result.messages == chat and all(a is b for a, b in zip(result.messages, chat, strict=True))
    assert trimming is not None and not trimming.is_trimmed


@settings(max_examples=300)
@given(conversations(), limits_strategy, st.integers(0, 30), st.integers(1, 5000))
def test_max_tokens_reject_refuses_exactly_what_clamp_would_clamp(
        chat: list[Message], limits: ContextConfig, fixed: int, max_tokens: int) -> None:
    clamped = fit(chat, limits, fixed, max_tokens)
    if clamped is None:
        return
    strict = limits.model_copy(update={"max_tokens_overflow": "reject"})
    if clamped.max_tokens == max_tokens:
        assert fit_context(chat, count, strict, fixed_tokens=fixed, max_tokens=max_tokens).max_tokens == max_tokens
        return
    with pytest.raises(ContextLengthExceededError) as caught:
        fit_context(chat, count, strict, fixed_tokens=fixed, max_tokens=max_tokens)
    assert caught.value.param == "max_tokens"
    assert f"at most {clamped.output_budget} completion tokens fit" in caught.value.message
