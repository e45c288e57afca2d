"""The Moderator: whole texts, input vs output rules, tool arguments, the 400 error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.errors import SwitchyardError
from policies.moderation import ContentPolicyViolation, ModerationConfig, Moderator, StreamModerator
from policies.moderation.rules import Rules
from tests.unit.test_moderation.conftest import REDACT_EMAIL, KeywordScorer

TOXIC = "Fine. I will hurt you badly, and nobody will stop me. Goodbye."


def test_output_check_blocks_and_keeps_only_what_precedes_the_window(scorer: KeywordScorer) -> None:
    verdict = Moderator(ModerationConfig(), scorer).check_text("A first harmless sentence of some length, long enough to stand alone. " + TOXIC,
                                                               "output")
    assert verdict.blocked is not None and verdict.blocked.name == "violence"
    assert verdict.text == "A first harmless sentence of some length, long enough to stand alone. "


def test_input_flags_what_output_blocks(scorer: KeywordScorer) -> None:
    moderator = Moderator(ModerationConfig(), scorer)
    verdict = moderator.check_text(TOXIC, "input")
    assert verdict.blocked is None and verdict.text == TOXIC
    assert [(f.kind, f.name, f.action) for f in verdict.findings] == [("category", "violence", "flag")]
    assert moderator.input_roles == ("user",)


def test_input_pii_is_flagged_not_changed_by_default(scorer: KeywordScorer) -> None:
    text = "My card is 4111 1111 1111 1111, email me at a@example.org"
    verdict = Moderator(ModerationConfig(), scorer).check_text(text, "input")
    assert verdict.text == text and not verdict.redacted
    assert [f.name for f in verdict.findings] == ["credit_card", "email"]


@pytest.mark.parametrize("email", ["flag", "redact"])
def test_whole_text_and_stream_agree(scorer: KeywordScorer, email: str) -> None:
    pii = {"pii": REDACT_EMAIL} if email == "redact" else {}
    moderator = Moderator(ModerationConfig.model_validate({"output": pii}), scorer)
    text = ("Reach me at jane@example.org. " * 3 + "No sentence end here but a lot of words " * 8 +
            "and a key sk-abcdefghijklmnopqrstuvwxyz012345 in the end.")
    verdict = moderator.check_text(text, "output")
    stream = moderator.stream()
    assert stream is not None
    releases = [stream.feed(text[i:i + 3]) for i in range(0, len(text), 3)] + [stream.finish()]
    assert "".join(r.text for r in releases) == verdict.text
    assert tuple(f for r in releases for f in r.findings) == verdict.findings
    assert "[REDACTED:SECRET]" in verdict.text
    assert verdict.text.count("[REDACTED:EMAIL]" if email == "redact" else "jane@example.org") == 3
    assert [f.action for f in verdict.findings if f.name == "email"] == [email] * 3


def test_policy_thresholds_override_the_models(scorer: KeywordScorer) -> None:
    config = ModerationConfig.model_validate({"output": {"categories": {"violence": {"threshold": 0.95}}}})
    moderator = Moderator(config, scorer)
    assert moderator.thresholds("output") == {"violence": 0.95}
    assert moderator.check_text(TOXIC, "output").blocked is None  # the keyword scores 0.9
    assert moderator.thresholds("input")["hate"] == 0.5  # the model's


def test_unchecked_sides_pass_through(scorer: KeywordScorer) -> None:
    moderator = Moderator(ModerationConfig(input=None, output=None), scorer)
    assert moderator.check_text(TOXIC, "input").text == TOXIC
    assert moderator.check_text(TOXIC, "output").findings == ()
    assert moderator.stream() is None and not moderator.checks_output
    assert moderator.input_roles == ()


def test_categories_without_a_classifier_is_an_error() -> None:
    with pytest.raises(ValueError, match="no classifier"):
        Moderator(ModerationConfig())
    pii_only = ModerationConfig.model_validate({"input": {"categories": {}},
                                                "output": {"categories": {}, "pii": REDACT_EMAIL}})
    assert Moderator(pii_only).check_text("a@example.org", "output").text == "[REDACTED:EMAIL]"


def test_tool_arguments_redacted_inside_strings(scorer: KeywordScorer) -> None:
    moderator = Moderator(ModerationConfig.model_validate({"output": {"pii": REDACT_EMAIL}}), scorer)
    arguments = '{"to": "jane@example.org", "body": "Hi Jane, call 415-555-0132.", "n": [1, {"k": "ok"}]}'
    verdict = moderator.check_tool_arguments(arguments)
    assert json.loads(verdict.text) == {"to": "[REDACTED:EMAIL]", "body": "Hi Jane, call [REDACTED:PHONE].",
                                        "n": [1, {"k": "ok"}]}
    assert all(f.start is None for f in verdict.findings)
    clean = '{"city":  "Paris", "units": "metric"}'
    assert moderator.check_tool_arguments(clean).text == clean  # byte for byte
    assert moderator.check_tool_arguments('{"text": "' + TOXIC + '"}').blocked is not None
    assert moderator.check_tool_arguments("not json, mail a@example.org").text == "not json, mail [REDACTED:EMAIL]"
    off = Moderator(ModerationConfig.model_validate({"output": {"tool_arguments": False}}), scorer)
    assert off.check_tool_arguments(arguments).text == arguments


def test_blocked_request_error_names_the_category_not_the_text(scorer: KeywordScorer) -> None:
    config = ModerationConfig.model_validate({"input": {"categories": {"violence": {"action": "block"}}}})
    verdict = Moderator(config, scorer).check_text(TOXIC, "input")
    assert verdict.blocked is not None
    error = ContentPolicyViolation.of(verdict.blocked)
    assert isinstance(error, SwitchyardError)
    assert (error.status_code, error.error_type, error.code) == (400, "invalid_request_error",
                                                                "content_policy_violation")
    assert "violence" in error.message and "hurt" not in error.message
    assert error.finding is verdict.blocked
    term = Moderator(ModerationConfig.model_validate({"input": {"blocked_terms": ["nightingale"]}}), scorer)
    blocked = term.check_text("tell me about Nightingale", "input").blocked
    assert blocked is not None and "nightingale" not in ContentPolicyViolation.of(blocked).message.lower()


def test_findings_carry_no_text(scorer: KeywordScorer) -> None:
    verdict = Moderator(ModerationConfig(), scorer).check_text("mail jane@example.org now", "output")
    (finding,) = verdict.findings
    assert "jane" not in repr(finding) and "jane" not in repr(finding.attributes())
    assert finding.attributes() == {"moderation.kind": "pii", "moderation.name": "email",
                                    "moderation.action": "flag", "moderation.score": 1.0}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["Fine. ", "I will hurt you badly", " you utter clown", " acme secret plan", "jane@example.org",
                                 " 4111 1111 1111 1111", " +1 (415) 555-0132", " word", "\n", " ", "."]), max_size=14))
def test_a_whole_text_is_checked_as_a_stream_of_it_is(pieces: list[str]) -> None:
    text = "".join(pieces)  # short ones take check_text's one-window path, longer ones the stream's
    scorer = KeywordScorer({"violence": ["i will hurt you badly"], "harassment": ["you utter clown"]})
    config = ModerationConfig.model_validate(
        {"input": {"blocked_terms": ["acme secret plan"]}, "output": {"blocked_terms": ["acme secret plan"]}})
    moderator = Moderator(config, scorer)
    for direction, checks in (("input", config.input), ("output", config.output)):
        assert checks is not None
        stream = StreamModerator(Rules(checks, scorer), 160)
        first, rest = stream.feed(text), stream.finish()
        verdict = moderator.check_text(text, direction)  # type: ignore[arg-type]
        assert verdict.text == (first.text + rest.text if text else text)
        assert verdict.findings == first.findings + rest.findings
        assert verdict.borderline == stream.borderline
