"""The statistical judgement of a canary against stable: pass, breach or wait, with reasons.

Two kinds of guard, each one-sided (only "the canary is worse" matters) at the configured
confidence, and silent until both versions have ``min_samples`` in the window:

* **Rates** (errors, moderation blocks): is the canary's rate above ``ratio`` x stable's?
  A two-proportion z-test on Agresti-Caffo estimates (one success and one failure added to
  each side), so zero counts still give a usable variance:
  ``z = (pc - r*ps) / sqrt(pc(1-pc)/(nc+2) + r^2 ps(1-ps)/(ns+2))``, breach when ``z``
  exceeds the normal quantile of ``confidence``.
* **p95 latencies** (TTFT, end-to-end): is the canary's p95 above ``ratio`` x stable's p95?
  With ``T = ratio * p95(stable)``, the canary's p95 is above ``T`` exactly when more than
  5% of its requests are slower than ``T``; a one-sided binomial test (normal approximation
  with continuity correction) asks whether the share of canary requests above ``T`` is
  significantly over 5%. One slow request moves that share by ``1/n`` and never breaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from policies.canary.config import GuardsConfig
from policies.canary.stats import Histogram, VersionStats

Judgement = Literal["pass", "breach", "wait"]
_TAIL = 0.05  # p95


@dataclass(frozen=True, slots=True)
class GuardCheck:
    """One guard's judgement and the numbers behind it."""

    guard: str
    """``error_rate``, ``moderation_block_rate``, ``ttft_p95`` or ``e2e_p95``."""
    judgement: Judgement
    stable: float | None
    """Stable's rate or p95 (seconds) over the window."""
    canary: float | None
    limit: float
    """The configured ratio."""
    z: float | None
    """The test statistic; breach when above the normal quantile of the confidence."""
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"guard": self.guard, "judgement": self.judgement, "stable": self.stable,
                "canary": self.canary, "ratio_limit": self.limit, "z": self.z, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Verdict:
    """All guards together: breach if one breaches, else wait if one waits, else pass."""

    judgement: Judgement
    checks: tuple[GuardCheck, ...]

    @property
    def reasons(self) -> list[str]:
        """Why: the breaching guards' reasons on a breach, the waiting ones' on a wait."""
        return [c.reason for c in self.checks if c.judgement == self.judgement]


def judge(stable: VersionStats, canary: VersionStats, guards: GuardsConfig) -> Verdict:
    """Compare ``canary`` with ``stable`` over the same window under ``guards``."""
    critical = NormalDist().inv_cdf(guards.confidence)
    checks: list[GuardCheck] = []
    if guards.error_rate_ratio is not None:
        checks.append(rate_check("error_rate", stable.errors, stable.requests, canary.errors, canary.requests,
                                 guards.error_rate_ratio, guards.min_samples, critical))
    if guards.moderation_block_rate_ratio is not None:
        checks.append(rate_check("moderation_block_rate", stable.blocks, stable.requests, canary.blocks,
                                 canary.requests, guards.moderation_block_rate_ratio, guards.min_samples, critical))
    if guards.ttft_p95_ratio is not None:
        checks.append(p95_check("ttft_p95", stable.ttft, canary.ttft, guards.ttft_p95_ratio,
                                guards.min_samples, critical))
    if guards.e2e_p95_ratio is not None:
        checks.append(p95_check("e2e_p95", stable.e2e, canary.e2e, guards.e2e_p95_ratio,
                                guards.min_samples, critical))
    judgements = {c.judgement for c in checks}
    judgement: Judgement = "breach" if "breach" in judgements else "wait" if "wait" in judgements else "pass"
    return Verdict(judgement, tuple(checks))


def rate_check(guard: str, stable_hits: float, stable_n: float, canary_hits: float, canary_n: float,
               ratio: float, min_samples: int, critical: float) -> GuardCheck:
    """Is the canary's rate significantly above ``ratio`` x stable's?"""
    observed_s = stable_hits / stable_n if stable_n else None
    observed_c = canary_hits / canary_n if canary_n else None
    if min(stable_n, canary_n) < min_samples:
        return GuardCheck(guard, "wait", observed_s, observed_c, ratio, None,
                          f"{guard}: {_fewest(stable_n, canary_n)} requests, needs {min_samples} of each version")
    ps = (stable_hits + 1) / (stable_n + 2)
    pc = (canary_hits + 1) / (canary_n + 2)
    spread = math.sqrt(pc * (1 - pc) / (canary_n + 2) + ratio**2 * ps * (1 - ps) / (stable_n + 2))
    z = (pc - ratio * ps) / spread
    rates = f"canary {observed_c:.2%} of {canary_n:.0f} vs stable {observed_s:.2%} of {stable_n:.0f}"
    if z > critical:
        return GuardCheck(guard, "breach", observed_s, observed_c, ratio, z,
                          f"{guard}: {rates}, significantly above {ratio:g}x (z={z:.2f})")
    return GuardCheck(guard, "pass", observed_s, observed_c, ratio, z,
                      f"{guard}: {rates}, within {ratio:g}x (z={z:.2f})")


def p95_check(guard: str, stable: Histogram, canary: Histogram, ratio: float, min_samples: int,
              critical: float) -> GuardCheck:
    """Is the canary's p95 significantly above ``ratio`` x stable's p95?"""
    n_s, n_c = stable.total, canary.total
    p95_s, p95_c = stable.quantile(0.95), canary.quantile(0.95)
    if min(n_s, n_c) < min_samples or p95_s is None or p95_c is None:
        return GuardCheck(guard, "wait", p95_s, p95_c, ratio, None,
                          f"{guard}: {_fewest(n_s, n_c)} samples, needs {min_samples} of each version")
    threshold = ratio * p95_s
    slower = canary.count_above(threshold)
    z = (slower - 0.5 - _TAIL * n_c) / math.sqrt(n_c * _TAIL * (1 - _TAIL))
    what = (f"canary p95 {p95_c * 1000:.0f} ms vs stable {p95_s * 1000:.0f} ms; "
            f"{slower / n_c:.1%} of {n_c:.0f} canary samples above {threshold * 1000:.0f} ms")
    if z > critical:
        return GuardCheck(guard, "breach", p95_s, p95_c, ratio, z,
                          f"{guard}: {what}, significantly above {ratio:g}x (z={z:.2f})")
    return GuardCheck(guard, "pass", p95_s, p95_c, ratio, z, f"{guard}: {what}, within {ratio:g}x (z={z:.2f})")


def _fewest(stable_n: float, canary_n: float) -> str:
    return f"stable {stable_n:.0f} / canary {canary_n:.0f}"
