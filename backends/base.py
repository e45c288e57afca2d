"""The one protocol every backend kind implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from backends.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Health,
    TextRequest,
    TextResponse,
)


class Backend(Protocol):
    """One remote that can answer completions: an SGLang worker, an OpenAI-compatible API, ...

    A stream is an async generator that sends the request on its first ``__anext__``: a failure
    before the first byte raises there, typed, so the caller can still retry or fall back and
    answer with a proper HTTP status. Cancelling the iteration (or ``aclose``) aborts the
    upstream request at once.
    """

    kind: str
    """The provider name as OpenTelemetry's ``gen_ai.provider.name`` spells it."""
    name: str
    """Stable identifier of this remote, e.g. ``local-llama/0``; shown in headers and traces."""
    address: str
    """The remote's base URL: its identity when routing hashes onto workers."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    async def complete_text(self, request: TextRequest) -> TextResponse: ...

    def stream_text(self, request: TextRequest) -> AsyncIterator[TextResponse]: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Vectors for the request's inputs; ``UnsupportedError`` where the kind has none."""
        ...

    async def health(self) -> Health: ...

    async def aclose(self) -> None: ...
