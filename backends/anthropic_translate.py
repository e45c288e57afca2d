"""OpenAI chat ⇄ Anthropic Messages translation, as pure functions.

Kept apart from the HTTP client in ``backends/anthropic.py`` so that every rule can be unit-
and property-tested without a socket. Requests go out as plain JSON objects (the body we send);
responses and stream events come back through msgspec structs, so a malformed upstream answer
fails while decoding rather than deep inside the translation.

Rules the Messages API imposes and how we meet them:

* System and developer messages, wherever they appear, become the top-level ``system``
  (joined with a blank line): Anthropic has no system role inside ``messages``.
* Turns must alternate user/assistant: consecutive turns of the same role are merged, and
  ``tool`` messages become ``tool_result`` blocks of a user turn (placed first in that turn,
  as Anthropic requires).
* The first turn must be the user's: when a conversation opens with an assistant turn we
  prepend a user turn holding ``LEADING_USER_TEXT``, the least content that satisfies the rule.
* Empty text is rejected upstream, so empty text parts are dropped, and a turn left with no
  blocks at all is dropped too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from backends import open_wire
from backends.errors import InvalidRequestError, UnsupportedError
from backends.params import SPEC_PARAMS, param_value
from backends.types import (
    ChatChoice,
    ChatChunk,
    ChatParams,
    ChatRequest,
    ChatResponse,
    ChunkChoice,
    ContentPart,
    Delta,
    FunctionCall,
    FunctionDef,
    ImagePart,
    JSONObject,
    Message,
    PromptTokensDetails,
    RefusalPart,
    ResponseMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; used when the client sets neither limit."""
THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}
"""``reasoning_effort`` -> ``thinking.budget_tokens``: doubling from Anthropic's minimum, with
``medium`` (OpenAI's default effort) at 8k; ``none`` disables thinking."""
MIN_THINKING_BUDGET = 1024
"""Anthropic's smallest ``budget_tokens``."""
_SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}
LEADING_USER_TEXT = "."
"""Content of the user turn prepended when a conversation opens with the assistant."""
CACHE_MIN_TOKENS = 1024
"""Smallest prefix Anthropic caches for most models; shorter ones are not worth marking."""
CHARS_PER_TOKEN = 4
"""Rough estimate used to decide whether the prefix reaches ``CACHE_MIN_TOKENS``."""


_STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_THINKING_TYPES = ("thinking", "redacted_thinking")

_TOOL_CHOICES: dict[str, JSONObject] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}


# --- Anthropic response shapes ------------------------------------------------------------


class AnthropicUsage(msgspec.Struct):
    """Token counts as Anthropic reports them; ``None`` means the event did not say."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class ContentBlock(msgspec.Struct):
    """One content block; flat so that block types we do not translate still decode."""

    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None
    thinking: str = ""
    signature: str = ""
    data: str = ""
    """A ``redacted_thinking`` block's encrypted thinking."""

    def thinking_block(self) -> JSONObject:
        """A ``thinking``/``redacted_thinking`` block as Anthropic sent it (and needs it back)."""
        if self.type == "redacted_thinking":
            return {"type": "redacted_thinking", "data": self.data}
        return {"type": "thinking", "thinking": self.thinking, "signature": self.signature}


class AnthropicMessage(msgspec.Struct):
    """A Messages API response (also the skeleton inside ``message_start``)."""

    id: str
    model: str = ""
    content: list[ContentBlock] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: AnthropicUsage = msgspec.field(default_factory=AnthropicUsage)


class ErrorBody(msgspec.Struct):
    """The ``error`` object of an error response or of an ``error`` stream event."""

    type: str = "api_error"
    message: str = ""


class ErrorEnvelope(msgspec.Struct):
    """An error response: ``{"type": "error", "error": {...}}``."""

    error: ErrorBody = msgspec.field(default_factory=ErrorBody)


class StreamDelta(msgspec.Struct):
    """The ``delta`` of a ``content_block_delta`` or a ``message_delta`` event."""

    type: str = ""
    text: str = ""
    partial_json: str = ""
    thinking: str = ""
    signature: str = ""
    stop_reason: str | None = None


