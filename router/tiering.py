"""Difficulty routes: one public name, a cheap and a strong model, a threshold between them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from backends.errors import InvalidRequestError
from backends.types import Message
from router.difficulty.context import router_text

TIER_HEADER = "x-switchyard-tier"
Tier = Literal["cheap", "strong"]


class Scorer(Protocol):
    """What a difficulty route needs of the classifier."""

    version: str
    summary: dict[str, Any]

    def score(self, text: str) -> float: ...


@dataclass(frozen=True, slots=True)
class TierDecision:
    """Which tier answers, and why; goes on the response headers and the trace."""

    route: str
    tier: Tier
    model: str
    """The public model name of the chosen tier."""
    score: float | None
    """How much the strong model is needed (0.5: no gain expected); None when a header forced
    the tier (the classifier did not run)."""
    threshold: float
    reason: Literal["score", "header"]
    classifier_version: str


def share_threshold(scorer: Scorer, strong_share: float) -> float:
    """The threshold sending ``strong_share`` of the training dev split to the strong tier.

    Raises:
        ValueError: the model file records no score distribution to calibrate with.
    """
    quantiles = scorer.summary.get("dev_score_quantiles")
    if not isinstance(quantiles, list) or len(quantiles) < 2:
        raise ValueError("the difficulty model records no dev score quantiles; give a threshold "
                         "or use `switchyard route calibrate` on a traffic sample")
    position = (1.0 - strong_share) * (len(quantiles) - 1)
    low = int(position)
    high = min(low + 1, len(quantiles) - 1)
    return float(quantiles[low] + (quantiles[high] - quantiles[low]) * (position - low))


@dataclass(frozen=True, slots=True)
class DifficultyRoute:
    """A compiled ``routes.<name>`` entry.

    Args:
        name: The public name (e.g. ``auto``).
        cheap: Public model of the cheap tier.
        strong: Public model of the strong tier.
        threshold: Scores at or above go to the strong tier.
        allow_tier_header: Honour ``x-switchyard-tier``.
        scorer: The process's one classifier.
    """

    name: str
    cheap: str
    strong: str
    threshold: float
    allow_tier_header: bool
    scorer: Scorer

    def decide(self, messages: Sequence[Message], headers: Mapping[str, str],
               threshold: float | None = None) -> TierDecision:
        """Pick the tier for one request; ``threshold`` is a tenant's or key's override."""
        limit = self.threshold if threshold is None else threshold
        forced = headers.get(TIER_HEADER)
        if forced is not None and self.allow_tier_header:
            if forced not in ("cheap", "strong"):
                raise InvalidRequestError(f"{TIER_HEADER} must be 'cheap' or 'strong', not {forced!r}",
                                          param=TIER_HEADER)
            tier: Tier = "strong" if forced == "strong" else "cheap"
            return TierDecision(self.name, tier, self._model(tier), None, limit, "header",
                                self.scorer.version)
        score = self.scorer.score(router_text(messages))
        tier = "strong" if score >= limit else "cheap"
        return TierDecision(self.name, tier, self._model(tier), score, limit, "score", self.scorer.version)

    def _model(self, tier: Tier) -> str:
        return self.strong if tier == "strong" else self.cheap
