"""Fitting a chat prompt into a model's context window: reject, or drop whole turns, and clamp
``max_tokens``.

Pure functions over messages and their token counts, so every replica decides the same and the
arithmetic is property-tested. Trimming works on whole turns (a user message and everything up
to the next one), so an assistant message with ``tool_calls`` always stays with the tool
messages answering it, roles keep alternating for strict chat templates, and what is kept is a
prefix (system prompt, and for ``truncate_middle`` the first turn) plus a suffix (the newest
turns): the prefix is byte-identical from request to request, so the backend's prefix cache hits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backends.errors import InvalidRequestError
from backends.types import Message
from policies.limits_config import ContextConfig

_SYSTEM_ROLES = ("system", "developer")


class ContextLengthExceededError(InvalidRequestError):
    """The prompt (or prompt plus ``max_tokens``) does not fit the model's context window."""

    code = "context_length_exceeded"

    def __init__(self, message: str, *, prompt_tokens: int, context_window: int,
                 param: str = "messages") -> None:
        super().__init__(message, param=param)
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


@dataclass(frozen=True, slots=True)
class BudgetResult:
    """What to send upstream after fitting the prompt into the context budget."""

    messages: list[Message]
    """The messages to send: the originals, or a prefix and a suffix of them."""
    prompt_tokens: int
    """Counted prompt tokens of ``messages`` (fixed tokens included): the admission estimate."""
    max_tokens: int | None
    """``max_tokens`` to send: the client's, clamped; None when the client sent none."""
    output_budget: int
    """Most tokens the answer can have: the window left after the prompt, capped by the
    model's ``max_output_tokens``."""
    trimmed_tokens: int = 0
    """Prompt tokens dropped (for ``x-switchyard-trimmed-tokens``)."""
    trimmed_messages: int = 0
    """Messages dropped."""

    @property
    def is_trimmed(self) -> bool:
        """Whether any message was dropped."""
        return self.trimmed_messages > 0


def fit_context(messages: Sequence[Message], count_message: Callable[[Message], int],
                limits: ContextConfig, *, fixed_tokens: int = 0,
                max_tokens: int | None = None) -> BudgetResult:
    """Fit ``messages`` into ``limits``: keep, trim or reject; then clamp ``max_tokens``.

    Args:
        messages: The request's messages, in order.
        count_message: Tokens of one message with its overhead (``TokenCounter.count_message``).
        limits: The model's context settings.
        fixed_tokens: Tokens of the request besides the messages (``TokenCounter.count_fixed``).
        max_tokens: The client's ``max_completion_tokens`` or ``max_tokens``, if any.

    Raises:
        ContextLengthExceededError: The prompt does not fit and the action is ``reject``, even
            the turns that are never dropped do not fit, or ``max_tokens`` is too large and
            ``max_tokens_overflow`` is ``reject``.
    """
    counts = [count_message(m) for m in messages]
    total = fixed_tokens + sum(counts)
    # at least one token must be left to generate, even with no reserve
    prompt_limit = limits.context_window - max(limits.reserve_output_tokens, 1)
    kept = list(range(len(messages)))
    if total > prompt_limit:
        if limits.overflow_action == "reject":
            raise ContextLengthExceededError(_too_long(limits, total), prompt_tokens=total,
                                             context_window=limits.context_window)
        kept = _trim(messages, counts, total - prompt_limit, limits.overflow_action == "truncate_middle")
        if not kept:
            protected = fixed_tokens + sum(counts[i] for i in _protected(messages))
            raise ContextLengthExceededError(
                _too_long(limits, total) + f" Dropping every older turn still leaves {protected}"
                " tokens (system prompt and last turn).",
                prompt_tokens=total, context_window=limits.context_window)
    prompt_tokens = fixed_tokens + sum(counts[i] for i in kept)
    output_budget = limits.context_window - prompt_tokens
    if limits.max_output_tokens is not None:
        output_budget = min(output_budget, limits.max_output_tokens)
    return BudgetResult(
        messages=[messages[i] for i in kept],
        prompt_tokens=prompt_tokens,
        max_tokens=_clamp(max_tokens, output_budget, prompt_tokens, limits),
        output_budget=output_budget,
        trimmed_tokens=total - prompt_tokens,
        trimmed_messages=len(messages) - len(kept),
    )


def turns(messages: Sequence[Message]) -> tuple[int, list[range]]:
    """The leading system/developer run's length, and the turns after it as index ranges.

    A turn starts at a user message and runs to the next user message; whatever comes before
    the first user message (after the system run) is a turn of its own.
    """
    head = 0
    while head < len(messages) and messages[head].role in _SYSTEM_ROLES:
        head += 1
    starts = [i for i in range(head, len(messages)) if i == head or messages[i].role == "user"]
    ends = [*starts[1:], len(messages)]
    return head, [range(s, e) for s, e in zip(starts, ends)]


def _trim(messages: Sequence[Message], counts: Sequence[int], excess: int,
          keep_first_turn: bool) -> list[int]:
    """Indexes to keep after dropping whole turns worth at least ``excess``; [] if impossible."""
    _, groups = turns(messages)
    droppable = groups[:-1]  # the last turn holds the last user message: never dropped
    if keep_first_turn and len(droppable) > 1:
        droppable = [*droppable[1:], droppable[0]]  # the first turn goes only if nothing else helps
    dropped: set[int] = set()
    freed = 0
    for group in droppable:
        if freed >= excess:
            break
        dropped.update(group)
        freed += sum(counts[i] for i in group)
    if freed < excess:
        return []
    return [i for i in range(len(messages)) if i not in dropped]


def _protected(messages: Sequence[Message]) -> list[int]:
    head, groups = turns(messages)
    return [*range(head), *(groups[-1] if groups else ())]


def _clamp(max_tokens: int | None, output_budget: int, prompt_tokens: int,
           limits: ContextConfig) -> int | None:
    if max_tokens is None or max_tokens <= output_budget:
        return max_tokens
    if limits.max_tokens_overflow == "reject":
        window = limits.context_window
        raise ContextLengthExceededError(
            f"This model's maximum context length is {window} tokens"
            + (f" with at most {limits.max_output_tokens} in the completion"
               if limits.max_output_tokens is not None else "")
            + f". However, you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in"
            f" the messages, {max_tokens} in the completion). Please reduce the length of the"
            f" messages or completion (at most {output_budget} completion tokens fit).",
            prompt_tokens=prompt_tokens, context_window=window, param="max_tokens")
    return output_budget


def _too_long(limits: ContextConfig, total: int) -> str:
    reserve = limits.reserve_output_tokens
    kept = f", and {reserve} are kept for the completion" if reserve else ""
    return (f"This model's maximum context length is {limits.context_window} tokens. However, your"
            f" messages resulted in {total} tokens{kept}. Please reduce the length of the messages.")
