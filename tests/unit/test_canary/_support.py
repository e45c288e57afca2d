"""Policies and outcomes shared by the canary tests."""

from __future__ import annotations

import random
from typing import Any

import yaml

from policies.canary import Outcome
from policies.document import Policy
from policies.loader import parse_policy


def canary_policy(canary: dict[str, Any] | None = None, *, model: str = "chat") -> Policy:
    """Two versions of ``model`` on one provider; ``canary`` is its canary section."""
    doc: dict[str, Any] = {
        "backends": {"api": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {model: {"versions": {"v1": {"deployments": [{"backend": "api", "model": "m-1"}]},
                                        "v2": {"deployments": [{"backend": "api", "model": "m-2"}]}},
                           "stable": "v1"},
                   "other": {"deployments": [{"backend": "api", "model": "o"}]}},
    }
    if canary is not None:
        doc["models"][model]["canary"] = canary
    return parse_policy(yaml.safe_dump(doc))


def plan(steps: list[float] | None = None, **guards: Any) -> dict[str, Any]:
    """A canary of v2 with a fast plan: no minimum duration, 50 requests a step."""
    return {"version": "v2", "plan": {"steps": steps or [0.05, 0.25, 1.0], "min_step_duration_s": 0,
                                      "min_requests_per_step": 50,
                                      "guards": {"min_samples": 50, **guards}}}


def outcome(rng: random.Random, *, error_rate: float = 0.01, latency: float = 0.2) -> Outcome:
    """A request: fails with ``error_rate``; latency around ``latency`` (lognormal, sigma 0.25)."""
    if rng.random() < error_rate:
        return Outcome(ok=False, status=502)
    seconds = latency * rng.lognormvariate(0, 0.25)
    return Outcome(ok=True, status=200, ttft_s=seconds, e2e_s=seconds * 3)
