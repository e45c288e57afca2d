from __future__ import annotations

from typing import Any

import pytest

from backends.errors import InvalidRequestError
from backends.types import Message
from router.tiering import DifficultyRoute, share_threshold


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