class StreamEvent(msgspec.Struct):
    """One decoded stream event; which fields are set depends on ``type``."""

    type: str
    message: AnthropicMessage | None = None
    index: int = 0
    content_block: ContentBlock | None = None
    delta: StreamDelta | None = None
    usage: AnthropicUsage | None = None
    error: ErrorBody | None = None


# --- request ------------------------------------------------------------------------------


def to_anthropic_body(
    request: ChatRequest, *, stream: bool = False, prompt_caching: bool = False
) -> JSONObject:
    """Build the ``POST /v1/messages`` body for an OpenAI chat request.

    Translates what the parameter table (``backends/params.py``) marks ``translated`` for
    Anthropic; ``backends.params.fit_params`` has already refused or dropped the rest. An
    OpenAI parameter is never forwarded raw, even when it arrives as an extra.

    Raises:
        UnsupportedError: the request asks for something Anthropic cannot do (``n > 1``,
            logprobs, audio or file parts, legacy ``function`` messages).
        InvalidRequestError: a field cannot be translated (bad tool arguments, image URL,
            a thinking budget that does not fit the token limit).
    """
    p = request.params
    _check_supported(p)
    system, messages = translate_messages(p.messages)
    limit = _max_tokens(p.max_completion_tokens, p.max_tokens)
    thinking = to_thinking(param_value(request, "reasoning_effort"), limit)
    if limit is None:
        limit = DEFAULT_MAX_TOKENS + int(thinking.get("budget_tokens", 0)) if thinking else DEFAULT_MAX_TOKENS
    body: JSONObject = {"model": request.upstream_model or p.model, "max_tokens": limit, "messages": messages}
    if system:
        body["system"] = system
    body.update(_sampling(p, thinking))
    if isinstance(p.tools, list) and p.tools:
        body["tools"] = [to_anthropic_tool(t) for t in p.tools]
    choice = to_tool_choice(p.tool_choice, p.parallel_tool_calls, has_tools="tools" in body)
    if choice is not None:
        body["tool_choice"] = choice
    if thinking:
        body["thinking"] = thinking
    output_format = to_output_format(p.response_format)
    if output_format is not None:
        body["output_config"] = {"format": output_format}
    user = param_value(request, "safety_identifier")
    user = user if isinstance(user, str) and user else p.user
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    tier = param_value(request, "service_tier")
    if tier in _SERVICE_TIERS:
        body["service_tier"] = _SERVICE_TIERS[tier]
    _add_extras(body, request.extra)
    if stream:
        body["stream"] = True
    if prompt_caching:
        mark_cacheable_prefix(body)
    return body


def _add_extras(body: JSONObject, extra: JSONObject) -> None:
    """Unknown top-level fields pass through raw, as with every backend: this is how a client
    sends Anthropic-only parameters (``top_k``, ``thinking``, ``output_config``, ...) with an
    OpenAI SDK's ``extra_body``. An OpenAI parameter never does: it was translated above, or
    the table dropped it (``metadata`` would otherwise overwrite ``metadata.user_id``)."""
    for key, value in extra.items():
        if key in SPEC_PARAMS:
            continue
        if key == "output_config" and isinstance(value, dict) and "output_config" in body:
            body["output_config"] = {**body["output_config"], **value}  # e.g. effort + our format
        else:
            body[key] = value


def _check_supported(p: ChatParams) -> None:
    # the parameter table refuses these first; kept for callers that skip fit_params
    if isinstance(p.n, int) and p.n > 1:
        raise UnsupportedError("anthropic deployments do not support n > 1", param="n")
    if p.logprobs is True or (isinstance(p.top_logprobs, int) and p.top_logprobs > 0):
        raise UnsupportedError("anthropic deployments do not return logprobs", param="logprobs")


