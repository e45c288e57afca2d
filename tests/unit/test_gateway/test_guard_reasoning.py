"""A guard model decides borderline reasoning too, streamed and whole (the answer's text is
covered through the endpoint in tests/integration/test_moderation_guard_output.py).

A keyword scorer makes the reasoning borderline (0.9 against a hate threshold of 0.95); the
guard is the simulated one (``backends/sim/guard.py``) on a real socket.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from backends.sim.guard import GuardSim
from backends.types import ChatChoice, ChatChunk, ChatResponse, ChunkChoice, Delta, ResponseMessage
from gateway.moderation import StreamGuard, check_answer, guard_answer
from gateway.telemetry import AccessLog, RequestRecord, Telemetry
from policies.moderation import ModerationConfig, Moderator
from tests.unit.test_moderation.conftest import KeywordScorer

REASONING = ["Let me think about it. ", "These rather borderline words stay. "]


@pytest.fixture(scope="module")
def guard_sim() -> Iterator[GuardSim]:
    sim = GuardSim({}).start()
    yield sim
    sim.close()


def _moderator(sim: GuardSim) -> Moderator:
    config = ModerationConfig.model_validate({
        "input": None,
        "output": {"categories": {"hate": {"action": "block", "threshold": 0.95}}, "pii": {}, "mode": "incremental"},
        "guard": {"kind": "llama_guard", "url": sim.url, "model": "llama-guard-3-1b", "timeout_s": 2.0}})
    return Moderator(config, KeywordScorer({"hate": ["borderline words"]}))


def _record() -> RequestRecord:
    return RequestRecord(Telemetry(None, AccessLog(io.StringIO())), "chat.completions", {}, "r", "openai")


def _chunk(reasoning: str | None = None, content: str | None = None, finish: str | None = None) -> ChatChunk:
    return ChatChunk(id="c", created=0, model="m", choices=[ChunkChoice(
        index=0, delta=Delta(content=content, reasoning_content=reasoning), finish_reason=finish)])


async def _relay(guard: StreamGuard, chunks: list[ChatChunk]) -> list[Any]:
    """What the relay's moderated stage sends (gateway/relay.py)."""
    sent: list[Any] = []
    for chunk in chunks:
        outs = guard.apply(chunk)
        if guard.asking:
            outs = await guard.consult(chunk, outs)
        sent += outs
        if guard.blocked is not None:
            break
    return sent


def _stream() -> list[ChatChunk]:
    return [_chunk(reasoning=REASONING[0]), _chunk(reasoning=REASONING[1]), _chunk(content="The answer."),
            _chunk(content="", finish="stop")]


def _texts(sent: list[Any]) -> tuple[str, str, str | None]:
    deltas = [c.choices[0].delta for c in sent]
    reasoning = "".join(d.reasoning_content for d in deltas if isinstance(d.reasoning_content, str))
    content = "".join(d.content for d in deltas if isinstance(d.content, str))
    return reasoning, content, sent[-1].choices[0].finish_reason


async def test_borderline_reasoning_waits_for_the_guard_and_passes_whole_when_it_is_safe(guard_sim: GuardSim) -> None:
    guard_sim.rules = {}
    before = guard_sim.calls["chat"]
    sent = await _relay(StreamGuard(_moderator(guard_sim), _record()), _stream())
    assert _texts(sent) == ("".join(REASONING), "The answer.", "stop")
    assert guard_sim.calls["chat"] == before + 1


async def test_borderline_reasoning_the_guard_blocks_never_reaches_the_client(guard_sim: GuardSim) -> None:
    guard_sim.rules = {"borderline words": ("S10",)}
    try:
        sent = await _relay(StreamGuard(_moderator(guard_sim), _record()), _stream())
    finally:
        guard_sim.rules = {}
    reasoning, content, finish = _texts(sent)
    assert finish == "content_filter" and "borderline" not in reasoning and content == ""


async def test_a_whole_answer_whose_reasoning_the_guard_blocks_is_cut(guard_sim: GuardSim) -> None:
    def answer() -> ChatResponse:
        return ChatResponse(id="a", created=0, model="m", choices=[ChatChoice(index=0, finish_reason="stop", message=(
            ResponseMessage(content="The answer.", reasoning_content="".join(REASONING))))])

    moderator, record = _moderator(guard_sim), _record()
    safe = answer()
    await guard_answer(moderator, check_answer(moderator, safe, record), record)
    assert safe.choices[0].message.reasoning_content == "".join(REASONING)
    guard_sim.rules = {"borderline words": ("S10",)}
    try:
        cut = answer()
        await guard_answer(moderator, check_answer(moderator, cut, record), record)
    finally:
        guard_sim.rules = {}
    message = cut.choices[0].message
    assert cut.choices[0].finish_reason == "content_filter"
    assert message.content == "" and message.reasoning_content == ""
