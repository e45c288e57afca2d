from __future__ import annotations

from typing import Any

import pytest

from backends.errors import InvalidRequestError
from backends.types import Message
from router.tiering import DifficultyRoute, Scorer, share_threshold


class FixedScorer:
    version = "test:1"

    def __init__(self, score: float, quantiles: list[float] | None = None) -> None:
        self._score = score
        self.summary: dict[str, Any] = {"dev_score_quantiles": quantiles} if quantiles else {}
        self.calls = 0

    def score(self, text: str) -> float:
        self.calls += 1
        return self._score


def route(score: float, allow_header: bool = True) -> tuple[DifficultyRoute, FixedScorer]:
    scorer = FixedScorer(score)
    return DifficultyRoute("auto", "small", "big", 0.5, allow_header, scorer), scorer


USER = [Message(role="user", content="question")]


def test_threshold_splits_tiers_inclusively() -> None:
    assert route(0.49)[0].decide(USER, {}).model == "small"
    decision = route(0.5)[0].decide(USER, {})
    assert (decision.tier, decision.model, decision.score, decision.reason) == ("strong", "big", 0.5, "score")


def test_override_threshold_wins() -> None:
    assert route(0.3)[0].decide(USER, {}, threshold=0.2).tier == "strong"


def test_header_forces_tier_only_when_allowed() -> None:
    allowed, scorer = route(0.9)
    assert allowed.decide(USER, {"x-switchyard-tier": "cheap"}).model == "small"
    assert scorer.calls == 0
    assert route(0.9, allow_header=False)[0].decide(USER, {"x-switchyard-tier": "cheap"}).model == "big"
    with pytest.raises(InvalidRequestError):
        allowed.decide(USER, {"x-switchyard-tier": "huge"})


def test_share_threshold_interpolates_dev_quantiles() -> None:
    quantiles = [i / 100 for i in range(101)]  # uniform scores
    assert share_threshold(FixedScorer(0, quantiles), 0.3) == pytest.approx(0.7)
    assert share_threshold(FixedScorer(0, quantiles), 0.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        share_threshold(FixedScorer(0), 0.3)


class ScriptedScorer(FixedScorer):
    """Scores each request's last user turn from a table (the conversation's turns)."""

    def __init__(self, scores: dict[str, float]) -> None:
        super().__init__(0.0)
        self._scores = scores

    def score(self, text: str) -> float:
        self.calls += 1
        # the last turn is last in the classifier's text: the word found latest decides
        return self._scores[max(self._scores, key=text.rfind)]


def sticky_route(scorer: Scorer, **options: Any) -> DifficultyRoute:
    settings = {"sticky": True, "escalation_threshold": 0.8, "switch_cost_per_1k_tokens": 0.0, **options}
    return DifficultyRoute("auto", "small", "big", 0.5, False, scorer, **settings)


def turns(*users: str) -> list[list[Message]]:
    """The requests of one conversation: each turn carries the earlier ones and their answers."""
    out, history = [], [Message(role="system", content="be brief")]
    for index, user in enumerate(users):
        history = [*history, Message(role="user", content=user)]
        out.append(history)
        history = [*history, Message(role="assistant", content=f"answer {index}")]
    return out


def tiers(route: DifficultyRoute, requests: list[list[Message]], sticky_key: str = "u1") -> list[tuple[str, str]]:
    return [(d.tier, d.reason) for d in (route.decide(r, {}, sticky_key=sticky_key) for r in requests)]


def test_a_conversation_keeps_its_tier_below_the_escalation_bar() -> None:
    scorer = ScriptedScorer({"easy": 0.2, "medium": 0.6, "hard": 0.9})
    conversation = turns("easy start", "medium follow-up", "easy again", "hard question", "easy end")
    assert tiers(sticky_route(scorer), conversation) == [
        ("cheap", "score"), ("cheap", "sticky"), ("cheap", "sticky"), ("strong", "escalated"), ("strong", "sticky")]
    # per request, the same conversation flips four times
    per_request = DifficultyRoute("auto", "small", "big", 0.5, False, scorer)
    assert [d for d, _ in tiers(per_request, conversation)] == ["cheap", "strong", "cheap", "strong", "cheap"]


def test_a_strong_opening_stays_strong_and_conversations_are_apart() -> None:
    scorer = ScriptedScorer({"hard": 0.9, "easy": 0.1})
    route = sticky_route(scorer)
    assert tiers(route, turns("hard opening", "easy")) == [("strong", "score"), ("strong", "sticky")]
    # another user with another opening is decided on its own
    assert tiers(route, turns("easy opening", "easy"), sticky_key="u2") == [("cheap", "score"), ("cheap", "sticky")]


def test_the_switch_cost_raises_the_escalation_bar_with_the_history() -> None:
    scorer = ScriptedScorer({"long": 0.2, "hard": 0.85})
    long_turn = "long " + "context words " * 400  # ~1,300 tokens the strong tier would prefill
    conversation = turns(long_turn, "hard question")
    assert tiers(sticky_route(scorer, switch_cost_per_1k_tokens=0.0), conversation)[1] == ("strong", "escalated")
    assert tiers(sticky_route(scorer, switch_cost_per_1k_tokens=0.1), conversation)[1] == ("cheap", "sticky")