def _sampling(p: ChatParams, thinking: JSONObject | None) -> JSONObject:
    out: JSONObject = {}
    temperature = p.temperature if isinstance(p.temperature, (int, float)) else None
    if temperature is not None:
        if temperature > 1:  # fit_params refuses or drops it first; never send what must fail
            raise UnsupportedError("temperature above 1 is outside Anthropic's range [0, 1]",
                                   param="temperature")
        if thinking and thinking.get("type") == "enabled" and temperature != 1:
            raise UnsupportedError("anthropic deployments take no temperature other than 1 "
                                   "with reasoning_effort (extended thinking)", param="temperature")
        out["temperature"] = temperature
    if isinstance(p.top_p, (int, float)) and temperature is None:
        out["top_p"] = p.top_p  # current Claude models refuse temperature and top_p together
    if isinstance(p.stop, str):
        out["stop_sequences"] = [p.stop]
    elif isinstance(p.stop, list) and p.stop:
        out["stop_sequences"] = list(p.stop)
    return out


def _max_tokens(max_completion_tokens: object, max_tokens: object) -> int | None:
    for value in (max_completion_tokens, max_tokens):
        if isinstance(value, int):
            return value
    return None


def to_thinking(effort: object, max_tokens: int | None) -> JSONObject | None:
    """OpenAI ``reasoning_effort`` as Anthropic ``thinking`` (``THINKING_BUDGETS``).

    The budget counts toward ``max_tokens`` on both APIs (OpenAI's ``max_completion_tokens``
    includes reasoning tokens too), so a client limit caps the budget at ``max_tokens - 1``;
    without a client limit the default output allowance is added on top of the budget.

    Raises:
        InvalidRequestError: the effort is unknown, or the limit leaves less than Anthropic's
            minimum budget of ``MIN_THINKING_BUDGET`` tokens.
    """
    if effort is UNSET or effort is None:
        return None
    if effort == "none":
        return {"type": "disabled"}
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequestError(f"unknown reasoning_effort {effort!r}", param="reasoning_effort")
    if max_tokens is not None:
        budget = min(budget, max_tokens - 1)
        if budget < MIN_THINKING_BUDGET:
            raise InvalidRequestError(
                f"reasoning_effort needs max_completion_tokens above {MIN_THINKING_BUDGET} on "
                "anthropic deployments (thinking tokens count toward the limit)",
                param="reasoning_effort")
    return {"type": "enabled", "budget_tokens": budget}


def to_output_format(response_format: object) -> JSONObject | None:
    """OpenAI ``response_format`` as Anthropic ``output_config.format`` (structured outputs).

    ``json_schema`` becomes ``{"type": "json_schema", "schema": ...}``; ``text`` needs nothing.

    Raises:
        UnsupportedError: ``json_object`` (JSON mode without a schema has no Anthropic
            counterpart) or an unknown type.
        InvalidRequestError: a ``json_schema`` format without a schema object.
    """
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    if kind != "json_schema":
        raise UnsupportedError(f"anthropic deployments do not support response_format {kind!r}; "
                               "use json_schema", param="response_format")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise InvalidRequestError("response_format.json_schema.schema must be a JSON schema object",
                                  param="response_format.json_schema.schema")
    return {"type": "json_schema", "schema": schema}


