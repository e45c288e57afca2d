"""``Echo``: an incremental stream releases the request's own words past a borderline running
score; terms, PII and the window's whole score decide as before."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.moderation import Echo, ModerationConfig, Moderator, StreamModerator
from policies.moderation.categories import CATEGORIES
from tests.unit.test_moderation.conftest import REDACT_EMAIL, KeywordScorer
from tests.unit.test_moderation.test_stream_modes import around, run, split

QUESTION = "What is child abuse?"
ANSWER = ["Child", " abuse", " refers", " to", " any", " act", " that", " harms", " a", " child."]


class Opening(KeywordScorer):
    """Sexual at 0.9 (over the 0.5 threshold) for a text that names abuse without saying what
    it is yet (no "refers to"): how the shipped model reads the first words of such answers."""

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = super().scores(texts)
        for i, text in enumerate(texts):
            if "abuse" in text.lower() and "refers to" not in text.lower():
                out[i, CATEGORIES.index("sexual")] = 0.9
        return out


class Undecided(KeywordScorer):
    """Every text borderline (0.3: under the 0.5 threshold, over half of it)."""

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.full((len(texts), len(CATEGORIES)), 0.3, dtype=np.float32)


def stream_of(scorer: KeywordScorer, question: str | None, **output: object) -> StreamModerator:
    config = ModerationConfig.model_validate({"input": None, "output": output})
    stream = Moderator(config, scorer).stream(echo=None if question is None else Echo(lambda: question))
    assert stream is not None
    return stream


def test_extent_is_the_run_of_the_requests_words_of_three_letters_or_more() -> None:
    echo = Echo(lambda: "What is the legal definition of human trafficking?")
    text = "Human trafficking, is a crime"
    assert text[:echo.extent(text, 0, len(text))] == "Human trafficking"  # "is": too short to count
    assert echo.extent(text, 0, 5) == 5  # a word cut short counts as what it is so far
    assert echo.extent("Crime first", 0, 11) == 0
    assert echo.extent(text, 9, 9) == 9


def test_the_request_is_read_once_and_only_when_asked() -> None:
    reads: list[int] = []

    def source() -> str:
        reads.append(1)
        return QUESTION

    echo = Echo(source)
    assert reads == []
    echo.extent("child", 0, 5)
    echo.extent("abuse", 0, 5)
    assert reads == [1]


def test_an_answer_repeating_its_question_shows_its_subject_at_once() -> None:
    plain = stream_of(Opening({}), None)
    held = [plain.feed(p).text for p in ANSWER[:4]]
    assert held == ["Child", "", "", " abuse refers to"]  # borderline until the sentence says what it is
    echoed = stream_of(Opening({}), QUESTION)
    assert [echoed.feed(p).text for p in ANSWER[:4]] == ["Child", " abuse", "", " refers to"]


def test_release_echo_off_holds_the_requests_words_like_any_other() -> None:
    stream = stream_of(Opening({}), QUESTION, release_echo=False)
    assert [stream.feed(p).text for p in ANSWER[:4]] == ["Child", "", "", " abuse refers to"]


def test_buffered_and_async_are_not_changed_by_an_echo() -> None:
    buffered = stream_of(Opening({}), QUESTION, mode="buffered")
    assert [buffered.feed(p).text for p in ANSWER[:4]] == ["", "", "", ""]
    async_ = stream_of(Opening({}), QUESTION, mode="async")
    assert [async_.feed(p).text for p in ANSWER[:4]] == ANSWER[:4]


def test_a_category_still_ends_the_stream_when_its_window_is_scored() -> None:
    stream = stream_of(KeywordScorer({"sexual": ["abuse"]}), "Tell me about child abuse")
    out, releases = run(stream, ["Child", " abuse", " is", " what", " I", " will", " describe", " now."])
    assert out == "Child abuse"  # the client's own words went out; nothing the model added did
    assert releases[-1].blocked is not None and releases[-1].blocked.name == "sexual"


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(["acme secret plan", "Acme  Secret\nPlan"]))
def test_a_blocked_term_in_the_request_never_reaches_the_client_in_any_chunking(rng: random.Random, term: str) -> None:
    text = around(term, rng)
    # every word of the answer is in the request and every running score is borderline: only
    # the echo releases, and the term is still held until it is found whole
    out, releases = run(stream_of(Undecided({}), text, blocked_terms=["acme secret plan"]), split(text, rng))
    assert "acme" not in out.lower()
    assert any(r.blocked is not None and r.blocked.kind == "term" for r in releases)
    assert text.startswith(out)


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(["jane.doe@example.com", "+1 (415) 555-0132"]))
def test_pii_in_the_request_is_still_redacted_in_any_chunking(rng: random.Random, value: str) -> None:
    text = around(value, rng)
    out, _ = run(stream_of(Undecided({}), text, pii=REDACT_EMAIL), split(text, rng))
    assert "[REDACTED:" in out and "jane" not in out and "555" not in out
