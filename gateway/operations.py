"""What differs between the completion endpoints: parsing, rendering, the backend calls.

An ``Operation`` is the door-independent description of one kind of upstream call (chat or
legacy text completion): every stage of the request path takes it as a plain value, so a new
door reuses an operation and adds only its own parsing and encoding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from backends.base import Backend
from backends.types import (
    ChatChoice,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    TextRequest,
    TextResponse,
)
from gateway.wire import parse_chat, parse_text
from router.prompt_text import render_chat, render_text

Req = TypeVar("Req", ChatRequest, TextRequest, EmbeddingRequest)
Resp = TypeVar("Resp", ChatResponse, TextResponse, EmbeddingResponse)
Chunk = TypeVar("Chunk", ChatChunk, TextResponse, EmbeddingResponse)


@dataclass(frozen=True, slots=True)
class Operation(Generic[Req, Resp, Chunk]):
    """One kind of upstream call: how its body is parsed, rendered for routing, and sent."""

    name: str
    """OpenTelemetry's ``gen_ai.operation.name``."""
    parse: Callable[[bytes], Req]
    render: Callable[[Req], tuple[str, int]]
    """The prompt as routing sees it, and its head length (``router.prompt_text``)."""
    complete: Callable[[Backend, Req], Awaitable[Resp]]
    stream: Callable[[Backend, Req], AsyncIterator[Chunk]]
    text: Callable[[Resp | Chunk], str]
    """The first choice's generated text in a response or chunk."""
    model_kind: str = "chat"
    """The ``kind`` of policy model that serves it (``models.<name>.kind``): a request for a
    model of another kind is refused with a 400 before admission."""
    generates: bool = True
    """The upstream generates text: streaming, output moderation, the response cache and
    finish reasons apply. False for an operation that computes an answer (embeddings)."""


def chat_text(answer: ChatResponse | ChatChunk) -> str:
    """The first choice's generated text: reasoning (billed as output) and content."""
    if not answer.choices:
        return ""
    choice = answer.choices[0]
    part = choice.message if isinstance(choice, ChatChoice) else choice.delta
    content, reasoning = part.content, part.reasoning_content
    text = content if isinstance(content, str) else ""
    return reasoning + text if isinstance(reasoning, str) else text


def completion_text(answer: TextResponse) -> str:
    """The first choice's text of a legacy completion or chunk."""
    return answer.choices[0].text if answer.choices else ""


CHAT: Operation[ChatRequest, ChatResponse, ChatChunk] = Operation(
    "chat", parse_chat, lambda r: render_chat(r.params.messages),
    lambda b, r: b.complete(r), lambda b, r: b.stream(r), chat_text)
TEXT: Operation[TextRequest, TextResponse, TextResponse] = Operation(
    "text_completion", parse_text, lambda r: render_text(r.params.prompt),
    lambda b, r: b.complete_text(r), lambda b, r: b.stream_text(r), completion_text)


def messages_of(call: ChatRequest | TextRequest | EmbeddingRequest) -> list[Message]:
    """What the difficulty classifier reads: the chat, or a text prompt (an embedding's
    first input) as one user turn."""
    if isinstance(call, ChatRequest):
        return call.params.messages
    prompt, _ = render_text(call.params.prompt if isinstance(call, TextRequest) else call.params.input)
    return [Message(role="user", content=prompt)]


def request_attributes(params: Any) -> dict[str, Any]:
    """The GenAI request attributes the client set (``gen_ai.request.*``)."""
    out: dict[str, Any] = {}
    for field_name, attribute in _REQUEST_ATTRIBUTES:
        value = getattr(params, field_name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(attribute, value)
    return out


_REQUEST_ATTRIBUTES = (
    ("max_completion_tokens", "gen_ai.request.max_tokens"), ("max_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"),
    ("seed", "gen_ai.request.seed"), ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)