def translate_messages(messages: Sequence[Message]) -> tuple[str, list[JSONObject]]:
    """Split OpenAI messages into Anthropic's ``system`` text and alternating turns."""
    system: list[str] = []
    turns: list[JSONObject] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in ("system", "developer"):
            text = message.text()
            if text:
                system.append(text)
            continue
        role, blocks = _turn(message, where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # tool results must open the user turn that answers the tool calls
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
        else:
            # signed thinking opens its assistant turn, also when two OpenAI turns merged
            turn["content"].sort(key=lambda b: b["type"] not in _THINKING_TYPES)
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": LEADING_USER_TEXT}]})
    return "\n\n".join(system), turns


def _turn(message: Message, where: str) -> tuple[str, list[JSONObject]]:
    if message.role == "user":
        return "user", _content_blocks(message.content, where)
    if message.role == "assistant":
        blocks = thinking_blocks_of(message, where) + _content_blocks(message.content, where)
        calls = message.tool_calls if isinstance(message.tool_calls, list) else []
        for j, call in enumerate(calls):
            blocks.append(_tool_use_block(call, f"{where}.tool_calls[{j}]"))
        return "assistant", blocks
    if message.role == "tool":
        return "user", [_tool_result_block(message, where)]
    raise UnsupportedError(
        "anthropic deployments do not accept legacy 'function' messages; use tool messages",
        param=f"{where}.role",
    )


def thinking_blocks_of(message: Message, where: str) -> list[JSONObject]:
    """An assistant message's signed thinking, as the blocks Anthropic needs back.

    ``thinking_blocks`` (what this gateway returned, Anthropic's blocks as sent) wins; else
    ``reasoning_content`` with a ``signature`` field beside it (how some clients keep it) makes
    one ``thinking`` block. Unsigned reasoning is not sent: Anthropic would reject it.
    """
    blocks = message.thinking_blocks
    if isinstance(blocks, list) and blocks:
        out: list[JSONObject] = []
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or block.get("type") not in _THINKING_TYPES:
                raise InvalidRequestError("thinking_blocks holds thinking or redacted_thinking "
                                          "blocks only", param=f"{where}.thinking_blocks[{j}]")
            out.append(_thinking_block(block))
        return out
    signature = open_wire.unknown(message).get("signature")
    if isinstance(message.reasoning_content, str) and isinstance(signature, str) and signature:
        return [{"type": "thinking", "thinking": message.reasoning_content, "signature": signature}]
    return []


def _thinking_block(block: JSONObject) -> JSONObject:
    # only the fields the Messages API defines for these blocks go back
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data", "")}
    return {"type": "thinking", "thinking": block.get("thinking", ""),
            "signature": block.get("signature", "")}


def _content_blocks(
    content: str | list[ContentPart] | UnsetType | None, where: str
) -> list[JSONObject]:
    if not isinstance(content, (str, list)):
        return []  # None or unset: an assistant turn that only calls tools
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSONObject] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, RefusalPart):
            if part.refusal:
                blocks.append({"type": "text", "text": part.refusal})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part.image_url.url, f"{where}.content[{j}]"))
        else:
            raise UnsupportedError(
                f"anthropic deployments do not accept '{type(part).__name__}' content here",
                param=f"{where}.content[{j}]",
            )
    return blocks


def image_block(url: str, where: str = "image_url") -> JSONObject:
    """An Anthropic image block: base64 source for ``data:`` URLs, URL source otherwise."""
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise InvalidRequestError("image data URLs must be base64 with a media type", param=where)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _tool_use_block(call: ToolCall, where: str) -> JSONObject:
    if call.type != "function":
        raise UnsupportedError(f"anthropic deployments do not accept '{call.type}' tool calls", param=where)
    raw = call.arguments
    try:
        arguments = msgspec.json.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as exc:
        raise InvalidRequestError("tool call arguments are not JSON", param=where) from exc
    if not isinstance(arguments, dict):
        raise InvalidRequestError("tool call arguments must be a JSON object", param=where)
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _tool_result_block(message: Message, where: str) -> JSONObject:
    if not isinstance(message.tool_call_id, str):
        raise InvalidRequestError(
            "tool messages need a tool_call_id", param=f"{where}.tool_call_id"
        )
    block: JSONObject = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if isinstance(message.content, str):
        if message.content:
            block["content"] = message.content
    elif isinstance(message.content, list) and message.content:
        block["content"] = _content_blocks(message.content, where)
    return block


def to_anthropic_tool(tool: Tool) -> JSONObject:
    """An OpenAI function tool as an Anthropic tool (``input_schema`` is required there)."""
    fn = tool.function
    if not isinstance(fn, FunctionDef):
        raise UnsupportedError(f"anthropic deployments do not accept '{tool.type}' tools", param="tools")
    schema = (
        fn.parameters if isinstance(fn.parameters, dict) else {"type": "object", "properties": {}}
    )
    out: JSONObject = {"name": fn.name, "input_schema": schema}
    if isinstance(fn.description, str):
        out["description"] = fn.description
    return out


