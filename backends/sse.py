"""Server-sent events: an incremental decoder for upstream streams.

Pure and synchronous so that it can be property-tested; the backends feed it whatever byte
chunks the socket delivers.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    event: str
    """The ``event:`` field, ``"message"`` when absent (Anthropic names its events, OpenAI not)."""
    data: str


class SSEDecoder:
    """Split a byte stream into events at blank lines, per the WHATWG EventSource rules."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return every event they complete."""
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # keep a trailing CR: its LF may be the first byte of the next chunk
            tail = b"\r" if buffer.endswith(b"\r") else b""
            body = buffer[:-1] if tail else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse_block(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated last block still counts, as browsers do."""
        rest, self._buffer = self._buffer.rstrip(b"\r\n"), b""
        event = _parse_block(rest) if rest else None
        return [event] if event is not None else []


def _parse_block(block: bytes) -> SSEEvent | None:
    name = "message"
    data: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value or "message"
    if not data:
        return None
    return SSEEvent(name, "\n".join(data))
