"""What a relayed stream has produced, kept in bounded memory.

A stream can be long (a 20k-token answer) or never end on purpose; keeping every relayed
chunk until the end costs memory in proportion to its length, per stream. Settlement, the
access line and routing need only a little of it: the last usage the upstream reported, each
choice's finish reason, the first chunk's id, and the generated text (for charging when no
usage came, and for the prefix the worker now caches). The response cache needs the chunks
themselves, but only for a deterministic request and only while they fit one cache entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.types import Usage

CHUNK_OVERHEAD_BYTES = 160
"""What one kept chunk costs beyond its text, roughly (the cache entry's JSON framing)."""


class StreamTally:
    """Counts and a bounded record of one stream, fed chunk by chunk by the relay.

    Args:
        text_of: The generated text of a chunk (reasoning and content, before moderation).
        max_text_chars: Generated text kept; past it only the count grows.
        keep_chunks_bytes: Chunks kept for the response cache while their estimated size
            stays under this; 0 keeps none. Past it they are dropped and nothing is cached.
    """

    def __init__(self, text_of: Callable[[Any], str], *, max_text_chars: int,
                 keep_chunks_bytes: int = 0) -> None:
        self._text_of = text_of
        self._max_text_chars = max_text_chars
        self._keep_bytes = keep_chunks_bytes
        self._kept_bytes = 0
        self._text: list[str] = []
        self._text_chars = 0
        self.chars = 0
        """Characters generated, all of them, kept or not."""
        self.usage: Usage | None = None
        """The last usage the upstream reported."""
        self.finish_reasons: dict[int, str] = {}
        """Each choice's finish reason, by choice index."""
        self.response_id: str | None = None
        self.chunks: list[Any] | None = [] if keep_chunks_bytes > 0 else None
        """The chunks, for the response cache; None when not wanted or over the bound."""
        self.complete = False
        """The upstream ended its stream (not cut by the client, an error or moderation)."""

    def add(self, chunk: Any) -> None:
        """Record one upstream chunk (before moderation changes it)."""
        if self.response_id is None:
            self.response_id = chunk.id
        if isinstance(chunk.usage, Usage):
            self.usage = chunk.usage
        for choice in chunk.choices:
            if isinstance(choice.finish_reason, str):
                self.finish_reasons[choice.index] = choice.finish_reason
        text = self._text_of(chunk)
        self.chars += len(text)
        room = self._max_text_chars - self._text_chars
        if text and room > 0:
            kept = text if len(text) <= room else text[:room]
            self._text.append(kept)
            self._text_chars += len(kept)
        if self.chunks is not None:
            self._kept_bytes += len(text) + CHUNK_OVERHEAD_BYTES
            if self._kept_bytes > self._keep_bytes:
                self.chunks = None  # too big to cache: stop holding it
            else:
                self.chunks.append(chunk)

    @property
    def text(self) -> str:
        """The generated text kept (all of it unless ``truncated``)."""
        if len(self._text) > 1:
            self._text = ["".join(self._text)]
        return self._text[0] if self._text else ""

    @property
    def truncated(self) -> bool:
        """More was generated than ``text`` holds."""
        return self.chars > self._text_chars
