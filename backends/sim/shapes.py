"""What the completion routes of a sim answer, as plain JSON-ready dicts, one dialect per kind.

The sims must emit what the real upstreams emit, not what the gateway's own types accept
(``backends/types.py`` is never imported here): an SGLang worker's shapes come from SGLang
0.5.23's serialisers (``sglang_shapes.py``, checked against ``tests/contracts/sglang/fixtures``),
an OpenAI provider's from OpenAI's API (``openai_shapes.py``). Both dialects build bodies and
stream events from the same ``Answer``; the app picks the dialect of its kind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from backends.sim.engine import Generation, SimFailure

DONE = b"data: [DONE]\n\n"


def sse(payload: Any) -> bytes:
    """One SSE event carrying ``payload`` as compact JSON (keys in insertion order)."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def stable_hex(seed: str, length: int) -> str:
    """``length`` hex digits derived from ``seed``: ids that look random but repeat per run."""
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class Answer:
    """One generation as a wire answer: the model name echoed, the time, the usage options."""

    gen: Generation
    model: str
    created: int
    include_usage: bool = False
    """``stream_options.include_usage``: end the stream with a usage-only chunk."""
    cache_report: bool = True
    """Whether usage reports ``cached_tokens`` (SGLang: only with ``--enable-cache-report``)."""


class Events(Protocol):
    """Encodes one stream: ``piece`` per generated piece (in order), ``end`` the rest."""

    def piece(self, text: str) -> bytes:
        """The event(s) of the next piece of ``Answer.gen.chunks``."""
        ...

    def end(self) -> bytes:
        """Finish, usage (when asked) and ``[DONE]``."""
        ...


class Dialect(Protocol):
    """The wire shapes of one kind of upstream."""

    def chat_body(self, answer: Answer) -> dict[str, Any]:
        """A non-streamed chat completion."""
        ...

    def chat_events(self, answer: Answer) -> Events:
        """The events of a streamed chat completion."""
        ...

    def text_body(self, answer: Answer) -> dict[str, Any]:
        """A non-streamed text completion."""
        ...

    def text_events(self, answer: Answer) -> Events:
        """The events of a streamed text completion."""
        ...

    def error_body(self, failure: SimFailure) -> dict[str, Any]:
        """The body of an HTTP error answer."""
        ...


class Pieces:
    """Walks ``gen.chunks`` with their kinds, for the stream encoders."""

    def __init__(self, gen: Generation) -> None:
        self.gen = gen
        self.index = 0

    def next_kind(self) -> str:
        """The kind of the piece being encoded now, and move on."""
        kinds = self.gen.kinds
        kind = kinds[self.index] if self.index < len(kinds) else "content"
        self.index += 1
        return kind

    @property
    def is_last(self) -> bool:
        """Whether the piece just taken was the last one planned."""
        return self.index >= len(self.gen.chunks)

    def text_of(self, kind: str) -> str:
        """The whole text of one kind (``reasoning``, ``content``, ``tool_arguments``)."""
        return "".join(c for c, k in zip(self.gen.chunks, self.gen.kinds, strict=True) if k == kind)


def tool_call_id(gen: Generation) -> str:
    """``call_`` and 24 hex digits, as SGLang and OpenAI name calls."""
    return "call_" + stable_hex("call:" + gen.id, 24)
