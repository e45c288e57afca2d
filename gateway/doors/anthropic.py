"""Anthropic's Messages API as a front door: ``POST /v1/messages`` over the canonical chat path.

The request is translated into the canonical chat request (``anthropic_wire``) and served by
the same stages as OpenAI chat; the answer and stream go back as a ``Message`` and Anthropic's
events (``anthropic_render``, ``anthropic_stream``), errors as ``{"type": "error", ...}``.
The key comes as ``x-api-key`` or ``Authorization: Bearer`` (the SDK 2.17 sends the latter).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from backends.types import ChatChunk, ChatRequest, ChatResponse
from gateway.doors.anthropic_render import error_body, render_answer
from gateway.doors.anthropic_stream import AnthropicStream
from gateway.doors.anthropic_wire import parse_messages
from gateway.doors.base import Door
from gateway.operations import CHAT

__all__ = ["ANTHROPIC_MESSAGES", "FORWARDED_HEADERS", "api_key", "messages_door"]

FORWARDED_HEADERS = ("anthropic-beta",)
"""Client headers passed on to Anthropic backends with the native body."""


def api_key(headers: Mapping[str, str]) -> str | None:
    """``x-api-key`` (as ``Bearer <key>``), else ``Authorization``."""
    key = headers.get("x-api-key")
    return f"Bearer {key}" if key else headers.get("authorization")


def _stream(call: ChatRequest) -> AnthropicStream:
    return AnthropicStream(call)


ANTHROPIC_MESSAGES: Door[ChatRequest, ChatResponse, ChatChunk] = Door(
    "messages", CHAT, parse_messages, render_answer, _stream, error_body, api_key)


def messages_door(headers: Mapping[str, str]) -> Door[ChatRequest, ChatResponse, ChatChunk]:
    """The door for one request: its parse keeps the protocol headers to pass on."""
    forwarded = {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}
    if not forwarded:
        return ANTHROPIC_MESSAGES
    return dataclasses.replace(ANTHROPIC_MESSAGES, parse=functools.partial(parse_messages, headers=forwarded))
