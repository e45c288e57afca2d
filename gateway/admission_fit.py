"""Fitting a request to its model before admission: count the prompt, trim it into the context
window, clamp ``max_tokens``, and say how many output tokens per choice it may produce."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from backends.types import ChatParams, ChatRequest, EmbeddingRequest, Message, TextParams, TextRequest, Tool
from policies.context_budget import BudgetResult, ContextLengthExceededError, fit_context
from policies.document import ModelConfig
from policies.tokens import TokenCounter, prompt_chars

Call = TypeVar("Call", ChatRequest, TextRequest, EmbeddingRequest)
TRIMMED_HEADER = "x-switchyard-trimmed-tokens"


@dataclass(frozen=True, slots=True)
class Fitted(Generic[Call]):
    """A request as it fits its model."""

    call: Call
    """The call to send: trimmed, ``max_tokens`` clamped to the window."""
    prompt_tokens: int
    """The prompt estimate."""
    output_bound: int | None
    """Output tokens per choice the upstream may produce: the request's ``max_tokens`` (or
    ``max_completion_tokens``), else what the model's window leaves; None when unknown."""
    choices: int
    """Completions the upstream generates: ``n``, or ``best_of`` when larger."""
    headers: dict[str, str] = field(default_factory=dict)
    counted: bool = True
    """False for ``uncounted``: ``prompt_tokens`` is 0, the prompt was not counted."""

    def with_max_tokens(self, tokens: int) -> Call:
        """The call asking for at most ``tokens`` per choice (in the field the client used)."""
        if isinstance(self.call, EmbeddingRequest):
            return self.call  # generates nothing: its output bound is already 0
        params = self.call.params
        name = "max_completion_tokens" if isinstance(params, ChatParams) and isinstance(
            params.max_completion_tokens, int) else "max_tokens"
        return msgspec.structs.replace(self.call, params=msgspec.structs.replace(params, **{name: tokens}))


async def fit_call(counter: TokenCounter, call: Call, config: ModelConfig) -> Fitted[Call]:
    """Count, trim and clamp ``call`` for ``config``; raises ``ContextLengthExceededError``."""
    if isinstance(call, EmbeddingRequest):
        return await _fit_embedding(counter, call, config)
    choices = _choices(call)
    if isinstance(call, TextRequest):
        return await _fit_text(counter, call, config, choices)
    params = call.params
    tools = _tools(params)
    requested = _requested(params)
    if config.context is None:
        count = await counter.count_chat_async(params.messages, tools, config.tokens)
        return Fitted(call, count, requested, choices)
    result = await counter.offload(
        prompt_chars(params.messages, tools), _fit_with, counter, params.messages, tools, config, requested)
    headers = {TRIMMED_HEADER: str(result.trimmed_tokens)} if result.is_trimmed else {}
    changes: dict[str, object] = {}
    if result.is_trimmed:
        changes["messages"] = result.messages
    if result.max_tokens is not None and result.max_tokens != requested:
        changes["max_completion_tokens" if isinstance(params.max_completion_tokens, int) else "max_tokens"] = \
            result.max_tokens
    if changes:
        call = msgspec.structs.replace(call, params=msgspec.structs.replace(params, **changes))
    bound = result.max_tokens if result.max_tokens is not None else result.output_budget
    return Fitted(call, result.prompt_tokens, bound, choices, headers)


async def _fit_text(counter: TokenCounter, call: TextRequest, config: ModelConfig,
                    choices: int) -> Fitted[TextRequest]:
    text = _prompt_text(call)
    count = await counter.offload(len(text), counter.count_text, text, config.tokens)
    requested = _requested(call.params)
    if config.context is None:
        return Fitted(call, count, requested, choices)
    # a text prompt is one turn that cannot be dropped: it fits, or it is refused;
    # max_tokens is clamped or refused as for chat
    fitted = fit_context([Message(role="user", content="")], lambda _: count, config.context,
                         max_tokens=requested)
    if fitted.max_tokens is not None and fitted.max_tokens != requested:
        call = msgspec.structs.replace(call, params=msgspec.structs.replace(
            call.params, max_tokens=fitted.max_tokens))
    bound = fitted.max_tokens if fitted.max_tokens is not None else fitted.output_budget
    return Fitted(call, count, bound, choices)


