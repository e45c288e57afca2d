"""A relayed stream's record stays bounded however long the stream runs."""

from __future__ import annotations

import tracemalloc

from backends.types import ChatChunk, ChunkChoice, Delta, Usage
from gateway import stream_tally
from gateway.stream_tally import StreamTally


def chunk(text: str, finish: str | None = None, usage: Usage | None = None, index: int = 0) -> ChatChunk:
    return ChatChunk(id="c1", created=1, model="m", usage=usage,
                     choices=[ChunkChoice(index=index, delta=Delta(content=text), finish_reason=finish)])


def text_of(c: ChatChunk) -> str:
    return "".join(ch.delta.content or "" for ch in c.choices if isinstance(ch.delta.content, str))


def test_counts_every_chunk_but_keeps_text_only_up_to_the_bound() -> None:
    tally = StreamTally(text_of, max_text_chars=10)
    for _ in range(5):
        tally.add(chunk("abcd"))
    tally.add(chunk("", finish="stop", usage=Usage(prompt_tokens=1, completion_tokens=5, total_tokens=6)))
    assert tally.text == "abcdabcdab" and tally.truncated and tally.chars == 20
    assert tally.finish_reasons == {0: "stop"} and tally.response_id == "c1"
    assert tally.usage is not None and tally.usage.completion_tokens == 5
    assert tally.chunks is None  # no response cache asked for them


def test_chunks_are_kept_for_the_cache_only_while_they_fit_one_entry() -> None:
    small = StreamTally(text_of, max_text_chars=100, keep_chunks_bytes=10_000)
    for _ in range(3):
        small.add(chunk("hi"))
    assert small.chunks is not None and len(small.chunks) == 3
    big = StreamTally(text_of, max_text_chars=100, keep_chunks_bytes=1_000)
    for _ in range(20):
        big.add(chunk("x" * 40))
    assert big.chunks is None


def test_memory_of_a_long_stream_does_not_grow_with_its_length() -> None:
    tally = StreamTally(text_of, max_text_chars=4096)
    pieces = [chunk("token ") for _ in range(200)]
    # only what the tally's own code holds: other threads of the suite allocate meanwhile
    only_tally = [tracemalloc.Filter(True, stream_tally.__file__)]

    def held() -> int:
        return sum(s.size for s in tracemalloc.take_snapshot().filter_traces(only_tally).statistics("filename"))

    tracemalloc.start()
    try:
        for piece in pieces:
            tally.add(piece)
        _ = tally.text
        after_short = held()
        for _ in range(100):  # 20k more chunks through the same tally
            for piece in pieces:
                tally.add(piece)
        _ = tally.text
        after_long = held()
    finally:
        tracemalloc.stop()
    assert after_long - after_short < 16_384, after_long - after_short
    assert tally.chars == 6 * 200 * 101
