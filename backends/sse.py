"""Server-sent events: an incremental decoder for upstream streams.

Pure and synchronous so that it can be property-tested; the backends feed it whatever byte
chunks the socket delivers.
"""

from __future__ import annotations

from typing import NamedTuple

from backends.errors import UpstreamTooLargeError


class SSEEvent(NamedTuple):
    event: str
    """The ``event:`` field, ``"message"`` when absent (Anthropic names its events, OpenAI not)."""
    data: str


class SSEDecoder:
    """Split a byte stream into events at blank lines, per the WHATWG EventSource rules.

    Args:
        max_event_bytes: Largest event (its lines up to the blank line) the decoder buffers;
            a larger one raises ``UpstreamTooLargeError`` as soon as it is seen, so one
            endless event cannot hold unbounded memory (0: no bound).
        source: Who sends the stream, for the error message.

    Each byte is scanned once: a chunk is searched for event ends from where the previous
    one stopped, so a 10 MB event arriving in 64 KB pieces costs 10 MB of scanning, not
    the quadratic 800 MB a rescan from the start would.
    """

    def __init__(self, max_event_bytes: int = 0, source: str = "the upstream") -> None:
        self._buffer = bytearray()
        self._held_cr = False
        self._max = max_event_bytes
        self._source = source

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return every event they complete."""
        if self._held_cr:
            chunk, self._held_cr = b"\r" + chunk, False
        if b"\r" in chunk:
            # hold a trailing CR back: its LF may be the first byte of the next chunk
            if chunk.endswith(b"\r"):
                chunk, self._held_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer
        if buffer:
            scan = len(buffer) - 1  # an event end may straddle the old and the new bytes
            buffer += chunk
            data: bytes | bytearray = buffer
        else:  # nothing carried over (most reads): find the events where the bytes are
            scan, data = 0, chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = data.find(b"\n\n", scan)
            if end < 0:
                break
            self._check(end - start)
            event = _parse_block(data[start:end])
            if event is not None:
                events.append(event)
            start = scan = end + 2
        if data is buffer:
            del buffer[:start]
        else:
            buffer += data[start:]
        self._check(len(buffer))
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated last block still counts, as browsers do."""
        rest = bytes(self._buffer).rstrip(b"\r\n")
        self._buffer, self._held_cr = bytearray(), False
        event = _parse_block(rest) if rest else None
        return [event] if event is not None else []

    def _check(self, size: int) -> None:
        if self._max and size > self._max:
            raise UpstreamTooLargeError(
                f"{self._source} sent a stream event larger than {self._max} bytes "
                "(bounds.upstream_event_bytes)", bound="upstream_event_bytes")


def _parse_block(block: bytes | bytearray) -> SSEEvent | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # one data line: most events
        return SSEEvent("message", block[6:].decode("utf-8", errors="replace"))
    name = "message"
    data: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value or "message"
    if not data:
        return None
    return SSEEvent(name, "\n".join(data))
