"""Training recipes compared on the dev split: ``python -m bench.routing_quality.recipes``.

Each variant changes one thing of the shipped recipe (``router.difficulty.train``: gain
targets, weak targets on the gain scale, ``SET_SHARE``, ``C_DEFAULT``) and reports the mean
dev APGR and each set's, from the same featurised rows (docs/router-model.md, "Target").
Needs the ``train`` extra and ``shared/data``; ~2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from router.difficulty import data as D
from router.difficulty.features import FeatureExtractor
from router.difficulty.train import (
    C_DEFAULT,
    SET_SHARE,
    dev_metrics,
    featurize,
    fit_logistic,
    load_data,
    predict,
    training_matrix,
)

REPO = Path(__file__).resolve().parents[2]
VICUNA_NEED = {"math": 0.6, "coding": 0.6, "fermi": 0.6, "common-sense": 0.35, "counterfactual": 0.35,
               "knowledge": 0.35, "generic": 0.15, "writing": 0.15, "roleplay": 0.15}
"""P(strong needed) by Vicuna-bench category: a prior written for this experiment, not data."""


def _extra_weak(data_dir: Path, name: str, need: Callable[[dict[str, object]], float | None]) -> list[D.Example]:
    """A weak set outside ``router.difficulty.data``: training rows only, target on the gain scale."""
    rows = []
    for row in D.read_rows(data_dir, name):
        p = need(row)
        text = str(row["text"])
        if p is not None and not D.is_dev(text):
            rows.append(D.Example(text, name, D.from_need(p)))
    return rows


def _vicuna(row: dict[str, object]) -> float | None:
    category = str(row.get("category", ""))  # mt_bench/... rows are an evaluation set: never
    return VICUNA_NEED.get(category.split("/")[1]) if category.startswith("vicuna_bench/") else None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_quality.recipes", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    extractor = FeatureExtractor.create()
    train, dev = load_data(args.data)
    extra = _extra_weak(args.data, "prompts_fastchat_bench", _vicuna) + \
        _extra_weak(args.data, "prompts_humaneval", lambda row: 0.6)
    rows = train + extra
    X = featurize([e.text for e in rows], extractor, "training rows")
    dev_X = {n: featurize([e.text for e in ex], extractor, f"dev {n}") for n, ex in dev.items()}
    shipped = list(range(len(train)))
    weak = {n for n, s in D.SETS.items() if s.role == "weak"}

    def old_scale(e: D.Example) -> D.Example:  # weak targets back on their 0-1 "P(needed)" scale
        return dataclasses.replace(e, target=2 * (e.target or 0.5) - 1) if e.dataset in weak else e

    variants: list[tuple[str, list[int], dict[str, float], float, bool, Callable[[D.Example], D.Example]]] = [
        ("shipped recipe", shipped, SET_SHARE, C_DEFAULT, False, lambda e: e),
        ("weak targets on their old 0-1 scale", shipped, SET_SHARE, C_DEFAULT, False, old_scale),
        ("per-set intercepts, dropped at inference", shipped, SET_SHARE, C_DEFAULT, True, lambda e: e),
        *((f"C = {c:g}", shipped, SET_SHARE, c, False, lambda e: e) for c in (0.5, 1.0, 4.0, 8.0)),
        ("arena-bench at 25 % of the weight", shipped, {**SET_SHARE, "route_arena_bench_v1": 0.25}, C_DEFAULT,
         False, lambda e: e),
        ("chat weak sets at 8 % each", shipped,
         {**SET_SHARE, "prompts_arena_hard": 0.08, "prompts_selfinstruct_seed": 0.08}, C_DEFAULT, False, lambda e: e),
        ("+ Vicuna-bench and HumanEval weak sets, 3 % each", list(range(len(rows))),
         {**SET_SHARE, "prompts_fastchat_bench": 0.03, "prompts_humaneval": 0.03}, C_DEFAULT, False, lambda e: e),
    ]
    print(f"| variant | mean dev APGR | {' | '.join(dev)} |")
    print("|" + " --- |" * (len(dev) + 2))
    for label, index, shares, C, intercepts, change in variants:
        examples = [change(rows[i]) for i in index]
        Xv = X[index]
        names = sorted({e.dataset for e in examples})
        if intercepts:  # one indicator column per set, fitted, then left out of scoring
            indicator = sp.csr_matrix(np.eye(len(names))[[names.index(e.dataset) for e in examples]])
            Xv = sp.hstack([Xv, indicator]).tocsr()
        X2, y2, w2 = training_matrix(examples, Xv, shares)
        layers = fit_logistic(X2, y2, w2, C=C, seed=0)
        if intercepts:
            layers = [(layers[0][0][:-len(names)], layers[0][1])]
        metrics = dev_metrics({n: predict(layers, x) for n, x in dev_X.items()}, dev)
        apgr = [metrics[n]["apgr"] for n in dev]
        print(f"| {label} | {np.mean(apgr):.3f} | {' | '.join(f'{a:.3f}' for a in apgr)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
