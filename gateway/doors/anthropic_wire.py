"""Anthropic Messages requests in: a ``POST /v1/messages`` body as the canonical chat request.

The body is validated against the fields the gateway reads (msgspec structs, open to fields
they do not declare) and translated into OpenAI chat terms, the canonical request every stage
of the path works on. The body itself travels along (``ChatRequest.native``): an Anthropic
backend sends it as the client wrote it, so ``cache_control`` and fields the gateway does not
model survive; other backends get the translation.

What the translation does (the opposite direction of ``backends.anthropic_translate``):

* ``system`` (a string or text blocks) becomes one system message.
* A user turn's ``tool_result`` blocks become ``tool`` messages, placed before the rest of the
  turn (OpenAI wants them right after the assistant turn that called the tools).
* An assistant turn's ``tool_use`` blocks become ``tool_calls``; its signed ``thinking`` and
  ``redacted_thinking`` blocks become ``thinking_blocks`` (and the thinking text
  ``reasoning_content``), which ``anthropic_translate`` sends back as they were.
* Images become ``image_url`` parts (base64 sources as ``data:`` URLs).
* ``thinking`` becomes ``reasoning_effort`` (the smallest effort whose budget covers
  ``budget_tokens``, ``anthropic_translate.THINKING_BUDGETS``); ``top_k`` is passed as an extra.
* Block types without an OpenAI counterpart (documents, server tools' blocks, ...) and server
  tools are refused with a 400 that names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from backends.anthropic_translate import THINKING_BUDGETS
from backends.errors import InvalidRequestError, UnsupportedError
from backends.types import (
    ChatParams,
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONObject,
    Message,
    NativeBody,
    StreamOptions,
    TextPart,
    Tool,
    ToolCall,
)
from gateway.wire import decode_object, validated

__all__ = ["PROTOCOL", "CountTokensBody", "MessagesBody", "parse_count_tokens", "parse_messages", "to_chat"]

PROTOCOL = "anthropic.messages"
"""``NativeBody.protocol`` of a Messages API body."""

_THINKING_TYPES = ("thinking", "redacted_thinking")
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


class _Open(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    """Undeclared fields are accepted: they stay in the native body."""


class ImageSource(_Open):
    type: str
    media_type: str | UnsetType = UNSET
    data: str | UnsetType = UNSET
    url: str | UnsetType = UNSET


class Block(_Open):
    """One content block, flat: which fields matter depends on ``type``."""

    type: str
    text: str | UnsetType = UNSET
    source: ImageSource | UnsetType = UNSET
    id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    input: Any = UNSET
    tool_use_id: str | UnsetType = UNSET
    content: str | list[Block] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET
    thinking: str | UnsetType = UNSET
    signature: str | UnsetType = UNSET
    data: str | UnsetType = UNSET


class Turn(_Open):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(_Open):
    name: Annotated[str, Meta(min_length=1)]
    type: str | None | UnsetType = UNSET
    description: str | UnsetType = UNSET
    input_schema: JSONObject | UnsetType = UNSET


class ToolChoiceParam(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ThinkingParam(_Open):
    type: str
    budget_tokens: int | UnsetType = UNSET


class MetadataParam(_Open):
    user_id: str | None | UnsetType = UNSET


class CountTokensBody(_Open, kw_only=True):
    """The fields of ``POST /v1/messages/count_tokens`` the gateway reads."""

    model: str
    messages: Annotated[list[Turn], Meta(min_length=1)]
    system: str | list[Block] | UnsetType = UNSET
    tools: list[ToolParam] | UnsetType = UNSET
    tool_choice: ToolChoiceParam | UnsetType = UNSET
    thinking: ThinkingParam | UnsetType = UNSET


class MessagesBody(CountTokensBody, kw_only=True):
    """The fields of ``POST /v1/messages`` the gateway reads (``max_tokens`` is required)."""

    max_tokens: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    temperature: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    top_k: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    metadata: MetadataParam | UnsetType = UNSET




def parse_messages(body: bytes, headers: Mapping[str, str] | None = None) -> ChatRequest:
    """A ``/v1/messages`` body as the canonical chat request, the body itself kept native.

    Args:
        body: The request body.
        headers: Protocol headers to pass on to an Anthropic backend (``anthropic-beta``).

    Raises:
        InvalidJSONError: not a JSON object.
        InvalidRequestError: a field is missing or has the wrong shape.
        UnsupportedError: a block type or tool the translation cannot carry.
    """
    data = decode_object(body)
    parsed = validated(data, MessagesBody)
    call = to_chat(parsed)
    native = NativeBody(PROTOCOL, data, call.params.messages, dict(headers or {}))
    return msgspec.structs.replace(call, native=native)


def parse_count_tokens(body: bytes) -> ChatRequest:
    """A ``/v1/messages/count_tokens`` body as a canonical chat request (for counting only)."""
    return to_chat(validated(decode_object(body), CountTokensBody))


def to_chat(body: CountTokensBody) -> ChatRequest:
    """The canonical chat request a Messages body means (see the module docstring)."""
    messages = _system(body.system)
    for i, turn in enumerate(body.messages):
        messages += _turn(turn, f"messages.{i}")
    params = ChatParams(model=body.model, messages=messages)
    extra: JSONObject = {}
    if isinstance(body.tools, list) and body.tools:
        params.tools = [_tool(t, f"tools.{i}") for i, t in enumerate(body.tools)]
    if isinstance(body.tool_choice, ToolChoiceParam):
        _tool_choice(params, body.tool_choice)
    effort = _effort(body.thinking)
    if effort is not None:
        extra["reasoning_effort"] = effort
    if isinstance(body, MessagesBody):
        _sampling(params, extra, body)
    return ChatRequest(params=params, extra=extra)


def _sampling(params: ChatParams, extra: JSONObject, body: MessagesBody) -> None:
    params.max_tokens = body.max_tokens
    if body.stream is True:
        params.stream = True
        params.stream_options = StreamOptions(include_usage=True)  # usage ends every Anthropic stream
    if isinstance(body.stop_sequences, list) and body.stop_sequences:
        params.stop = list(body.stop_sequences)
    if isinstance(body.temperature, (int, float)):
        params.temperature = body.temperature
    if isinstance(body.top_p, (int, float)):
        params.top_p = body.top_p
    if isinstance(body.top_k, int):
        extra["top_k"] = body.top_k
    if isinstance(body.metadata, MetadataParam) and isinstance(body.metadata.user_id, str):
        params.user = body.metadata.user_id


def _system(system: str | list[Block] | UnsetType) -> list[Message]:
    if isinstance(system, str):
        return [Message(role="system", content=system)] if system else []
    if not isinstance(system, list):
        return []
    texts = []
    for i, block in enumerate(system):
        if block.type != "text" or not isinstance(block.text, str):
            raise InvalidRequestError(f"system.{i}: system blocks are text blocks", param=f"system.{i}")
        texts.append(block.text)
    text = "\n\n".join(t for t in texts if t)
    return [Message(role="system", content=text)] if text else []


def _turn(turn: Turn, where: str) -> list[Message]:
    if isinstance(turn.content, str):
        return [Message(role=turn.role, content=turn.content)]
    if turn.role == "assistant":
        return [_assistant(turn.content, where)]
    results: list[Message] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(turn.content):
        path = f"{where}.content.{j}"
        if block.type == "tool_result":
            results.append(_tool_result(block, path))
        else:
            parts.append(_part(block, path))
    if parts:
        results.append(Message(role="user", content=parts))
    return results


def _assistant(blocks: list[Block], where: str) -> Message:
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    thinking: list[JSONObject] = []
    for j, block in enumerate(blocks):
        path = f"{where}.content.{j}"
        if block.type == "tool_use":
            calls.append(_tool_call(block, path))
        elif block.type in _THINKING_TYPES:
            thinking.append(msgspec.to_builtins(block))
        else:
            parts.append(_part(block, path))
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    message = Message(role="assistant", content=text if text or not calls else None)
    if calls:
        message.tool_calls = calls
    if thinking:
        message.thinking_blocks = thinking
        message.reasoning_content = "".join(b.get("thinking", "") for b in thinking)
    return message


def _part(block: Block, where: str) -> ContentPart:
    if block.type == "text":
        if not isinstance(block.text, str):
            raise InvalidRequestError(f"{where}.text: Field required", param=f"{where}.text")
        return TextPart(text=block.text)
    if block.type == "image":
        return ImagePart(image_url=ImageURL(url=_image_url(block.source, where)))
    raise UnsupportedError(f"{where}: '{block.type}' blocks are not supported by this gateway",
                           param=f"{where}.type")


def _image_url(source: ImageSource | UnsetType, where: str) -> str:
    if isinstance(source, ImageSource):
        if source.type == "base64" and isinstance(source.media_type, str) and isinstance(source.data, str):
            return f"data:{source.media_type};base64,{source.data}"
        if source.type == "url" and isinstance(source.url, str):
            return source.url
    raise InvalidRequestError(f"{where}.source: an image source is base64 (media_type, data) or a url",
                              param=f"{where}.source")


def _tool_result(block: Block, where: str) -> Message:
    if not isinstance(block.tool_use_id, str) or not block.tool_use_id:
        raise InvalidRequestError(f"{where}.tool_use_id: Field required", param=f"{where}.tool_use_id")
    content = block.content
    if isinstance(content, list):
        parts = [_part(b, f"{where}.content.{k}") for k, b in enumerate(content)]
        text = "".join(p.text for p in parts if isinstance(p, TextPart))
        body: str | list[ContentPart] = text if all(isinstance(p, TextPart) for p in parts) else parts
    else:
        body = content if isinstance(content, str) else ""
    if block.is_error is True and isinstance(body, str):
        body = f"Error: {body}"  # OpenAI's tool message has no error flag: the text says it
    return Message(role="tool", tool_call_id=block.tool_use_id, content=body)


def _tool_call(block: Block, where: str) -> ToolCall:
    if not isinstance(block.id, str) or not isinstance(block.name, str):
        raise InvalidRequestError(f"{where}: a tool_use block needs id and name", param=where)
    arguments = msgspec.json.encode(block.input if isinstance(block.input, dict) else {}).decode()
    return ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments))


def _tool(tool: ToolParam, where: str) -> Tool:
    if tool.type not in (UNSET, None, "custom"):
        raise UnsupportedError(f"{where}: server tools ('{tool.type}') are not supported by this gateway",
                               param=f"{where}.type")
    if not isinstance(tool.input_schema, dict):
        raise InvalidRequestError(f"{where}.input_schema: Field required", param=f"{where}.input_schema")
    definition = FunctionDef(name=tool.name, parameters=tool.input_schema)
    if isinstance(tool.description, str):
        definition.description = tool.description
    return Tool(function=definition)


def _tool_choice(params: ChatParams, choice: ToolChoiceParam) -> None:
    if choice.type == "tool":
        if not isinstance(choice.name, str):
            raise InvalidRequestError("tool_choice.name: Field required", param="tool_choice.name")
        params.tool_choice = {"type": "function", "function": {"name": choice.name}}
    else:
        params.tool_choice = _TOOL_CHOICES[choice.type]
    if choice.disable_parallel_tool_use is True and params.tools:
        params.parallel_tool_calls = False


def _effort(thinking: ThinkingParam | UnsetType) -> str | None:
    """``thinking`` as OpenAI's ``reasoning_effort``: the smallest effort covering the budget."""
    if not isinstance(thinking, ThinkingParam) or thinking.type == "disabled":
        return None
    if thinking.type == "enabled" and not isinstance(thinking.budget_tokens, int):
        raise InvalidRequestError("thinking.budget_tokens: Field required", param="thinking.budget_tokens")
    budget = thinking.budget_tokens if isinstance(thinking.budget_tokens, int) else THINKING_BUDGETS["medium"]
    fitting = [effort for effort, tokens in THINKING_BUDGETS.items() if tokens >= budget]
    return fitting[0] if fitting else "max"