async def _fit_embedding(counter: TokenCounter, call: EmbeddingRequest, config: ModelConfig) -> Fitted[EmbeddingRequest]:
    """Each input is its own sequence: each must fit the window (nothing is trimmed, no output
    is reserved); the prompt estimate is their sum, and nothing is generated."""
    value = call.params.input
    inputs: list[Any] = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else value
    chars = sum(len(item) for item in inputs if isinstance(item, str))
    counts = await counter.offload(chars, _count_inputs, counter, inputs, config)
    window = config.context.context_window if config.context is not None else None
    for index, count in enumerate(counts):
        if window is not None and count > window:
            where = "input" if len(counts) == 1 else f"input[{index}]"
            raise ContextLengthExceededError(
                f"This model's maximum context length is {window} tokens. However, {where} has {count}"
                " tokens. Please reduce the length of the input.",
                prompt_tokens=count, context_window=window, param="input")
    return Fitted(call, sum(counts), 0, 1)


def _count_inputs(counter: TokenCounter, inputs: list[Any], config: ModelConfig) -> list[int]:
    """Tokens of each input: counted for a string, the length of a token array."""
    return [len(item) if isinstance(item, list) else counter.count_text(item, config.tokens) for item in inputs]


def uncounted(call: Call) -> Fitted[Call] | None:
    """``call`` as it is, its prompt not counted: for a model with no context budget whose
    caller has no token limit and no budget, nothing before the answer reads the count (the
    accounting counts it behind, ``count_prompt``). None for embeddings, always counted."""
    if isinstance(call, EmbeddingRequest):
        return None
    return Fitted(call, 0, _requested(call.params), _choices(call), counted=False)


def count_prompt(counter: TokenCounter, call: ChatRequest | TextRequest, config: ModelConfig) -> int:
    """The prompt estimate ``fit_call`` makes of ``call`` (for one that ``uncounted`` let through)."""
    if isinstance(call, TextRequest):
        return counter.count_text(_prompt_text(call), config.tokens)
    return counter.count_chat(call.params.messages, _tools(call.params), config.tokens)


def prompt_size(call: ChatRequest | TextRequest) -> int:
    """Characters ``count_prompt`` encodes, roughly (inline or in a thread)."""
    if isinstance(call, TextRequest):
        return len(_prompt_text(call))
    return prompt_chars(call.params.messages, _tools(call.params))


def _requested(params: ChatParams | TextParams) -> int | None:
    """The output bound the client asked for: chat's ``max_completion_tokens``, else ``max_tokens``."""
    if isinstance(params, ChatParams) and isinstance(params.max_completion_tokens, int):
        return params.max_completion_tokens
    return params.max_tokens if isinstance(params.max_tokens, int) else None


def _tools(params: ChatParams) -> list[Tool] | None:
    return params.tools if isinstance(params.tools, list) else None


def _prompt_text(call: TextRequest) -> str:
    prompt = call.params.prompt
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def _choices(call: ChatRequest | TextRequest) -> int:
    params = call.params
    n = params.n if isinstance(params.n, int) else 1
    best_of = getattr(params, "best_of", None)
    return max(n, best_of) if isinstance(best_of, int) else n


def _fit_with(counter: TokenCounter, messages: list[Message], tools: list[Tool] | None,
              config: ModelConfig, requested: int | None) -> BudgetResult:
    assert config.context is not None
    return fit_context(messages, lambda m: counter.count_message(m, config.tokens), config.context,
                       fixed_tokens=counter.count_fixed(tools, config.tokens), max_tokens=requested)
