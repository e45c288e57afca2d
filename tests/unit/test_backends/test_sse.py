from __future__ import annotations

import itertools

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from backends.sse import SSEDecoder, SSEEvent
from gateway.sse import DONE, encode_event


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_openai_stream() -> None:
    raw = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert [e.data for e in decode_all([raw])] == ['{"a": 1}', '{"b": 2}', "[DONE]"]


def test_anthropic_named_events_comments_and_crlf() -> None:
    raw = b": ping\r\nevent: message_start\r\ndata: {}\r\n\r\nevent: ping\ndata: {\"type\": \"ping\"}\n\n"
    assert decode_all([raw]) == [SSEEvent("message_start", "{}"), SSEEvent("ping", '{"type": "ping"}')]


def test_multiline_data_and_unterminated_last_event() -> None:
    assert decode_all([b"data: a\ndata: b\n\ndata: tail"]) == [SSEEvent("message", "a\nb"), SSEEvent("message", "tail")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    assert decode_all([b"data: x\r", b"\n\r", b"\n"]) == [SSEEvent("message", "x")]


payloads = st.lists(
    st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=30), st.integers(), st.booleans()), max_size=4),
    max_size=8,
)


@given(payloads, st.lists(st.integers(min_value=0), max_size=12))
def test_encode_then_decode_round_trips_under_any_chunking(items: list[dict[str, object]], cuts: list[int]) -> None:
    raw = b"".join(encode_event(item) for item in items) + DONE
    events = decode_all(split(raw, cuts))
    assert [msgspec.json.decode(e.data) for e in events[:-1]] == items
    assert events[-1].data == "[DONE]"


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=8))
def test_decoder_never_fails_on_garbage_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    assert decode_all(split(data, cuts)) == decode_all([data])
