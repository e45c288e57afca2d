"""Properties of the SSE decoder (``backends/sse.py``) and encoder (``gateway/sse.py``).

``tests/unit/test_backends/test_sse.py`` already round-trips plain dicts through the encoder
and checks the decoder never fails on garbage. These add what upstreams actually send: named
events, comments, ``id:`` lines, multi-line data and every line ending (LF, CRLF, CR, mixed),
against a model of the WHATWG rules; and the gateway's own typed chunks and error events,
byte-exact, under any chunking of the byte stream.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.errors import (
    InvalidRequestError,
    SwitchyardError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
)
from backends.sse import SSEDecoder, SSEEvent
from backends.types import ChatChunk, ChunkChoice, Delta, ToolCallDelta, Usage
from gateway.sse import DONE, encode_error_event, encode_event

ENDINGS = (b"\n", b"\r\n", b"\r")
# a value is any text without line breaks; surrogates cannot be UTF-8 encoded
values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
names = st.text(st.characters(codec="utf-8", exclude_characters="\r\n:"), max_size=10)


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class WireEvent:
    """One event as an upstream may write it, and what a conforming parser must yield."""

    name: str | None
    data: list[str]
    comments: list[str]
    event_id: str | None
    spaced: list[bool]
    """Per data line: ``data: x`` (True) or ``data:x`` (False)."""

    def lines(self) -> list[bytes]:
        out = [b":" + c.encode() for c in self.comments]
        if self.event_id is not None:
            out.append(b"id: " + self.event_id.encode())
        if self.name is not None:
            out.append(b"event: " + self.name.encode())
        for text, spaced in zip(self.data, self.spaced, strict=True):
            # without the space, a value starting with one would lose it: the rule strips one
            sep = b": " if spaced or text.startswith(" ") else b":"
            out.append(b"data" + sep + text.encode())
        return out

    def expected(self) -> SSEEvent:
        return SSEEvent(self.name or "message", "\n".join(self.data))


@st.composite
def wire_events(draw: st.DrawFn) -> WireEvent:
    data = draw(st.lists(values, min_size=1, max_size=4))
    return WireEvent(
        name=draw(st.none() | names), data=data, comments=draw(st.lists(values, max_size=2)),
        event_id=draw(st.none() | values), spaced=draw(st.lists(st.booleans(), min_size=len(data),
                                                                  max_size=len(data))))


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A byte stream of events with a line ending drawn per line, and the events it holds."""
    events = draw(st.lists(wire_events(), max_size=6))
    out, previous = b"", b""
    for event in events:
        for line in [*event.lines(), b""]:  # the empty line ends the event
            ending = draw(st.sampled_from(ENDINGS))
            if previous == b"\r" and ending == b"\n" and line == b"":
                ending = b"\r\n"  # CR then LF is one line ending (CRLF), not an empty line
            out += line + ending
            previous = ending
    return out, [e.expected() for e in events]


@settings(max_examples=200)
@given(streams(), st.lists(st.integers(min_value=0), max_size=16))
def test_any_line_endings_comments_and_names_decode_as_the_rules_say(
        stream: tuple[bytes, list[SSEEvent]], cuts: list[int]) -> None:
    raw, expected = stream
    assert decode(split(raw, cuts)) == expected


@settings(max_examples=200)
@given(streams(), st.lists(st.integers(min_value=0), max_size=16))
def test_an_unterminated_last_event_is_still_delivered_at_close(
        stream: tuple[bytes, list[SSEEvent]], cuts: list[int]) -> None:
    raw, expected = stream
    if not expected:
        return
    cut = raw.rstrip(b"\r\n")  # the stream ends mid-event: no blank line after the last data
    assert decode(split(cut, cuts)) == expected


texts = st.text(st.characters(codec="utf-8"), max_size=24)  # newlines, NUL, emoji...


@st.composite
def chat_chunks(draw: st.DrawFn) -> ChatChunk:
    calls = draw(st.lists(st.builds(
        lambda i, name, args: ToolCallDelta(index=i, id=f"call_{i}", type="function",
                                            function={"name": name, "arguments": args}),
        st.integers(0, 3), texts, texts), max_size=2))
    delta = Delta(content=draw(st.none() | texts), tool_calls=calls or msgspec.UNSET)
    choices = [ChunkChoice(index=0, delta=delta,
                           finish_reason=draw(st.none() | st.sampled_from(["stop", "length", "tool_calls"])))]
    usage = draw(st.just(msgspec.UNSET) | st.builds(Usage, prompt_tokens=st.integers(0, 10**6),
                                                    completion_tokens=st.integers(0, 10**6)))
    return ChatChunk(id=draw(texts), created=draw(st.integers(0, 2**40)), model=draw(texts),
                     choices=draw(st.sampled_from([choices, []])), usage=usage)


@settings(max_examples=150)
@given(st.lists(chat_chunks(), max_size=6), st.lists(st.integers(min_value=0), max_size=16))
def test_the_gateways_stream_decodes_to_the_same_chunks_under_any_chunking(
        chunks: list[ChatChunk], cuts: list[int]) -> None:
    raw = b"".join(encode_event(c) for c in chunks) + DONE
    events = decode(split(raw, cuts))
    assert [e.event for e in events] == ["message"] * (len(chunks) + 1)
    assert [msgspec.json.decode(e.data, type=ChatChunk) for e in events[:-1]] == chunks
    assert events[-1].data == "[DONE]"
    # one event is exactly one `data:` line: text never breaks the framing
    assert raw.count(b"\n\n") == len(chunks) + 1 and b"\r" not in raw


ERRORS = (SwitchyardError, InvalidRequestError, UpstreamError, UpstreamTimeoutError, UpstreamRateLimitedError)


@given(st.sampled_from(ERRORS), texts, st.none() | texts, st.lists(st.integers(min_value=0), max_size=6))
def test_an_error_event_carries_openais_error_shape(
        kind: type[SwitchyardError], message: str, param: str | None, cuts: list[int]) -> None:
    error = kind(message, param=param)
    raw = b'data: {"choices": []}\n\n' + encode_error_event(error)
    events = decode(split(raw, cuts))
    body = msgspec.json.decode(events[-1].data)
    assert body == {"error": {"message": message, "type": kind.error_type, "param": param, "code": kind.code}}
