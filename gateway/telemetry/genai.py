"""Captured content in the OpenTelemetry GenAI message schema.

With ``observability.capture_content`` on, the inference span carries
``gen_ai.input.messages``, ``gen_ai.system_instructions`` and ``gen_ai.output.messages`` as
JSON strings shaped as the GenAI semantic conventions define them (``docs/gen-ai/
gen-ai-input-messages.json``, ``gen-ai-output-messages.json`` and
``gen-ai-system-instructions.json`` in open-telemetry/semantic-conventions): a list of
messages, each a ``role`` and a list of typed ``parts`` (``text``, ``tool_call``,
``tool_call_response``, ``reasoning``, ``uri``, ``blob``, or any other ``type``), and a
``finish_reason`` on each output message.

The messages are built from the request as the gateway parsed it (OpenAI chat or text
completion JSON), never copied from the raw body, and from the answer's text.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["content_attributes_of_request", "output_messages"]

_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

# OpenAI's finish reasons that the conventions name differently
_FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}
# providers whose API takes system instructions apart from the chat history: there the
# conventions want them in gen_ai.system_instructions, elsewhere as system-role messages
_SEPARATE_SYSTEM = frozenset({"anthropic"})
_SYSTEM_ROLES = frozenset({"system", "developer"})


def _arguments(raw: Any) -> Any:
    """Tool-call arguments as a JSON value when they parse, else the string as sent."""
    if isinstance(raw, str):
        try:
            return _DECODER.decode(raw)
        except msgspec.DecodeError:
            return raw
    return raw


def _tool_call(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    function = call.get("function")
    if isinstance(function, dict):
        name, arguments = function.get("name"), _arguments(function.get("arguments"))
    else:
        custom = call.get("custom")  # OpenAI custom tools: free-form input
        if not isinstance(custom, dict):
            return None
        name, arguments = custom.get("name"), custom.get("input")
    return {"type": "tool_call", "id": call.get("id") if isinstance(call.get("id"), str) else None,
            "name": name if isinstance(name, str) else "", "arguments": arguments}


def _media_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if isinstance(url, str) and url.startswith("data:"):
            header, _, data = url.partition(",")
            return {"type": "blob", "modality": "image", "mime_type": header[5:].split(";")[0] or None,
                    "content": data}
        return {"type": "uri", "modality": "image", "uri": url if isinstance(url, str) else ""}
    if kind == "input_audio":
        audio = part.get("input_audio")
        audio = audio if isinstance(audio, dict) else {}
        fmt = audio.get("format")
        return {"type": "blob", "modality": "audio", "mime_type": f"audio/{fmt}" if isinstance(fmt, str) else None,
                "content": audio.get("data") if isinstance(audio.get("data"), str) else ""}
    return {**part, "type": kind if isinstance(kind, str) else "unknown"}  # any other part, as a generic one


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    if not isinstance(content, list):
        return []
    parts = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "content": part["text"]})
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "refusal", "content": part["refusal"]})
        else:
            parts.append(_media_part(part))
    return parts


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    role = role if isinstance(role, str) else "user"
    if role in ("tool", "function"):
        text = "".join(p["content"] for p in _content_parts(message.get("content")) if p["type"] == "text")
        call_id = message.get("tool_call_id")
        return {"role": "tool", "parts": [{"type": "tool_call_response",
                                           "id": call_id if isinstance(call_id, str) else None,
                                           "response": text}]}
    parts: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    parts += _content_parts(message.get("content"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "content": refusal})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        part = _tool_call(call)
        if part is not None:
            parts.append(part)
    return {"role": role, "parts": parts}


def _prompt_parts(prompt: Any) -> list[dict[str, Any]]:
    """A text completion's ``prompt``: a string, a batch of strings, or token ids."""
    if isinstance(prompt, str):
        return [{"type": "text", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return [{"type": "text", "content": p} for p in prompt]
    return [{"type": "token_ids", "content": prompt}]


def content_attributes_of_request(body: bytes, provider: str) -> tuple[str, str | None]:
    """``gen_ai.input.messages`` and ``gen_ai.system_instructions`` (or ``None``) of a request.

    Args:
        body: The request as the client sent it (an OpenAI chat or text completion body).
        provider: ``gen_ai.provider.name`` of the upstream that answered: for one whose API takes
            system instructions apart (Anthropic), system and developer messages become
            ``gen_ai.system_instructions``; elsewhere they stay in the history, as sent.
    """
    try:
        request = _DECODER.decode(body)
    except msgspec.DecodeError:
        request = {}
    request = request if isinstance(request, dict) else {}
    messages: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    if "messages" in request:
        raw = request["messages"]
        for message in raw if isinstance(raw, list) else ():
            if not isinstance(message, dict):
                continue
            if provider in _SEPARATE_SYSTEM and message.get("role") in _SYSTEM_ROLES:
                system += _content_parts(message.get("content"))
            else:
                messages.append(_message(message))
    elif "prompt" in request:
        messages.append({"role": "user", "parts": _prompt_parts(request["prompt"])})
    return (_ENCODER.encode(messages).decode("utf-8"),
            _ENCODER.encode(system).decode("utf-8") if system else None)


def output_messages(text: str | None, finish_reasons: list[str], failed: bool) -> str:
    """``gen_ai.output.messages``: the answer's first choice as one assistant message.

    Args:
        text: The generated text (before moderation), ``None`` when nothing was generated.
        finish_reasons: The choices' finish reasons; OpenAI's ``tool_calls`` becomes ``tool_call``.
        failed: The answer ended with an error: its finish reason is ``error`` when the
            upstream gave none.
    """
    reason = finish_reasons[0] if finish_reasons else ("error" if failed else "stop")
    parts = [{"type": "text", "content": text}] if text else []
    message = {"role": "assistant", "parts": parts, "finish_reason": _FINISH_REASONS.get(reason, reason)}
    return _ENCODER.encode([message]).decode("utf-8")
