"""Request bodies in, typed requests out: JSON decoding and validation with OpenAI's errors."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from backends import open_wire
from backends.errors import InvalidJSONError, InvalidRequestError
from backends.types import (
    ChatParams,
    ChatRequest,
    EmbeddingParams,
    EmbeddingRequest,
    TextParams,
    TextRequest,
)

P = TypeVar("P", ChatParams, TextParams, EmbeddingParams)

S = TypeVar("S")
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_PATH = re.compile(r" - at `\$\.?(.*)`$")


def decode_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or ``InvalidJSONError`` saying what is wrong with it
    (every door decodes its body here first)."""
    if not body:
        raise InvalidJSONError("The request body is empty; send a JSON object.")
    try:
        return _OBJECT.decode(body)
    except UnicodeDecodeError:
        raise InvalidJSONError("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise InvalidJSONError("The request body is nested too deeply.") from None
    except msgspec.DecodeError as exc:
        raise InvalidJSONError(f"The request body is not a JSON object: {exc}") from None


def validated(data: dict[str, Any], cls: type[S]) -> S:
    """``data`` as ``cls``, or ``InvalidRequestError`` naming the bad field (``param``)."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        param = match.group(1) if match else None
        message = _PATH.sub("", text)
        raise InvalidRequestError(f"{param}: {message}" if param else message, param=param) from None


def _convert(data: dict[str, Any], cls: type[P]) -> tuple[P, dict[str, Any]]:
    """The known fields as ``cls`` (nested undeclared fields kept on their structs, see
    ``backends.open_wire``) and the unknown top-level fields, passed through as ``extra``."""
    params = validated(data, cls)
    extra: dict[str, Any] = {}
    if open_wire.adopt(params, data):
        extra = dict(open_wire.unknown(params))
        params.__dict__[open_wire.UNKNOWN] = {}  # the top level's own go out as ``extra``
    return params, extra


def _parse(body: bytes, cls: type[P]) -> tuple[P, dict[str, Any]]:
    """``body`` as ``cls`` and its unknown top-level fields: in C when every key in it is
    declared (most requests; ``open_wire.decode_declared``), else decoded, validated and walked
    by ``_convert``, which also says what is wrong with a body that does not fit."""
    params = open_wire.decode_declared(body, cls)
    if params is not None:
        return params, {}
    return _convert(decode_object(body), cls)


def _check_tools(params: ChatParams) -> None:
    for index, tool in enumerate(params.tools or ()):
        if tool.type == "function" and tool.function is msgspec.UNSET:
            raise InvalidRequestError(f"tools[{index}].function: a function tool needs its definition",
                                      param=f"tools[{index}].function")
        if tool.type == "custom" and not isinstance(tool.custom, dict):
            raise InvalidRequestError(f"tools[{index}].custom: a custom tool needs its definition",
                                      param=f"tools[{index}].custom")


def _check_messages(params: ChatParams) -> None:
    """Rules the schema alone cannot say, as OpenAI enforces them."""
    for index, message in enumerate(params.messages):
        if (message.content is None or message.content is msgspec.UNSET) and not (message.role == "assistant" and message.tool_calls):
            raise InvalidRequestError(
                f"messages[{index}].content: null content is only allowed for an assistant "
                "message with tool_calls", param=f"messages[{index}].content")
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidRequestError(
                f"messages[{index}].tool_call_id: a tool message must name the call it answers",
                param=f"messages[{index}].tool_call_id")


def parse_chat(body: bytes) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body; unknown top-level fields are kept as extras."""
    params, extra = _parse(body, ChatParams)
    _check_messages(params)
    _check_tools(params)
    return ChatRequest(params=params, extra=extra)


MAX_TOKEN_ID = 2**31 - 1
"""Token ids are int32 in every tokenizer the backends use; larger or negative ones are refused
here rather than crashing a worker."""


def _is_token(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKEN_ID


def _is_prompt_list(prompt: list[Any]) -> bool:
    kinds = {type(item) for item in prompt}
    if kinds <= {str}:
        return True
    if kinds <= {int}:
        return all(_is_token(t) for t in prompt)
    return kinds == {list} and all(_is_token(t) for item in prompt for t in item)


def parse_text(body: bytes) -> TextRequest:
    """Validate a ``/v1/completions`` body; unknown top-level fields are kept as extras."""
    params, extra = _parse(body, TextParams)
    if isinstance(params.prompt, list) and not _is_prompt_list(params.prompt):
        raise InvalidRequestError(
            "prompt: must be a string, or a list of strings, of token ids (0 to 2**31-1) or of token-id lists",
            param="prompt")
    return TextRequest(params=params, extra=extra)


MAX_EMBEDDING_INPUTS = 2048
"""Inputs per embeddings request, as OpenAI documents it."""


def _embedding_input_problem(value: str | list[Any]) -> str | None:
    """Why ``input`` is not one of OpenAI's four forms, or None."""
    if isinstance(value, str):
        return None if value else "must not be an empty string"
    if not value:
        return "must not be an empty list"
    if len(value) > MAX_EMBEDDING_INPUTS:
        return f"at most {MAX_EMBEDDING_INPUTS} inputs per request"
    kinds = {type(item) for item in value}
    if kinds == {str}:
        return None if all(value) else "must not contain an empty string"
    if kinds == {int}:
        return None if all(_is_token(t) for t in value) else "token ids must be 0 to 2**31-1"
    if kinds == {list}:
        if not all(value):
            return "must not contain an empty token array"
        return None if all(_is_token(t) for item in value for t in item) else "token ids must be 0 to 2**31-1"
    return "must be a string, a list of strings, a token array or a list of token arrays"


def parse_embeddings(body: bytes) -> EmbeddingRequest:
    """Validate a ``/v1/embeddings`` body; unknown top-level fields are kept as extras."""
    params, extra = _parse(body, EmbeddingParams)
    problem = _embedding_input_problem(params.input)
    if problem is not None:
        raise InvalidRequestError(f"input: {problem}", param="input")
    return EmbeddingRequest(params=params, extra=extra)
