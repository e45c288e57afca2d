"""Issue 18's any-category views: ``python -m bench.moderation.any_category [--classifier cascade]``.

The model card's tables are per category; issue 18 also judged the classifier as one flag (any
category at its threshold) on sets whose labels are not our categories:

- **OpenAI moderation, dev split**: a text is positive if any category is; the score is the
  highest ``score / threshold`` over the categories (AUPRC), the flag any category at its
  threshold (precision, recall, F1);
- **XSTest prompts** (never trained on): the unsafe prompts as positives (privacy, drugs and
  fraud are unsafe for reasons outside our categories, so recall is bounded), the safe ones as
  negatives: F1 of the flag and the share of safe prompts flagged;
- **SafeText** (MIT; evaluation only, never trained on): everyday scenarios with safe or
  physically unsafe advice; AUPRC of the same score (0.5: not separated).

Each text is scored as the gateway scores it (the max over its stream windows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.moderation.quality import window_scores
from policies.moderation import ModerationClassifier
from policies.moderation import data as D
from policies.moderation.categories import CATEGORIES
from policies.moderation.evaluation import average_precision, metrics_at
from policies.moderation.rules import Scorer
from policies.moderation.scorers import ModerationModels

HERE = Path(__file__).resolve().parent


def _score(classifier: Scorer, texts: list[str]) -> np.ndarray:
    """Highest ``score / threshold`` over the categories: >= 1 means flagged."""
    t = np.array([classifier.thresholds[c] for c in CATEGORIES])
    return np.asarray((window_scores(classifier, texts) / t).max(axis=1), dtype=np.float64)


def _view(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    m = metrics_at(labels, scores, 1.0)
    return {"n": m.n, "positives": m.positives, "precision": round(m.precision, 4), "recall": round(m.recall, 4),
            "f1": round(m.f1, 4), "auprc": round(average_precision(labels, scores), 4),
            "negatives_flagged": round(float((scores[labels == 0] >= 1).mean()), 4)}


def views(classifier: Scorer, data: Path) -> dict[str, dict[str, Any]]:
    """The three views above."""
    openai = D.split_set(D.load_set(data, "mod_openai_moderation"), "mod_openai_moderation")[1]
    y = np.nan_to_num(D.target_matrix(openai), nan=0.0).max(axis=1)
    out = {"openai_dev": _view(y, _score(classifier, [e.text for e in openai]))}
    for name in ("mod_xstest_prompts", "mod_safetext"):
        rows = list(D.read_rows(data, name))
        labels = np.array([float(r["label"]) for r in rows])
        out[name] = _view(labels, _score(classifier, [r["text"] for r in rows]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation.any_category", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[1].parent / "shared" / "data")
    parser.add_argument("--classifier", choices=["ngrams", "cascade", "both"], default="both")
    parser.add_argument("--json", type=Path, default=HERE / "any_category.json")
    args = parser.parse_args(argv)
    models = ModerationModels(ModerationClassifier.load())
    kinds = ("ngrams", "cascade") if args.classifier == "both" else (args.classifier,)
    results = {kind: views(models.get(kind), args.data) for kind in kinds}  # type: ignore[arg-type]
    print("| view | classifier | n / positives | precision | recall | F1 | AUPRC | negatives flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for view in results[kinds[0]]:
        for kind in kinds:
            r = results[kind][view]
            print(f"| {view} | {kind} | {r['n']} / {r['positives']} | {r['precision']:.3f} | {r['recall']:.3f} | "
                  f"{r['f1']:.3f} | {r['auprc']:.3f} | {r['negatives_flagged']:.2%} |")
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