def to_tool_choice(choice: object, parallel: object, *, has_tools: bool) -> JSONObject | None:
    """OpenAI ``tool_choice`` (+ ``parallel_tool_calls``) as Anthropic's ``tool_choice``."""
    out: JSONObject | None
    if choice is UNSET or choice is None:
        out = None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        out = dict(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        raise InvalidRequestError(f"unknown tool_choice {choice!r}", param="tool_choice")
    if parallel is False and has_tools:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def mark_cacheable_prefix(body: JSONObject) -> None:
    """Mark system prompt and tools with ``cache_control`` when they are long enough to cache.

    Anthropic caches the prefix up to each marked block (tools come first, then system). We
    mark the last tool and the last system block, and only when the estimated size of both
    reaches ``CACHE_MIN_TOKENS``: below that Anthropic ignores the mark, so it would only cost
    breakpoints. The estimate is characters / ``CHARS_PER_TOKEN``; no tokenizer is involved.
    """
    system = body.get("system", "")
    tools: list[JSONObject] = body.get("tools", [])
    size = len(system) + sum(len(msgspec.json.encode(t)) for t in tools)
    if size // CHARS_PER_TOKEN < CACHE_MIN_TOKENS:
        return
    mark = {"type": "ephemeral"}
    if tools:
        tools[-1] = {**tools[-1], "cache_control": mark}
    if system:
        body["system"] = [{"type": "text", "text": system, "cache_control": mark}]


# --- response -----------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str | None:
    """Anthropic ``stop_reason`` as OpenAI ``finish_reason`` (unknown reasons read as stop)."""
    return None if stop_reason is None else _STOP_REASONS.get(stop_reason, "stop")


def to_usage(usage: AnthropicUsage) -> Usage:
    """OpenAI usage: prompt tokens include cache reads and writes, as OpenAI counts them."""
    read = usage.cache_read_input_tokens or 0
    prompt = (usage.input_tokens or 0) + read + (usage.cache_creation_input_tokens or 0)
    completion = usage.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=read, cache_write_tokens=usage.cache_creation_input_tokens or 0),
    )


def to_tool_call(block: ContentBlock) -> ToolCall:
    """A ``tool_use`` block as an OpenAI tool call; arguments are the input as JSON text."""
    arguments = msgspec.json.encode(block.input if block.input is not None else {}).decode()
    return ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments))


def to_chat_response(message: AnthropicMessage, created: int) -> ChatResponse:
    """A Messages API response as a ``chat.completion``.

    Thinking comes back twice: its text as ``reasoning_content`` (what SGLang's reasoning
    parser also fills), and the signed blocks as ``thinking_blocks``, which the client sends
    back on its next assistant turn so a thinking + tools conversation can continue. Blocks
    of other types (server tools, citations' containers) are dropped.
    """
    texts = [b.text for b in message.content if b.type == "text"]
    calls = [to_tool_call(b) for b in message.content if b.type == "tool_use"]
    thinking = [b for b in message.content if b.type in _THINKING_TYPES]
    content = "".join(texts) if texts or not calls else None
    reply = ResponseMessage(content=content, tool_calls=calls or UNSET)
    if thinking:
        reply.reasoning_content = "".join(b.thinking for b in thinking if b.type == "thinking")
        reply.thinking_blocks = [b.thinking_block() for b in thinking]
    choice = ChatChoice(index=0, message=reply, finish_reason=finish_reason(message.stop_reason))
    return ChatResponse(
        id=message.id,
        created=created,
        model=message.model,
        choices=[choice],
        usage=to_usage(message.usage),
    )


# --- stream -------------------------------------------------------------------------------


