"""Difficulty routes: one public name, a cheap and a strong model, a threshold between them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from backends.errors import InvalidRequestError
from backends.types import Message
from router.difficulty.context import router_text
from router.hashing import stable_hash

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
    reason: Literal["score", "header", "sticky", "escalated"]
    """``score``: a new conversation (or stickiness off); ``sticky``: the conversation kept its
    tier; ``escalated``: a cheap conversation's turn passed the escalation bar."""
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


class TierMemory:
    """The tier each recent conversation runs on (bounded, least recently used first out).

    Per process: replicas behind a balancer each remember the conversations they served.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._tiers: OrderedDict[str, Tier] = OrderedDict()
        self._max = max_entries

    def get(self, key: str) -> Tier | None:
        return self._tiers.get(key)

    def put(self, key: str, tier: Tier) -> None:
        self._tiers[key] = tier
        self._tiers.move_to_end(key)
        while len(self._tiers) > self._max:
            self._tiers.popitem(last=False)


def conversation_key(messages: Sequence[Message], sticky_key: str) -> str | None:
    """A conversation's identity: the sticky key and its opening (system and first user turn),
    the same on every turn; None for a request that opens a conversation (no assistant turn)."""
    if not any(m.role == "assistant" for m in messages):
        return None
    return opening_key(messages, sticky_key)


def opening_key(messages: Sequence[Message], sticky_key: str) -> str:
    """The key a conversation's later turns will have (``conversation_key``), from its first."""
    opening: list[str] = [sticky_key]
    for message in messages:
        opening.append(f"{message.role}\x1f{message.content!r}")
        if message.role == "user":
            break
    return stable_hash("\x1e".join(opening)).hex()


def history_tokens(messages: Sequence[Message]) -> int:
    """About how many tokens the other tier would prefill uncached (4 characters a token)."""
    return sum(len(m.content) if isinstance(m.content, str) else len(repr(m.content)) for m in messages) // 4


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
        sticky: Decide per conversation: a later turn keeps its conversation's tier, unless a
            cheap conversation's turn scores past ``escalation_threshold`` plus the switch cost.
        escalation_threshold: The bar for moving a cheap conversation to the strong tier.
        switch_cost_per_1k_tokens: Added to that bar per thousand tokens of history the strong
            tier would prefill uncached (a switch loses the cached prefix).
        memory: The conversations' tiers.
    """

    name: str
    cheap: str
    strong: str
    threshold: float
    allow_tier_header: bool
    scorer: Scorer
    sticky: bool = False
    escalation_threshold: float = 1.0
    switch_cost_per_1k_tokens: float = 0.0
    memory: TierMemory = field(default_factory=TierMemory)

    def decide(self, messages: Sequence[Message], headers: Mapping[str, str],
               threshold: float | None = None, sticky_key: str = "") -> TierDecision:
        """Pick the tier for one request; ``threshold`` is a tenant's or key's override,
        ``sticky_key`` (session, user, else key) tells conversations with one opening apart."""
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
        if not self.sticky:
            return TierDecision(self.name, tier, self._model(tier), score, limit, "score", self.scorer.version)
        key = conversation_key(messages, sticky_key)
        kept = self.memory.get(key) if key is not None else None
        reason: Literal["score", "sticky", "escalated"] = "score"
        if kept == "strong":
            tier, reason = "strong", "sticky"
        elif kept == "cheap":
            bar = self.escalation_threshold + self.switch_cost_per_1k_tokens * history_tokens(messages) / 1000
            tier, reason = ("strong", "escalated") if score >= max(bar, limit) else ("cheap", "sticky")
        self.memory.put(key if key is not None else opening_key(messages, sticky_key), tier)
        return TierDecision(self.name, tier, self._model(tier), score, limit, reason, self.scorer.version)

    def _model(self, tier: Tier) -> str:
        return self.strong if tier == "strong" else self.cheap
