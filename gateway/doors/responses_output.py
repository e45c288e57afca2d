"""The canonical chat answer as a Responses ``response`` object.

``Echo`` holds what every response of one request repeats from the request (model,
instructions, tools, sampling, ``text``, ``metadata``, ...), so the JSON answer and each
stream event's snapshot say the same. ``output_items`` turns an assistant message into output
items in OpenAI's order: reasoning, the message, then one ``function_call`` per tool call.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from backends import open_wire
from backends.types import PromptTokensDetails, ResponseMessage, Usage
from gateway.doors.responses_input import THINKING_PREFIX, ResponsesBody

__all__ = ["Echo", "new_id", "output_items", "status_of", "usage_object"]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``resp_``, ``msg_``, ``fc_``, ``rs_`` + 48 hex digits)."""
    return f"{prefix}_{os.urandom(24).hex()}"


@dataclass
class Echo:
    """What one request's response objects repeat from the request."""

    body: ResponsesBody
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    model: str = ""
    """The public model that answered (a difficulty route's tier); the asked name until then."""

    def response(self, status: str, output: list[Any], usage: Usage | None = None,
                 incomplete: str | None = None, error: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``response`` object with ``status`` and ``output``."""
        body = self.body
        out: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "model": self.model or body.model, "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": _reasoning_echo(body.reasoning), "metadata": body.metadata or {},
            "temperature": body.temperature, "top_p": body.top_p,
            "text": {"format": {"type": "text"}, **(body.text or {})},
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": [_tool_echo(t) for t in body.tools or ()],
            "truncation": body.truncation or "disabled", "store": body.store is True,
        }
        if body.user is not None:
            out["user"] = body.user
        if usage is not None:
            out["usage"] = usage_object(usage)
        return out


def _reasoning_echo(reasoning: dict[str, Any] | None) -> dict[str, Any] | None:
    if not reasoning:
        return None
    return {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def _tool_echo(tool: dict[str, Any]) -> dict[str, Any]:
    # the spec's FunctionTool has ``strict`` and ``parameters`` always present (nullable)
    return {"type": "function", "name": tool.get("name"), "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def status_of(finish_reason: str | None) -> tuple[str, str | None]:
    """Response status and ``incomplete_details.reason`` for a chat finish reason."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def usage_object(usage: Usage) -> dict[str, Any]:
    """Chat usage in Responses' names (input, output, cached and reasoning tokens)."""
    details = usage.prompt_tokens_details
    written = details.cache_write_tokens if isinstance(details, PromptTokensDetails) else None
    output_details = open_wire.unknown(usage).get("completion_tokens_details")
    reasoning = output_details.get("reasoning_tokens") if isinstance(output_details, dict) else None
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": written if isinstance(written, int) else 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning if isinstance(reasoning, int) else 0},
            "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens}


def reasoning_item(item_id: str, text: str, thinking: list[dict[str, Any]] | None, status: str) -> dict[str, Any]:
    """A reasoning output item; Anthropic's signed thinking blocks ride in ``encrypted_content``
    so that passing the item back continues a thinking + tools conversation."""
    sealed = None
    if thinking:
        sealed = THINKING_PREFIX + base64.b64encode(msgspec.json.encode(thinking)).decode("ascii")
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if text else [],
            "encrypted_content": sealed, "status": status}


def message_item(item_id: str, text: str, refusal: str | None, status: str) -> dict[str, Any]:
    """An assistant message output item with its text (or refusal) part."""
    part: dict[str, Any] = ({"type": "refusal", "refusal": refusal} if refusal and not text
                            else {"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": [part]}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(message: ResponseMessage, status: str) -> list[dict[str, Any]]:
    """A whole assistant message as output items."""
    items: list[dict[str, Any]] = []
    reasoning = message.reasoning_content if isinstance(message.reasoning_content, str) else ""
    thinking = message.thinking_blocks if isinstance(message.thinking_blocks, list) else None
    if reasoning or thinking:
        items.append(reasoning_item(new_id("rs"), reasoning, thinking, "completed"))
    if message.content or message.refusal or not message.tool_calls:
        items.append(message_item(new_id("msg"), message.content or "", message.refusal, status))
    for call in message.tool_calls or ():
        items.append(call_item(new_id("fc"), call.id, call.name, call.arguments, "completed"))
    return items
