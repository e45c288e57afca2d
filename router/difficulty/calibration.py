"""Pick the score threshold that sends a chosen share of traffic to the strong model.

Operators think in budgets ("at most 30% of calls to the strong model"), the router in a
threshold on a score. ``calibrate`` turns one into the other on a sample of scores,
best a sample of your own recent traffic scored by the classifier in use.

How much quality the threshold keeps is estimated from the scores themselves. A score is on
the classifier's training scale, the strong tier's quality gain mapped to [0, 1], so
``2 * score - 1`` is the expected gain of answering with the strong model (1 = a full gain,
0 = none, below 0 = the cheap model is expected to do better). The positive part is the
prompt's expected *need*: the prompts above the threshold carry ``sum(need above) /
sum(need)`` of it, the expected share of the cheap-to-strong gap recovered. The estimate is only as good as the model's
calibration on your traffic; when the sample also has each tier's measured quality per prompt,
the measured figures are returned alongside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.difficulty.quality import FloatArray


@dataclass(frozen=True, slots=True)
class Calibration:
    """A threshold and what it does on the sample it was picked on."""

    threshold: float
    """Route to the strong model when ``score >= threshold``."""
    strong_share: float
    """Share of the sample at or above the threshold (ties can make it exceed the target)."""
    expected_gap_recovered: float
    """Estimated share of the cheap-to-strong quality gap kept (1.0 = as good as all-strong)."""
    expected_missed_share: float
    """Estimated share of all calls that need the strong model but go to the cheap one
    (expected need, in full gains, of the prompts below the threshold, per call)."""
    measured_quality: float | None = None
    """Mean routed quality on the sample, when per-prompt quality was given."""
    measured_gap_recovered: float | None = None
    """Measured performance gap recovered, when per-prompt quality was given."""


def calibrate(
    scores: Sequence[float] | FloatArray,
    strong_share: float,
    *,
    cheap_quality: Sequence[float] | FloatArray | None = None,
    strong_quality: Sequence[float] | FloatArray | None = None,
) -> Calibration:
    """The threshold that sends ``strong_share`` of the sampled prompts to the strong model.

    Args:
        scores: classifier scores (gain scale, see the module) of a sample of prompts.
        strong_share: the share of calls to send to the strong model, in [0, 1].
        cheap_quality: optional per-prompt quality of the cheap model on the same sample.
        strong_quality: optional per-prompt quality of the strong model on the same sample.

    Raises:
        ValueError: empty sample, a share outside [0, 1], scores outside [0, 1], or quality
            arrays given alone or of another length.
    """
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("need a non-empty 1-D sample of scores")
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError(f"strong_share must be in [0, 1], not {strong_share}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("scores must be probabilities in [0, 1]")
    ranked = np.sort(p)[::-1]
    k = round(strong_share * p.size)
    # k prompts go strong: the threshold is the k-th highest score; k = 0 needs one above all
    threshold = float(ranked[k - 1]) if k > 0 else math.nextafter(float(ranked[0]), math.inf)
    strong = p >= threshold
    need = np.maximum(2.0 * p - 1.0, 0.0)
    total = float(need.sum())
    result = Calibration(
        threshold=threshold,
        strong_share=float(strong.mean()),
        expected_gap_recovered=float(need[strong].sum() / total) if total > 0 else 1.0,
        expected_missed_share=float(need[~strong].sum() / p.size),
    )
    if cheap_quality is None and strong_quality is None:
        return result
    return _with_measured(result, strong, cheap_quality, strong_quality)


def _with_measured(result: Calibration, strong: np.ndarray, cheap_quality: object,
                   strong_quality: object) -> Calibration:
    if cheap_quality is None or strong_quality is None:
        raise ValueError("give both cheap_quality and strong_quality, or neither")
    cheap = np.asarray(cheap_quality, dtype=np.float64)
    best = np.asarray(strong_quality, dtype=np.float64)
    if cheap.shape != strong.shape or best.shape != strong.shape:
        raise ValueError("quality arrays must have one value per score")
    quality = float(np.where(strong, best, cheap).mean())
    gap = float(best.mean() - cheap.mean())
    recovered = (quality - float(cheap.mean())) / gap if gap > 0 else None
    return Calibration(result.threshold, result.strong_share, result.expected_gap_recovered,
                       result.expected_missed_share, quality, recovered)
