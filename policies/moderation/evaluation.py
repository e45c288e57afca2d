"""Scores against labels: precision, recall, F1, AUPRC, false-positive rate, threshold tuning.

Shared by the training script (which tunes thresholds and records dev metrics in the model)
and ``bench/moderation``; numpy only, so the benchmark runs without the ``train`` extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.moderation import data as D
from policies.moderation.categories import CATEGORIES

__all__ = ["Metrics", "average_precision", "benign_fpr", "dev_report", "false_positive_rate", "known_rows",
           "metrics_at", "tune_threshold"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Metrics:
    """One category on one labelled set, at one threshold."""

    n: int
    positives: int
    threshold: float
    precision: float
    recall: float
    f1: float
    auprc: float

    def as_json(self) -> dict[str, float]:
        """Rounded for the model card and the results file."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def average_precision(labels: FloatArray, scores: FloatArray) -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's definition):
    the mean, over positives, of the precision at the score of each positive. Ties count
    together, so the value does not depend on the order of equal scores."""
    positives = float(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    seen = np.arange(1, len(y) + 1)[last_of_tie]
    precision = tp / seen
    recall_gain = np.diff(np.r_[0.0, tp]) / positives
    return float((precision * recall_gain).sum())


def metrics_at(labels: FloatArray, scores: FloatArray, threshold: float) -> Metrics:
    """Precision, recall and F1 of ``scores >= threshold``, with the threshold-free AUPRC."""
    predicted = scores >= threshold
    tp = float((predicted & (labels == 1)).sum())
    fp = float((predicted & (labels == 0)).sum())
    positives = float((labels == 1).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Metrics(len(labels), int(positives), threshold, precision, recall, f1, average_precision(labels, scores))


def false_positive_rate(scores: FloatArray, threshold: float) -> float:
    """Share of (benign) rows scored at or above the threshold."""
    return float((scores >= threshold).mean()) if len(scores) else 0.0


def tune_threshold(labels: FloatArray, scores: FloatArray, benign: FloatArray, *, max_fpr: float = 0.002,
                   floor: float = 0.5) -> float:
    """The threshold with the best F1 on ``labels``/``scores`` among those that flag at most
    ``max_fpr`` of the ``benign`` scores, never below ``floor`` (ties: the higher threshold).

    Candidates are the scores rounded to 0.01 (so the value is stable from run to run) from the
    floor up; if none meets the false-positive bound, the least threshold that does. If no
    allowed threshold finds a single positive (F1 0 at all of them), the least allowed one:
    the tie rule would pick 0.99 and turn the category off on evidence of nothing.
    """
    candidates = np.unique(np.round(np.r_[scores[scores >= floor], benign[benign >= floor], floor, 0.99], 2))
    allowed = [float(t) for t in candidates if false_positive_rate(benign, float(t)) <= max_fpr]
    if not allowed:
        return 0.99
    best = max(allowed[::-1], key=lambda t: metrics_at(labels, scores, t).f1)
    return best if metrics_at(labels, scores, best).f1 > 0 else allowed[0]


def known_rows(scores: Mapping[str, FloatArray], dev: Mapping[str, list[D.Example]], names: Iterable[str],
               k: int) -> tuple[FloatArray, FloatArray]:
    """Labels and scores of category ``k`` over the rows of ``names`` whose label is known."""
    labels, values = [], []
    for name in names:
        y = D.target_matrix(dev[name])[:, k]
        known = ~np.isnan(y)
        labels.append(y[known])
        values.append(scores[name][known, k])
    return np.concatenate(labels), np.concatenate(values)


def dev_report(scores: Mapping[str, FloatArray], dev: Mapping[str, list[D.Example]],
               thresholds: Mapping[str, float]) -> dict[str, Any]:
    """Per category: P/R/F1/AUPRC at the category's threshold on the dev rows of every labelled
    set with positives for it (``openai`` is the reference: the only set labelling every
    category, and the closest to LLM traffic); false-positive rates on the benign sets."""
    per_category: dict[str, Any] = {}
    for k, category in enumerate(CATEGORIES):
        entry: dict[str, Any] = {}
        for name in D.LABELLED:
            y, s = known_rows(scores, dev, (name,), k)
            if y.sum() > 0:
                entry[name] = metrics_at(y, s, thresholds[category]).as_json()
        per_category[category] = entry
    return {"categories": per_category, "false_positive_rates": benign_fpr(scores, dev, thresholds)}


def benign_fpr(scores: Mapping[str, FloatArray], dev: Mapping[str, list[D.Example]],
               thresholds: Mapping[str, float]) -> dict[str, Any]:
    """Share of benign texts that any category flags, per benign pool, with the worst category."""
    t = np.array([thresholds[c] for c in CATEGORIES])
    pools = {"routing_prompts_dev": list(D.BENIGN_SETS), "xstest_safe_prompts": ["mod_xstest_prompts"],
             "xstest_answers_dev": ["mod_xstest_completions"]}
    out: dict[str, Any] = {}
    for pool, names in pools.items():
        s = np.vstack([scores[n] for n in names])
        hits = s >= t
        out[pool] = {"n": len(s), "any_category": round(float(hits.any(axis=1).mean()), 4),
                     "by_category": {c: round(false_positive_rate(s[:, k], thresholds[c]), 4)
                                     for k, c in enumerate(CATEGORIES)}}
    return out
