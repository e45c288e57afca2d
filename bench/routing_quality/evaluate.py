"""Score the shipped classifier and the baselines on each evaluation set.

Routers compared on the same prompts:

- ``model``: the ONNX classifier through ``DifficultyClassifier.score`` (the gateway's path);
- ``random``: random routing, the mean of 200 seeded random scorings (0.5 APGR by construction,
  shown so the metric code is checked on every run);
- ``length``: the longest prompts (in tokens) go to the strong model first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken

from router.difficulty import DifficultyClassifier
from router.difficulty import data as D
from router.difficulty.features import ENCODING
from router.difficulty.quality import (
    CostQualityCurve,
    FloatArray,
    RoutingScore,
    bootstrap_apgr,
    cost_quality_curve,
    random_routing,
)

ROUTERS = ("model", "random", "length")


@dataclass
class SetResult:
    """One evaluation set: its size, the two tiers' quality, each router's curve and scores."""

    name: str
    n: int
    role: str
    cheap_quality: float
    strong_quality: float
    scores: dict[str, RoutingScore]
    curves: dict[str, CostQualityCurve]
    apgr_interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    beats: dict[str, float] = field(default_factory=dict)
    """Share of paired bootstrap resamples in which the model's APGR beats each baseline's."""

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.n, "role": self.role, "licence": D.SETS[self.name].licence,
            "cheap_quality": round(self.cheap_quality, 4), "strong_quality": round(self.strong_quality, 4),
            **{r: {"apgr": round(s.apgr, 4), "cpt50": round(s.cpt50, 4), "cpt80": round(s.cpt80, 4)}
               for r, s in self.scores.items()},
            "model_apgr_90ci": [round(v, 4) for v in self.apgr_interval.get("model", ())],
            "p_model_beats": {k: round(v, 3) for k, v in self.beats.items()},
        }


def evaluate_set(name: str, examples: list[D.Example], classifier: DifficultyClassifier,
                 encoding: tiktoken.Encoding, *, bootstrap: int = 500) -> SetResult:
    """All routers on one set, with a paired-bootstrap interval of the model's APGR."""
    cheap = np.array([e.cheap_quality for e in examples], dtype=np.float64)
    strong = np.array([e.strong_quality for e in examples], dtype=np.float64)
    model = np.array([classifier.score(e.text) for e in examples])
    length = np.array([len(encoding.encode_ordinary(e.text)) for e in examples], dtype=np.float64)
    curves = {"model": cost_quality_curve(model, cheap, strong),
              "random": cost_quality_curve(np.zeros_like(cheap), cheap, strong),  # the expectation
              "length": cost_quality_curve(length, cheap, strong)}
    scores = {"model": RoutingScore.of(curves["model"]), "random": random_routing(cheap, strong),
              "length": RoutingScore.of(curves["length"])}
    result = SetResult(name, len(examples), D.SETS[name].role, float(cheap.mean()), float(strong.mean()),
                       scores, curves)
    if bootstrap:
        rng_scores: dict[str, FloatArray] = {"model": model, "length": length,
                                             "random": np.random.default_rng(1).random(cheap.size)}
        boot = bootstrap_apgr(rng_scores, cheap, strong, draws=bootstrap)
        lo, hi = np.quantile(boot["model"], [0.05, 0.95])
        result.apgr_interval["model"] = (float(lo), float(hi))
        result.beats = {b: float(np.mean(boot["model"] > boot[b])) for b in ("random", "length")}
    return result


def evaluate(data_dir: Path, classifier: DifficultyClassifier, *, bootstrap: int = 500) -> list[SetResult]:
    """Every evaluated set of ``router.difficulty.data`` (dev split, or whole if never trained on)."""
    encoding = tiktoken.get_encoding(ENCODING)
    return [evaluate_set(name, D.evaluation_rows(data_dir, name), classifier, encoding, bootstrap=bootstrap)
            for name in D.EVALUATED]


def mean_apgr(results: list[SetResult], router: str, *, roles: tuple[str, ...] = ("train", "eval_only")) -> float:
    """APGR of one router averaged over the sets (equal weight per set)."""
    return float(np.mean([r.scores[router].apgr for r in results if r.role in roles]))


def render_table(results: list[SetResult]) -> str:
    """The Markdown table of the docs and of stdout."""
    head = ("| set | n | cheap → strong quality | APGR model [90% CI] | APGR random | APGR length "
            "| CPT(50%) model / random / length | CPT(80%) model / random / length |")
    lines = [head, "|" + " --- |" * 8]
    for r in results:
        s = r.scores
        lo, hi = r.apgr_interval.get("model", (float("nan"), float("nan")))
        mark = "" if r.role == "train" else " *"
        lines.append(
            f"| {r.name}{mark} | {r.n} | {r.cheap_quality:.3f} → {r.strong_quality:.3f} "
            f"| **{s['model'].apgr:.3f}** [{lo:.2f}, {hi:.2f}] | {s['random'].apgr:.3f} | {s['length'].apgr:.3f} "
            f"| {s['model'].cpt50:.1%} / {s['random'].cpt50:.1%} / {s['length'].cpt50:.1%} "
            f"| {s['model'].cpt80:.1%} / {s['random'].cpt80:.1%} / {s['length'].cpt80:.1%} |")
    means = {router: mean_apgr(results, router) for router in ROUTERS}
    lines.append(f"| **mean of {len(results)} sets** | | | **{means['model']:.3f}** | {means['random']:.3f} "
                 f"| {means['length']:.3f} | | |")
    return "\n".join(lines)


def compare(data_dir: Path, new: DifficultyClassifier, old: DifficultyClassifier, *,
            draws: int = 500) -> str:
    """Markdown table: two model files on the same evaluation rows, APGR difference with a
    paired-bootstrap 90 % interval and the share of resamples in which ``new`` wins."""
    lines = ["| set | APGR old → new | difference [90 % CI] | P(new better) |", "|" + " --- |" * 4]
    for name in D.EVALUATED:
        rows = D.evaluation_rows(data_dir, name)
        cheap = np.array([e.cheap_quality for e in rows], dtype=np.float64)
        strong = np.array([e.strong_quality for e in rows], dtype=np.float64)
        scores = {label: np.array([c.score(e.text) for e in rows]) for label, c in (("old", old), ("new", new))}
        point = {label: cost_quality_curve(s, cheap, strong).apgr() for label, s in scores.items()}
        boot = bootstrap_apgr(scores, cheap, strong, draws=draws)
        diff = boot["new"] - boot["old"]
        lo, hi = np.quantile(diff, [0.05, 0.95])
        lines.append(f"| {name} | {point['old']:.3f} → {point['new']:.3f} | {diff.mean():+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] | {np.mean(diff > 0):.2f} |")
    return "\n".join(lines)
