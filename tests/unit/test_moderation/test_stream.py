"""The stream moderator: blocks split phrases before any of them is out, redacts split PII,
passes benign text byte for byte, holds back a bounded window, cuts by text not by chunks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.moderation import ModerationConfig, Moderator, StreamModerator
from policies.moderation.stream import (
    MIN_WINDOW,
    OVERLAP_CHARS,
    classifier_windows,
    next_cut,
)
from policies.moderation.verdict import Release
from tests.unit.test_moderation.conftest import REDACT_EMAIL, KeywordScorer

MODES = ("incremental", "buffered", "async")

BENIGN = (
    "Sure! Here is how to kill a Python process on Linux: run `ps aux | grep python`, then "
    "`kill -9 <PID>`. On Windows, use Task Manager or `taskkill /F /PID <PID>`.\n\n"
    "```python\nimport os, signal\nos.kill(pid, signal.SIGTERM)\n```\n"
    "The version is 3.12.1, released on 2023-12-07; pi is about 3.14159. Totals: 180 120 60 30. "
    "Questions? Ask away… I’m happy to help — über-fast, naïve café ☕ 你好. "
)


def moderator(scorer: KeywordScorer, **output: object) -> Moderator:
    return Moderator(ModerationConfig.model_validate({"output": output}), scorer)


def run(stream: StreamModerator, chunks: list[str]) -> tuple[str, list[Release]]:
    releases = [stream.feed(c) for c in chunks] + [stream.finish()]
    return "".join(r.text for r in releases), releases


def chunked(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_benign_stream_is_unchanged(scorer: KeywordScorer) -> None:
    stream = moderator(scorer).stream()
    assert stream is not None
    out, releases = run(stream, chunked(BENIGN * 3, 4))
    assert out == BENIGN * 3
    assert all(r.blocked is None and not r.findings for r in releases)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=600),
       st.lists(st.integers(min_value=0, max_value=40), max_size=80), st.sampled_from(MODES))
def test_any_text_without_findings_passes_byte_for_byte_in_any_chunking(text: str, cuts: list[int], mode: str) -> None:
    rules = Moderator(ModerationConfig.model_validate(
        {"input": None, "output": {"categories": {}, "pii": {}, "mode": mode}})).stream()
    assert rules is not None
    pieces, i = [], 0
    for size in cuts:
        pieces.append(text[i:i + size])
        i += size
    pieces.append(text[i:])
    out, _ = run(rules, pieces)
    assert out == text


@given(st.sampled_from([BENIGN, BENIGN * 4, "word " * 200, "x" * 700, "a.\n" * 90]),
       st.randoms(use_true_random=False), st.sampled_from(MODES))
def test_benign_text_with_every_check_on_is_unchanged_in_any_chunking(text: str, rng: random.Random,
                                                                      mode: str) -> None:
    stream = moderator(KeywordScorer({"violence": ["i will hurt you badly"]}), mode=mode).stream()
    assert stream is not None
    pieces, i = [], 0
    while i < len(text):
        size = rng.choice([1, 2, 3, 4, 7, 16, 50, 200])
        pieces.append(text[i:i + size])
        i += size
    out, releases = run(stream, pieces)
    assert out == text
    assert not any(r.findings for r in releases)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9, 17])
def test_a_blocked_phrase_split_across_chunks_is_never_released(scorer: KeywordScorer, size: int) -> None:
    text = "Okay, listen to me carefully right now, because I mean every word. I will hurt you badly if you come back here. Bye."
    stream = moderator(scorer, mode="buffered").stream()
    assert stream is not None
    out, releases = run(stream, chunked(text, size))
    blocked = [r for r in releases if r.blocked is not None]
    assert blocked and blocked[0].blocked is not None and blocked[0].blocked.name == "violence"
    assert "hurt" not in out and "badly" not in out
    assert out == "Okay, listen to me carefully right now, because I mean every word. "
    assert stream.feed("more text. ").text == "" and stream.finish().blocked is not None


@pytest.mark.parametrize("mode", ["buffered", "incremental"])
def test_a_blocked_term_split_across_a_window_cut_is_never_released(scorer: KeywordScorer, mode: str) -> None:
    # no sentence ends: the window fills and is cut at a space; the term straddles that cut
    filler = "lorem ipsum dolor sit amet " * 4
    text = filler + "the acme secret plan is " + "more words " * 20
    for size in (1, 4, 13):
        stream = moderator(scorer, blocked_terms=["ACME  secret plan"], mode=mode).stream()
        assert stream is not None
        out, releases = run(stream, chunked(text, size))
        assert "acme" not in out and "secret" not in out
        assert any(r.blocked is not None and r.blocked.kind == "term" for r in releases)


@pytest.mark.parametrize("mode", ["buffered", "incremental"])
@pytest.mark.parametrize("size", [1, 3, 4, 6, 11])
def test_an_email_split_across_chunks_arrives_redacted(scorer: KeywordScorer, size: int, mode: str) -> None:
    text = "You can write to jane.doe@example.com or call +1 (415) 555-0132 any time. Thanks!"
    stream = moderator(scorer, mode=mode, pii=REDACT_EMAIL).stream()
    assert stream is not None
    out, releases = run(stream, chunked(text, size))
    assert out == "You can write to [REDACTED:EMAIL] or call [REDACTED:PHONE] any time. Thanks!"
    names = [f.name for r in releases for f in r.findings]
    assert names == ["email", "phone"]
    spans = [(f.start, f.end) for r in releases for f in r.findings]
    assert [text[a or 0:b] for a, b in spans] == ["jane.doe@example.com", "+1 (415) 555-0132"]


@pytest.mark.parametrize("mode", ["buffered", "incremental"])
def test_pii_at_a_window_cut_is_not_split(scorer: KeywordScorer, mode: str) -> None:
    # a run of words with no sentence end, so the window is cut at a space: place an IBAN with
    # spaces across every possible cut position
    for lead in range(60, 170, 7):
        text = "w" * 10 + " " + "a " * ((lead - 11) // 2) + "DE89 3704 0044 0532 0130 00 and then more words to go on"
        stream = moderator(scorer, window_chars=100, mode=mode).stream()
        assert stream is not None
        out, _ = run(stream, chunked(text, 3))
        assert "3704" not in out and "[REDACTED:IBAN]" in out, lead


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", [96, 160, 400])
def test_the_window_bound_is_respected(scorer: KeywordScorer, window: int, mode: str) -> None:
    text = ("a long line without any sentence end but with spaces " * 30) + ("x" * 900) + " end"
    stream = moderator(scorer, window_chars=window, mode=mode).stream()
    assert stream is not None
    for chunk in chunked(text, 7):
        stream.feed(chunk)
        assert stream.held < window


def test_windows_depend_on_the_text_not_the_chunking(scorer: KeywordScorer) -> None:
    text = BENIGN * 2 + "word " * 100
    calls = []
    for size in (1, 5, 64, len(text)):
        s = KeywordScorer({})
        stream = moderator(s, mode="buffered").stream()
        assert stream is not None
        run(stream, chunked(text, size))
        calls.append(sum(s.calls))
    assert len(set(calls)) == 1  # the same windows, however the text arrived
    assert calls[0] == len(classifier_windows(text, 160))


def test_the_classifier_runs_per_window_not_per_chunk(scorer: KeywordScorer) -> None:
    text = BENIGN * 4
    stream = moderator(scorer, mode="buffered").stream()
    assert stream is not None
    run(stream, chunked(text, 4))
    chunks = len(chunked(text, 4))
    assert sum(scorer.calls) < chunks / 5
    assert len(scorer.calls) <= sum(scorer.calls)


def test_a_flagged_category_is_reported_once(scorer: KeywordScorer) -> None:
    config = {"categories": {"harassment": {"action": "flag"}}}
    text = "Well, you utter clown, that was silly. " * 6
    stream = moderator(scorer, **config).stream()
    assert stream is not None
    out, releases = run(stream, chunked(text, 4))
    assert out == text
    flags = [f for r in releases for f in r.findings]
    assert [(f.kind, f.name, f.action) for f in flags] == [("category", "harassment", "flag")]


def test_next_cut() -> None:
    assert next_cut("Short. ", 160) is None  # too short to judge alone
    sentence = "This sentence is long enough to be released alone, all by itself. And the next"
    assert next_cut(sentence, 160) == (66, 66)
    assert next_cut("x" * 70 + "\n" + "y", 160) == (71, 71)
    assert next_cut("word " * 10, 160) is None  # waits: it may still end a sentence
    at = next_cut("word " * 40, 160)
    assert at is not None
    cut, look = at
    assert look == 160 and MIN_WINDOW <= cut <= 160 - OVERLAP_CHARS and ("word " * 40)[cut - 1] == " "
    assert next_cut("x" * 200, 160) == (160 - OVERLAP_CHARS, 160)  # no space: a hard cut


def test_window_too_small_is_refused(scorer: KeywordScorer) -> None:
    from policies.moderation.rules import Rules

    output = ModerationConfig().output
    assert output is not None
    with pytest.raises(ValueError, match="at least 96"):
        StreamModerator(Rules(output, scorer), 50)
