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

from backends.errors import InvalidRequestError, UnsupportedError
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

    Raises:
        UnsupportedError: the request asks for something Anthropic cannot do (``n > 1``,
            logprobs, audio or file parts, legacy ``function`` messages).
        InvalidRequestError: a field cannot be translated (bad tool arguments, image URL).
    """
    p = request.params
    _check_supported(p)
    system, messages = translate_messages(p.messages)
    body: JSONObject = {
        "model": request.upstream_model or p.model,
        "max_tokens": _max_tokens(p.max_completion_tokens, p.max_tokens),
        "messages": messages,
    }
    if system:
        body["system"] = system
    body.update(_sampling(p))
    if isinstance(p.tools, list) and p.tools:
        body["tools"] = [to_anthropic_tool(t) for t in p.tools]
    choice = to_tool_choice(p.tool_choice, p.parallel_tool_calls, has_tools="tools" in body)
    if choice is not None:
        body["tool_choice"] = choice
    if isinstance(p.user, str) and p.user:
        body["metadata"] = {"user_id": p.user}
    # unknown top-level fields pass through as with every backend: this is how a client sends
    # Anthropic-only parameters (top_k, thinking, ...) through an OpenAI SDK's extra_body
    body.update(request.extra)
    if stream:
        body["stream"] = True
    if prompt_caching:
        mark_cacheable_prefix(body)
    return body


def _check_supported(p: ChatParams) -> None:
    if isinstance(p.n, int) and p.n > 1:
        raise UnsupportedError("anthropic deployments do not support n > 1", param="n")
    if p.logprobs is True or isinstance(p.top_logprobs, int):
        raise UnsupportedError("anthropic deployments do not return logprobs", param="logprobs")


def _sampling(p: ChatParams) -> JSONObject:
    # temperature is passed as given: Anthropic's range is [0, 1], and it says so when exceeded
    out: JSONObject = {}
    if isinstance(p.temperature, (int, float)):
        out["temperature"] = p.temperature
    if isinstance(p.top_p, (int, float)):
        out["top_p"] = p.top_p
    if isinstance(p.stop, str):
        out["stop_sequences"] = [p.stop]
    elif isinstance(p.stop, list) and p.stop:
        out["stop_sequences"] = list(p.stop)
    return out


def _max_tokens(max_completion_tokens: object, max_tokens: object) -> int:
    for value in (max_completion_tokens, max_tokens):
        if isinstance(value, int):
            return value
    return DEFAULT_MAX_TOKENS


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
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": LEADING_USER_TEXT}]})
    return "\n\n".join(system), turns


def _turn(message: Message, where: str) -> tuple[str, list[JSONObject]]:
    if message.role == "user":
        return "user", _content_blocks(message.content, where)
    if message.role == "assistant":
        blocks = _content_blocks(message.content, where)
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
    raw = call.function.arguments
    try:
        arguments = msgspec.json.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as exc:
        raise InvalidRequestError("tool call arguments are not JSON", param=where) from exc
    if not isinstance(arguments, dict):
        raise InvalidRequestError("tool call arguments must be a JSON object", param=where)
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


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
    """A Messages API response as a ``chat.completion``; thinking and other blocks are dropped."""
    texts = [b.text for b in message.content if b.type == "text"]
    calls = [to_tool_call(b) for b in message.content if b.type == "tool_use"]
    content = "".join(texts) if texts or not calls else None
    reply = ResponseMessage(content=content, tool_calls=calls or UNSET)
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
        index = self._tool_of_block.get(event.index)
        if delta.type == "input_json_delta" and delta.partial_json and index is not None:
            call = ToolCallDelta(index=index, function={"arguments": delta.partial_json})
            return [self._chunk(Delta(tool_calls=[call]))]
        return []  # thinking, signature and citation deltas have no OpenAI counterpart

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
