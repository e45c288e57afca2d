"""Anthropic Messages answers out: a canonical answer as a ``Message``, errors in Anthropic's shape.

From an Anthropic backend the answer comes with the ``Message`` Anthropic sent (see
``backends.anthropic.NATIVE_MESSAGE``); it is re-emitted with the public model name while the
translated answer still says the same (no moderation or cache isolation changed it). Every
other answer is rendered from the canonical one. The stream encoder lives in
``gateway.doors.anthropic_stream``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from backends import open_wire
from backends.anthropic import NATIVE_MESSAGE, answer_fingerprint
from backends.errors import SwitchyardError
from backends.types import ChatRequest, ChatResponse, JSONObject, PromptTokensDetails, ToolCall, Usage

__all__ = ["error_body", "error_payload", "message", "render_answer", "stop_reason", "usage_of"]

_ENCODER = msgspec.json.Encoder()
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
# Anthropic's error types by status; anything else: invalid_request_error below 500, else api_error
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                500: "api_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def error_payload(error: SwitchyardError) -> JSONObject:
    """``{"type": "error", "error": {"type", "message"}}``, the type chosen by status."""
    status = error.status_code
    kind = _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def error_body(error: SwitchyardError) -> bytes:
    """An error as Anthropic's error body (the SDK raises the class of its status)."""
    return _ENCODER.encode(error_payload(error))


def stop_reason(finish_reason: str | None, matched: object, stops: object) -> tuple[str, str | None]:
    """OpenAI's ``finish_reason`` as Anthropic's ``stop_reason`` and ``stop_sequence``.

    ``stop`` is ``stop_sequence`` when the upstream says which stop string ended the output
    (SGLang's ``matched_stop``) and the client asked for it; otherwise ``end_turn``.
    """
    if finish_reason == "stop" and isinstance(matched, str) and isinstance(stops, list) and matched in stops:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish_reason or "", "end_turn"), None


def usage_of(usage: Usage | None) -> JSONObject:
    """Anthropic's usage: ``input_tokens`` excludes cache reads and writes (OpenAI's includes)."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.prompt_tokens_details
    written = details.cache_write_tokens if isinstance(details, PromptTokensDetails) else None
    written = written if isinstance(written, int) else 0
    read = usage.cached_tokens
    return {"input_tokens": max(usage.prompt_tokens - read - written, 0), "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read}


def message_id(answer_id: str) -> str:
    """Anthropic's ids start with ``msg_``; an upstream's own id is kept after it."""
    return answer_id if answer_id.startswith("msg_") else f"msg_{answer_id}"


def tool_input(call: ToolCall) -> JSONObject:
    """A tool call's JSON arguments as ``tool_use.input`` (an object)."""
    try:
        value = msgspec.json.decode(call.arguments) if call.arguments.strip() else {}
    except msgspec.DecodeError:
        return {"arguments": call.arguments}  # not JSON: the model's text, kept rather than lost
    return value if isinstance(value, dict) else {"value": value}


def message(answer: ChatResponse, call: ChatRequest) -> JSONObject:
    """A canonical chat answer as an Anthropic ``Message`` (its first choice)."""
    choice = answer.choices[0] if answer.choices else None
    content: list[JSONObject] = []
    finish: str | None = None
    matched: object = None
    if choice is not None:
        reply, finish = choice.message, choice.finish_reason
        matched = open_wire.unknown(choice).get("matched_stop")
        if isinstance(reply.thinking_blocks, list) and reply.thinking_blocks:
            content += [dict(b) for b in reply.thinking_blocks]
        elif isinstance(reply.reasoning_content, str) and reply.reasoning_content:
            content.append({"type": "thinking", "thinking": reply.reasoning_content, "signature": ""})
        if reply.content:
            content.append({"type": "text", "text": reply.content})
        for tool_call in reply.tool_calls if isinstance(reply.tool_calls, list) else ():
            content.append({"type": "tool_use", "id": tool_call.id, "name": tool_call.name,
                            "input": tool_input(tool_call)})
    reason, sequence = stop_reason(finish, matched, call.params.stop)
    return {"id": message_id(answer.id), "type": "message", "role": "assistant", "model": answer.model,
            "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": usage_of(answer.usage if isinstance(answer.usage, Usage) else None)}


def render_answer(answer: ChatResponse, call: ChatRequest) -> bytes:
    """The response body: Anthropic's own ``Message`` when it still holds, else the rendering."""
    native: Any = answer.__dict__.get(NATIVE_MESSAGE)
    if native is not None:
        original, fingerprint = native
        if fingerprint == answer_fingerprint(answer):
            return _ENCODER.encode({**original, "model": answer.model})
    return _ENCODER.encode(message(answer, call))
