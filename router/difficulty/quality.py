"""Routing quality as routing research measures it: cost-quality curve, APGR, CPT.

Sort the prompts by router score, most difficult first, and send the top share ``s`` to the
strong model. The routed quality ``q(s)`` is the mean over prompts of the strong tier's quality
where routed strong and the cheap tier's elsewhere. The performance gap recovered is
``PGR(s) = (q(s) - q_cheap) / (q_strong - q_cheap)``; **APGR** is the area under ``PGR`` over
``s`` in [0, 1], so routing at random scores 0.5 and a perfect router close to 1 (more is
possible where the cheap tier beats the strong one on some prompts). **CPT(x)** is the least
strong-call share with ``PGR >= x``. Tied scores are handled exactly: within a tie the curve is
the expectation over random tie-breaking, so a constant score is the random router.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CostQualityCurve:
    """Routed quality against strong-call share, at each distinct score threshold."""

    strong_share: FloatArray
    """From 0 (everything cheap) to 1 (everything strong), increasing."""
    quality: FloatArray
    cheap_quality: float
    strong_quality: float

    @property
    def pgr(self) -> FloatArray:
        """Performance gap recovered at each point of the curve."""
        return (self.quality - self.cheap_quality) / (self.strong_quality - self.cheap_quality)

    def apgr(self) -> float:
        """Area under PGR over strong share in [0, 1]; random routing scores 0.5."""
        x, y = self.strong_share, self.pgr
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))

    def cpt(self, recovered: float) -> float:
        """The least strong-call share whose PGR reaches ``recovered`` (e.g. 0.5 or 0.8)."""
        pgr = self.pgr
        above = np.flatnonzero(pgr >= recovered)
        i = int(above[0])
        if i == 0:
            return 0.0
        x0, x1, y0, y1 = self.strong_share[i - 1], self.strong_share[i], pgr[i - 1], pgr[i]
        return float(x0 + (x1 - x0) * (recovered - y0) / (y1 - y0))


def cost_quality_curve(
    scores: Sequence[float] | FloatArray,
    cheap_quality: Sequence[float] | FloatArray,
    strong_quality: Sequence[float] | FloatArray,
) -> CostQualityCurve:
    """The curve of a router's ``scores`` (higher = more in need of the strong model).

    Raises:
        ValueError: the arrays differ in length, are empty, or the strong tier is not better
            than the cheap one on average (then there is no gap to recover).
    """
    s = np.asarray(scores, dtype=np.float64)
    cheap = np.asarray(cheap_quality, dtype=np.float64)
    strong = np.asarray(strong_quality, dtype=np.float64)
    if not (s.shape == cheap.shape == strong.shape) or s.size == 0:
        raise ValueError("scores, cheap_quality and strong_quality must be non-empty and of one length")
    q_cheap, q_strong = float(cheap.mean()), float(strong.mean())
    if q_strong <= q_cheap:
        raise ValueError(f"strong tier ({q_strong:.4f}) is not better than cheap ({q_cheap:.4f})")
    order = np.argsort(-s, kind="stable")
    gains = np.concatenate([[0.0], np.cumsum((strong - cheap)[order])])
    # the curve's corners are the ends of runs of equal scores; straight lines between them
    sorted_scores = s[order]
    ends = np.flatnonzero(np.concatenate([sorted_scores[1:] != sorted_scores[:-1], [True]])) + 1
    k = np.concatenate([[0], ends])
    return CostQualityCurve(k / s.size, (cheap.sum() + gains[k]) / s.size, q_cheap, q_strong)


@dataclass(frozen=True, slots=True)
class RoutingScore:
    """The summary of one router on one set."""

    apgr: float
    cpt50: float
    cpt80: float

    @classmethod
    def of(cls, curve: CostQualityCurve) -> RoutingScore:
        """APGR, CPT(50%) and CPT(80%) of a curve."""
        return cls(curve.apgr(), curve.cpt(0.5), curve.cpt(0.8))


def random_routing(
    cheap_quality: FloatArray, strong_quality: FloatArray, *, draws: int = 200, seed: int = 0
) -> RoutingScore:
    """Random routing, averaged over ``draws`` seeded random scorings (expected APGR: 0.5)."""
    rng = np.random.default_rng(seed)
    results = [RoutingScore.of(cost_quality_curve(rng.random(cheap_quality.size), cheap_quality,
                                                  strong_quality)) for _ in range(draws)]
    return RoutingScore(*(float(np.mean([getattr(r, f) for r in results])) for f in ("apgr", "cpt50", "cpt80")))


def bootstrap_apgr(
    scores: dict[str, FloatArray],
    cheap_quality: FloatArray,
    strong_quality: FloatArray,
    *,
    draws: int = 500,
    seed: int = 0,
) -> dict[str, FloatArray]:
    """APGR of each router on ``draws`` resamples of the prompts (the same resamples for all).

    Paired resamples let a caller read both an interval per router and how often one router
    beats another; resamples whose strong tier is not better than the cheap one are skipped.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {name: [] for name in scores}
    n = cheap_quality.size
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        if strong_quality[idx].mean() <= cheap_quality[idx].mean():
            continue
        for name, s in scores.items():
            out[name].append(cost_quality_curve(s[idx], cheap_quality[idx], strong_quality[idx]).apgr())
    return {name: np.asarray(v) for name, v in out.items()}
