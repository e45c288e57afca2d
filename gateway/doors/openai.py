"""OpenAI's chat completions and legacy completions: the canonical requests themselves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends import open_wire
from backends.errors import SwitchyardError
from backends.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    TextRequest,
    TextResponse,
)
from gateway.doors.base import Door
from gateway.errors import error_body
from gateway.operations import CHAT, TEXT
from gateway.sse import DONE, encode_error_event, encode_event


class OpenAIStream:
    """OpenAI's SSE framing: ``data: {chunk}`` per chunk, ``data: [DONE]`` at the end."""

    def chunk(self, chunk: Any) -> bytes:
        return encode_event(chunk)

    def done(self) -> bytes:
        return DONE

    def error(self, error: SwitchyardError) -> bytes:
        return encode_error_event(error)  # the openai SDK raises APIError on it


def _stream(_: object) -> OpenAIStream:
    return _OPENAI_STREAM


def _answer(answer: Any, _: object) -> bytes:
    return open_wire.encode(answer)


def bearer(headers: Mapping[str, str]) -> str | None:
    """OpenAI's ``Authorization: Bearer <key>``."""
    return headers.get("authorization")


_OPENAI_STREAM = OpenAIStream()

OPENAI_CHAT: Door[ChatRequest, ChatResponse, ChatChunk] = Door(
    "chat.completions", CHAT, CHAT.parse, _answer, _stream, error_body, bearer)
OPENAI_TEXT: Door[TextRequest, TextResponse, TextResponse] = Door(
    "completions", TEXT, TEXT.parse, _answer, _stream, error_body, bearer)
