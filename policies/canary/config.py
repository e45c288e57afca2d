"""The canary part of a model in the policy document (``models.<name>.canary``).

A model with ``versions`` serves its ``stable`` version; ``canary`` sends a share of users
to another version (a split) or a copy of a share of requests to it (shadow), and an
optional ``plan`` raises that share step by step while guards compare the canary with
stable, rolling it back at once when it is worse.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from backends.config import StrictModel

Ratio = Annotated[float, Field(ge=1)]


class GuardsConfig(StrictModel):
    """When the canary counts as worse than stable (``canary.plan.guards``).

    Each guard compares the canary with stable over the same window (the current step) and
    needs ``min_samples`` of each before it judges; ``null`` turns a guard off. A guard
    breaches only when a one-sided statistical test says so at ``confidence``, so a few bad
    requests never roll a canary back by themselves.
    """

    error_rate_ratio: Ratio | None = 2.0
    """Breach when the canary's error rate is significantly above this multiple of stable's
    (two-proportion z-test). Errors: failures of the version (5xx, 429, timeouts, streams cut
    upstream), not the client's own 4xx."""
    ttft_p95_ratio: Ratio | None = 1.5
    """Breach when the canary's p95 time to first byte is significantly above this multiple
    of stable's p95 (binomial test on the share of canary requests slower than that)."""
    e2e_p95_ratio: Ratio | None = 1.5
    """The same for the end-to-end duration of successful requests."""
    moderation_block_rate_ratio: Ratio | None = 2.0
    """Breach when the share of answers blocked by output moderation is significantly above
    this multiple of stable's."""
    min_samples: Annotated[int, Field(ge=10)] = 100
    """Requests (latency samples for the latency guards) each version needs in the window
    before a guard judges; until then it waits."""
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = 0.95
    """One-sided confidence a breach needs: 0.95 accepts a 5% chance that a guard rolls
    back a canary that is within its ratio; 0.99 needs more evidence (and requests)."""


DEFAULT_STEPS = (0.01, 0.05, 0.25, 0.5, 1.0)


class PlanConfig(StrictModel):
    """An automatic rollout (``canary.plan``): the canary's weight goes up step by step.

    A step ends when it has lasted ``min_step_duration_s``, the canary has served
    ``min_requests_per_step`` requests in it, and every guard passes: the weight moves to
    the next step, and reaching 1.0 promotes the canary. A breach at any time rolls it back
    (weight 0). If the last step is below 1.0, the rollout holds there once it passes;
    promote it by hand.
    """

    steps: Annotated[list[float], Field(min_length=1, default_factory=lambda: list(DEFAULT_STEPS))]
    """Canary weights, increasing, each in (0, 1]."""
    min_step_duration_s: Annotated[float, Field(ge=0)] = 300.0
    """Shortest time at one step."""
    min_requests_per_step: Annotated[int, Field(ge=0)] = 200
    """Canary requests (mirrored requests in shadow mode) a step needs before it may end."""
    guards: GuardsConfig = GuardsConfig()

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in steps):
            raise ValueError("every step must be in (0, 1]")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError("steps must increase")
        return steps


class CanaryConfig(StrictModel):
    """A canary of one model (``models.<name>.canary``): a version beside ``stable``.

    Give ``weight`` for a fixed split, ``plan`` for an automatic rollout, or ``shadow: true``
    to mirror requests to the canary instead of splitting users. Changing any of this (or
    ``stable``) starts a new rollout from its first step.
    """

    version: str
    """The version under test (a key of ``versions``, not ``stable``)."""
    weight: Annotated[float, Field(ge=0, le=1)] | None = None
    """A fixed share of sticky keys (users, sessions) sent to the canary; no plan, no guards."""
    shadow: bool = False
    """Mirror instead of split: every user is answered by stable, and a copy of a share of
    requests goes to the canary, whose answer is discarded but measured."""
    shadow_share: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of requests mirrored in shadow mode."""
    shadow_max_concurrency: Annotated[int, Field(ge=1)] = 16
    """Mirrored calls in flight at once per gateway process; beyond it, requests are not
    mirrored (the user's request never waits for a mirror)."""
    plan: PlanConfig | None = None
    """Steps and guards of an automatic rollout; in shadow mode, only its duration, request
    count and guards are used (the weight stays 0)."""

    @model_validator(mode="after")
    def _one_mode(self) -> CanaryConfig:
        if self.weight is not None and self.plan is not None:
            raise ValueError("give weight (a fixed split) or plan (an automatic rollout), not both")
        if self.weight is not None and self.shadow:
            raise ValueError("a shadow canary splits no users: remove weight")
        if self.weight is None and self.plan is None and not self.shadow:
            raise ValueError("give weight (a fixed split), plan (an automatic rollout) or shadow: true")
        return self
