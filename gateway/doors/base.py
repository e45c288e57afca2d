"""What a front door is: its wire format in, its wire format out, its errors.

N doors + M backend adapters, not N x M: a door parses its body into the canonical request of
an ``Operation`` (OpenAI chat or text completion), and turns the canonical answer (a whole
response, or a stream of chunks) back into its own format. Everything between (admission,
routing, retries, moderation, metering, settlement, telemetry) is the same for every door.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from backends.errors import SwitchyardError
from gateway.errors import DOOR_STATE
from gateway.operations import Chunk, Operation, Req, Resp

__all__ = ["DOOR_STATE", "Door", "StreamEncoder"]


class StreamEncoder(Protocol):
    """Encodes one stream for the client, chunk by chunk (doors with state keep it here)."""

    def chunk(self, chunk: Any) -> bytes:
        """Bytes for one canonical chunk (may be empty: the door sends it later, or never)."""
        ...

    def done(self) -> bytes:
        """Bytes that end a stream that ended normally (OpenAI's ``[DONE]``)."""
        ...

    def error(self, error: SwitchyardError) -> bytes:
        """Bytes that end a stream broken after its first byte, as the door's SDK raises it."""
        ...


@dataclass(frozen=True, slots=True)
class Door(Generic[Req, Resp, Chunk]):
    """One front door of the gateway."""

    name: str
    """Shown on the access line, spans and metrics (``chat.completions``, ``messages``, ...)."""
    operation: Operation[Req, Resp, Chunk]
    """The canonical request it speaks to the rest of the gateway."""
    parse: Callable[[bytes], Req]
    """Its request body as the canonical request; errors raise ``SwitchyardError``."""
    answer: Callable[[Resp, Req], bytes]
    """A whole canonical answer as its response body."""
    stream: Callable[[Req], StreamEncoder]
    """A new encoder for one stream."""
    error_body: Callable[[SwitchyardError], bytes]
    """An error as its error body (OpenAI's ``{"error": {...}}``, Anthropic's, ...)."""
    credential: Callable[[Mapping[str, str]], str | None]
    """The ``Authorization`` value to check: the door's own header, as ``Bearer <key>``."""
