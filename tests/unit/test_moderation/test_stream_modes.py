"""Stream modes: ``incremental`` releases all but what could still become a match, ``buffered``
holds windows, ``async`` releases at once and cuts afterwards. The guarantees of the first two
(a blocked term never out, PII redacted) hold however the stream is chunked."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.moderation import ModerationConfig, Moderator, StreamModerator
from policies.moderation.config import OVERLAP_CHARS, OutputChecks
from policies.moderation.early import IncrementalStreamModerator
from policies.moderation.holdback import TOKEN_LEAD, HoldBack
from policies.moderation.rules import Rules
from policies.moderation.stream import classifier_windows
from policies.moderation.verdict import Release
from tests.unit.test_moderation.conftest import REDACT_EMAIL, KeywordScorer

FILLER = ("Sure, here is the plan for the week. We start on Monday with the design review, then "
          "write the code and test it well. Ask me if anything is unclear!\nThanks for reading. ").split(" ")
STRICT = ("incremental", "buffered")


def stream_of(scorer: KeywordScorer | None = None, **output: object) -> StreamModerator:
    config = ModerationConfig.model_validate({"input": None, "output": output})
    stream = Moderator(config, scorer or KeywordScorer({})).stream()
    assert stream is not None
    return stream


def incremental(scorer: KeywordScorer, release_ahead: int) -> IncrementalStreamModerator:
    """An incremental stream whose running score covers ``release_ahead`` characters past it."""
    checks = OutputChecks()
    return IncrementalStreamModerator(Rules(checks, scorer, hold_limit=checks.window_chars - 1,
                                            release_ahead=release_ahead), checks.window_chars)


class Borderline(KeywordScorer):
    """0.3 (under the 0.5 threshold, over half of it) while a text ends with 'maybe'."""

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = super().scores(texts)
        for i, text in enumerate(texts):
            if text.rstrip().endswith("maybe"):
                out[i, :] = 0.3
        return out


def run(stream: StreamModerator, pieces: list[str]) -> tuple[str, list[Release]]:
    releases = [stream.feed(p) for p in pieces] + [stream.finish()]
    return "".join(r.text for r in releases), releases


def split(text: str, rng: random.Random) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        size = rng.choice([1, 1, 2, 3, 4, 5, 8, 13, 40])
        pieces.append(text[i:i + size])
        i += size
    return pieces


def around(value: str, rng: random.Random) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(0, 60))]
    at = rng.randint(0, len(words))
    return " ".join(words[:at] + [value] + words[at:]) + rng.choice(["", " ", ". More text follows here."])


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(STRICT),
       st.sampled_from(["acme secret plan", "ACME  secret\nplan", "Acme Secret Plan"]))
def test_a_blocked_term_never_reaches_the_client_in_any_chunking(rng: random.Random, mode: str, term: str) -> None:
    text = around(term, rng)
    out, releases = run(stream_of(mode=mode, blocked_terms=["acme secret plan"]), split(text, rng))
    assert "acme" not in out.lower()
    assert any(r.blocked is not None and r.blocked.kind == "term" for r in releases)
    assert text.startswith(out)


PII = {
    "jane.doe@example.com": "EMAIL",
    "+1 (415) 555-0132": "PHONE",
    "4111 1111 1111 1111": "CREDIT_CARD",
    "DE89 3704 0044 0532 0130 00": "IBAN",
    "sk-proj-abcdefghijklmnopqrstuvwx12345": "SECRET",
}


@settings(max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(STRICT), st.sampled_from(sorted(PII)))
def test_pii_is_redacted_in_any_chunking(rng: random.Random, mode: str, value: str) -> None:
    text = around(value, rng)
    out, _ = run(stream_of(mode=mode, pii=REDACT_EMAIL), split(text, rng))
    assert f"[REDACTED:{PII[value]}]" in out
    assert "jane" not in out and "555" not in out and "1111" not in out and "3704" not in out and "abcdef" not in out


def test_incremental_releases_each_word_at_once_by_default() -> None:
    stream = stream_of(KeywordScorer({"violence": ["hurt you"]}))
    tokens = ["Sure", " here", " is", " the", " plan", ".", " First", " we"]
    assert [stream.feed(t).text for t in tokens] == tokens
    assert stream.held == 0 and stream.finish().text == ""


def test_incremental_redacting_email_releases_each_word_once_the_next_one_begins() -> None:
    stream = stream_of(KeywordScorer({"violence": ["hurt you"]}), pii=REDACT_EMAIL)
    tokens = ["Sure", " here", " is", " the", " plan", ".", " First", " we"]
    released = [stream.feed(t).text for t in tokens]
    assert released == ["", "Sure ", "here ", "is ", "the ", "", "plan. ", "First "]
    assert stream.held == len("we")
    assert stream.finish().text == "we"


def test_incremental_releases_at_once_what_ends_with_a_space() -> None:
    stream = stream_of()
    assert stream.feed("Sure! ").text == "Sure! "
    assert stream.feed("Here ").text == "Here "


def test_buffered_holds_what_incremental_releases() -> None:
    stream = stream_of(mode="buffered")
    assert stream.feed("Sure! Here is the plan ").text == ""  # a window is at least 64 characters


def test_borderline_text_is_held_until_its_window_is_scored_whole() -> None:
    stream = incremental(Borderline({}), release_ahead=0)  # every release read by a running score
    assert stream.feed("We could go there ").text == "We could go there "
    assert stream.feed("maybe ").text == ""  # borderline: held for more context
    assert stream.feed("tomorrow ").text == "maybe tomorrow "  # the running score fell again
    whole = stream_of(Borderline({}))
    text = "We could go there, or we could stay at home and read a good book, maybe"
    out = whole.feed(text).text
    assert out == ""  # the open window is borderline: nothing of it goes
    assert whole.feed(". Fine. ").text == text + ". Fine. "  # the whole window passed


def test_a_clear_running_score_lets_at_most_release_ahead_characters_go_unread() -> None:
    class Near(KeywordScorer):
        def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            out = super().scores(texts)
            out[["maybe" in text for text in texts], :] = 0.3
            return out

    scorer = Near({})
    stream = incremental(scorer, release_ahead=OVERLAP_CHARS)
    first = "We could go there after lunch and then walk along the river for a while "
    assert stream.feed(first).text == first  # scored: 0.05, a clear margin; covers len(first) // 4 more
    calls = len(scorer.calls)
    assert stream.feed("maybe ").text == "maybe "  # within 73 // 4 = 18 characters of what it read
    assert stream.feed("or stay ").text == "or stay "
    assert len(scorer.calls) == calls  # both on that score: not scored again
    # past those 18 characters: scored again first, borderline, so held
    assert stream.feed("home and read a good book ").text == ""
    assert len(scorer.calls) == calls + 1
    # a short text's score covers a quarter of it: a 35-character delta after 17 is read first
    short = incremental(Near({}), release_ahead=OVERLAP_CHARS)
    assert short.feed("Here is my view. ").text == "Here is my view. "
    assert short.feed("I said maybe, and I will go there ").text == ""


def test_a_running_score_is_reused_within_a_feed_and_not_retried_on_the_same_word() -> None:
    scorer = Borderline({})
    stream = incremental(scorer, release_ahead=0)
    stream.feed("We could go there, maybe")
    calls = len(scorer.calls)
    stream.feed("y")  # the borderline text grew by a letter: its score is kept
    stream.feed("e")
    assert len(scorer.calls) == calls
    stream.feed(" yes ")  # a word ended: scored again
    assert len(scorer.calls) == calls + 1


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from([0, OVERLAP_CHARS]))
def test_a_category_phrase_goes_out_at_most_release_ahead_characters_before_its_block(
        rng: random.Random, ahead: int) -> None:
    phrase = "I will hurt you badly"
    text = around(phrase, rng)
    stream = incremental(KeywordScorer({"violence": ["hurt you"]}), release_ahead=ahead)
    out, releases = run(stream, split(text, rng))
    assert any(r.blocked is not None and r.blocked.name == "violence" for r in releases)
    assert text.startswith(out)
    read_end = text.index(phrase) + len("I will hurt you")  # a score that read this far fires
    assert len(out) < read_end + ahead  # what no score had read when it went out is bounded
    if ahead == 0:
        assert "hurt you" not in out


def test_incremental_scores_about_once_per_sentence_part_not_per_word() -> None:
    text = " ".join(FILLER * 12)
    scorer = KeywordScorer({})
    out, _ = run(stream_of(scorer), [text[i:i + 4] for i in range(0, len(text), 4)])
    assert out == text
    windows = len(classifier_windows(text, 160))
    assert sum(scorer.calls) <= windows + len(text) // 30  # one score per word would be ~len/5
    assert sum(scorer.calls) >= windows


def test_incremental_scores_the_same_windows_as_buffered() -> None:
    text = ("Here is a long answer that goes on for a while without much happening. " * 6) + "word " * 60
    class Recording(KeywordScorer):
        def scores(self, texts):  # type: ignore[no-untyped-def]
            self.seen.extend(texts)
            return super().scores(texts)

    for size in (1, 4, 30):
        scorer = Recording({})
        scorer.seen = []  # type: ignore[attr-defined]
        run(stream_of(scorer), [text[i:i + size] for i in range(0, len(text), size)])
        assert set(classifier_windows(text, 160)) <= set(scorer.seen)  # type: ignore[attr-defined]


def test_incremental_blocks_on_the_classifier_and_stops_releasing() -> None:
    text = "Okay, listen to me carefully now. I will hurt you badly if you come back here. Bye."
    stream = stream_of(KeywordScorer({"violence": ["hurt you badly"]}))
    out, releases = run(stream, [text[i:i + 3] for i in range(0, len(text), 3)])
    first = next(i for i, r in enumerate(releases) if r.blocked is not None)
    assert releases[first].blocked is not None and releases[first].blocked.name == "violence"
    assert not "".join(r.text for r in releases[first:]) and text.startswith(out)
    # text no score had read yet goes at most release_ahead characters past the phrase
    assert len(out) <= text.index("hurt you badly") + len("hurt you badly") + OVERLAP_CHARS


def test_async_releases_every_delta_at_once_and_cuts_after_a_check_fires() -> None:
    stream = stream_of(mode="async", blocked_terms=["acme secret plan"])
    text = "Sure. The acme secret plan is to ship on Friday, and mail jane.doe@example.com today. " * 2
    pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
    out = ""
    for piece in pieces:
        release = stream.feed(piece)
        if release.blocked is not None:
            assert release.text == ""
            break
        assert release.text == piece  # nothing held
        out += release.text
    assert stream.blocked is not None and stream.blocked.kind == "term"
    assert "acme secret plan" in out  # what async mode lets through before the cut
    assert stream.held == 0


def test_async_records_pii_it_could_not_redact() -> None:
    stream = stream_of(mode="async")
    text = "Write to jane.doe@example.com today, please. " * 3
    out, releases = run(stream, [text[i:i + 5] for i in range(0, len(text), 5)])
    assert out == text
    assert [f.name for r in releases for f in r.findings][:1] == ["email"]


@pytest.mark.parametrize(("text", "held"), [
    ("Sure! ", ""),
    ("Sure", "Sure"),
    ("write to jane.doe@exa", "jane.doe@exa"),
    ("call +1 (415) 555 ", "+1 (415) 555 "),
    ("pay to DE89 3704 00", "DE89 3704 00"),
    ("the plan: acme sec", "acme sec"),
    ("the plan: acme  secret\n", "acme  secret\n"),
    ("acme secrets ", ""),
    ("x" * 300, "x" * 159),
])
def test_hold_back(text: str, held: str) -> None:
    hold = HoldBack(["email", "phone", "iban", "credit_card"], ["ACME secret plan"], limit=159)
    assert text[hold.start(text):] == held


@pytest.mark.parametrize(("text", "held"), [
    ("Sure", ""),  # no redacted type can begin with an ordinary short word
    ("I", ""),
    ("Here is the key sk", "sk"),  # may become sk-...
    ("use AKIA", "AKIA"),
    ("the value is ghp_abc", "ghp_abc"),
    ("Authorization: Bearer abc", "abc"),  # a keyed value may follow a key word
    ("x = AbQcdEfW", ""),  # eight characters of token characters: a lead at most
    ("x = AbQcdEfWz", "AbQcdEfWz"),  # nine: could be a random token
    ("Improving", ""),  # a plain word is no secret, however long
    ("Non-binary", ""),
    ("Improvingx7", "Improvingx7"),  # no longer a plain word (the word itself has gone out)
    ("pay to DE", ""),  # country letters alone give nothing away
    ("pay to DE8", "DE8"),
    ("call +1", "+1"),
    ("room 12", "12"),
])
def test_hold_back_holds_a_word_only_if_a_redacted_type_could_still_begin_there(text: str, held: str) -> None:
    hold = HoldBack(["phone", "iban", "credit_card", "us_ssn", "secret"], [], limit=159)
    assert text[hold.start(text):] == held


RANDOM_TOKEN = "Qx7bLm2PzR9tKv4WsY6nHc3JdF8gTa5E"


@settings(max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(STRICT))
def test_at_most_a_lead_of_a_random_token_reaches_the_client(rng: random.Random, mode: str) -> None:
    text = around(RANDOM_TOKEN, rng)
    out, _ = run(stream_of(mode=mode, pii={"secret": {"action": "redact"}}), split(text, rng))
    assert "[REDACTED:SECRET]" in out
    leaked = out.split("[REDACTED:SECRET]")[0].rsplit(" ", 1)[-1]
    assert RANDOM_TOKEN.startswith(leaked) and len(leaked) <= 8 == TOKEN_LEAD  # 24 of its 32 never seen


def test_a_type_the_policy_only_flags_holds_nothing() -> None:
    stream = stream_of(pii={"email": {"action": "flag"}})
    assert stream.feed("Write to jane").text == "Write to jane"
    out = stream.feed(".doe@example.com and more ")
    assert out.text == ".doe@example.com and more "
    assert [f.name for f in out.findings] == ["email"]


def test_nothing_to_hold_without_terms_or_pii() -> None:
    hold = HoldBack([], [], limit=159)
    assert hold.start("write to jane.doe@exa") == len("write to jane.doe@exa")


def test_mode_defaults_to_incremental_and_is_checked() -> None:
    config = ModerationConfig()
    assert config.output is not None and config.output.mode == "incremental"
    with pytest.raises(ValueError, match="mode"):
        ModerationConfig.model_validate({"output": {"mode": "eventually"}})


def test_buffered_does_not_stall_on_a_term_beginning_that_did_not_continue() -> None:
    head = "This line is long enough to be a window of its own, it really is, acme\n"
    stream = stream_of(mode="buffered", blocked_terms=["acme secret plan"])
    at = head.index("acme")
    assert stream.feed(head).text == head[:at]  # could be "acme\nsecret plan": held at the cut
    release = stream.feed("secrets are kept elsewhere. And more text to come here, and more. ")
    assert release.text.startswith(head[at:]) and release.blocked is None


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False),
       st.sampled_from(["acme secret plan", "jane.doe@example.com", "+1 (415) 555-0132", "i will hurt you badly", "ok"]))
def test_a_whole_text_is_checked_as_feeding_it_then_finishing(rng: random.Random, value: str) -> None:
    """``whole`` (one classifier run, what ``check_text`` uses) gives what ``feed`` then
    ``finish`` give, whatever the text holds: terms, PII, a blocking category, nothing."""
    text = around(value, rng).replace(". ", rng.choice([". ", ".\n", "! "]))

    def fresh() -> tuple[StreamModerator, KeywordScorer]:
        config = ModerationConfig.model_validate({"input": None, "output": {
            "mode": "buffered", "blocked_terms": ["acme secret plan"], "pii": REDACT_EMAIL}})
        scorer = KeywordScorer({"violence": ["hurt you"]})
        stream = Moderator(config, scorer).stream()
        assert stream is not None
        return stream, scorer

    stepwise, _ = fresh()
    first, rest = stepwise.feed(text), stepwise.finish()
    whole, scorer = fresh()
    once = whole.whole(text)
    assert len(scorer.calls) == 1  # every window in one classifier run
    assert once.text == first.text + rest.text
    assert once.findings == first.findings + rest.findings
    assert once.blocked == (first.blocked or rest.blocked) and whole.borderline == stepwise.borderline