class StreamTranslator:
    """Turn Anthropic stream events into OpenAI chunks, one event at a time.

    ``error`` events are not handled here: the caller maps them with its error table. After
    ``message_stop`` (``finished``), ``usage_chunk`` gives the closing usage-only chunk.
    """

    def __init__(self, created: int, model: str) -> None:
        self._created = created
        self._model = model
        self._id = ""
        self._usage = AnthropicUsage()
        self._tool_of_block: dict[int, int] = {}  # content block index -> tool call ordinal
        self._thinking_of_block: dict[int, list[str]] = {}  # block index -> thinking so far
        self.finished = False
        self._handlers: dict[str, Callable[[StreamEvent], list[ChatChunk]]] = {
            "message_start": self._on_message_start,
            "content_block_start": self._on_block_start,
            "content_block_delta": self._on_block_delta,
            "message_delta": self._on_message_delta,
            "message_stop": self._on_message_stop,
        }

    def feed(self, event: StreamEvent) -> list[ChatChunk]:
        """The chunks one event produces (none for ``ping``, ``content_block_stop``, ...)."""
        handler = self._handlers.get(event.type)
        return handler(event) if handler else []

    def usage_chunk(self) -> ChatChunk:
        """The usage-only chunk (no choices) that closes every stream."""
        return ChatChunk(
            id=self._id,
            created=self._created,
            model=self._model,
            choices=[],
            usage=to_usage(self._usage),
        )

    def _chunk(self, delta: Delta, finish: str | None = None) -> ChatChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatChunk(id=self._id, created=self._created, model=self._model, choices=[choice])

    def _on_message_start(self, event: StreamEvent) -> list[ChatChunk]:
        if event.message is not None:
            self._id = event.message.id
            self._model = event.message.model or self._model
            self._merge_usage(event.message.usage)
        return [self._chunk(Delta(role="assistant", content=""))]

    def _on_block_start(self, event: StreamEvent) -> list[ChatChunk]:
        block = event.content_block
        if block is None:
            return []
        if block.type == "text":
            return [self._chunk(Delta(content=block.text))] if block.text else []
        if block.type == "thinking":
            self._thinking_of_block[event.index] = [block.thinking]
            return [self._chunk(Delta(reasoning_content=block.thinking))] if block.thinking else []
        if block.type == "redacted_thinking":
            return [self._chunk(Delta(thinking_blocks=[block.thinking_block()]))]
        if block.type != "tool_use":
            return []
        index = self._tool_of_block[event.index] = len(self._tool_of_block)
        call = ToolCallDelta(
            index=index,
            id=block.id,
            type="function",
            function={"name": block.name, "arguments": ""},
        )
        return [self._chunk(Delta(tool_calls=[call]))]

    def _on_block_delta(self, event: StreamEvent) -> list[ChatChunk]:
        delta = event.delta
        if delta is None:
            return []
        if delta.type == "text_delta" and delta.text:
            return [self._chunk(Delta(content=delta.text))]
        thinking = self._thinking_of_block.get(event.index)
        if delta.type == "thinking_delta" and delta.thinking and thinking is not None:
            thinking.append(delta.thinking)
            return [self._chunk(Delta(reasoning_content=delta.thinking))]
        if delta.type == "signature_delta" and thinking is not None:
            # the signature closes the block: the client gets it whole, ready to send back
            block = {"type": "thinking", "thinking": "".join(thinking), "signature": delta.signature}
            return [self._chunk(Delta(thinking_blocks=[block]))]
        index = self._tool_of_block.get(event.index)
        if delta.type == "input_json_delta" and delta.partial_json and index is not None:
            call = ToolCallDelta(index=index, function={"arguments": delta.partial_json})
            return [self._chunk(Delta(tool_calls=[call]))]
        return []  # citation deltas have no OpenAI counterpart

    def _on_message_delta(self, event: StreamEvent) -> list[ChatChunk]:
        if event.usage is not None:
            self._merge_usage(event.usage)
        if event.delta is None or event.delta.stop_reason is None:
            return []
        return [self._chunk(Delta(), finish_reason(event.delta.stop_reason))]

    def _on_message_stop(self, event: StreamEvent) -> list[ChatChunk]:
        self.finished = True
        return []

    def _merge_usage(self, usage: AnthropicUsage) -> None:
        # message_delta counts are cumulative: a field it sets replaces the earlier value
        for field in AnthropicUsage.__struct_fields__:
            value = getattr(usage, field)
            if value is not None:
                setattr(self._usage, field, value)
