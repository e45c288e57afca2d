"""Train the difficulty classifier and write it as ONNX: ``python -m router.train``.

    python -m router.train --data ../shared/data --out router/models/difficulty.onnx

With ``--own traffic.jsonl`` it also trains on your labelled traffic (or only on it, without
``--data``); see ``docs/router-model.md``.

Reproducible: the dev split is a hash of the text, the solver is deterministic and seeded, and
the ONNX file holds no timestamp, so the same data and seed give the same bytes. Trains only on
the ``TRAINABLE`` sets of ``router.difficulty.data`` (Apache-2.0, MIT, CC BY); the CC BY-NC sets
are scored on the dev metrics but never trained on. Needs the ``train`` extra (scikit-learn,
scipy, onnx). To retrain on your own traffic, see ``docs/router-model.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from router.difficulty import data as D
from router.difficulty.classifier import DifficultyClassifier
from router.difficulty.export import build_model, save_model
from router.difficulty.features import (
    FEATURE_DIM,
    FEATURE_SPEC_VERSION,
    FeatureExtractor,
)
from router.difficulty.quality import RoutingScore, cost_quality_curve
from router.sparse_linear import SparseFeatures
from router.sparse_linear_export import sparse_matrix

Layers = list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]

SET_SHARE: dict[str, float] = {
    "route_routellm_mmlu": 0.30,
    "route_mmlu_pro": 0.30,
    "route_routellm_gsm8k": 0.10,
    "route_arena_bench_v1": 0.10,
    "prompts_math": 0.08,
    "prompts_gsm8k": 0.06,
    "prompts_arena_hard": 0.03,
    "prompts_selfinstruct_seed": 0.03,
}
"""Share of the training weight each set gets, whatever its size: MMLU's 9k rows would
otherwise drown the 200 real user prompts of arena-bench."""
C_DEFAULT = 2.0


def log(message: str) -> None:
    """Progress on stderr, with the time since start."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


_T0 = time.perf_counter()


def featurize(texts: Sequence[str], extractor: FeatureExtractor, what: str) -> sp.csr_matrix:
    """The sparse feature matrix of ``texts`` (duplicate indices summed, as the ONNX graph does)."""
    def rows() -> Iterator[SparseFeatures]:
        last = time.perf_counter()
        for i, text in enumerate(texts):
            yield extractor.extract(text)
            if time.perf_counter() - last > 5:
                log(f"featurizing {what}: {i + 1}/{len(texts)}")
                last = time.perf_counter()

    return sparse_matrix(rows(), FEATURE_DIM)


def training_matrix(examples: Sequence[D.Example], X: sp.csr_matrix,
                    shares: dict[str, float]) -> tuple[sp.csr_matrix, npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    """Soft targets as weighted 0/1 rows: each example once as positive (weight ``t``) and once
    as negative (``1 - t``), each set's rows scaled to its ``shares`` of the total weight."""
    target = np.array([e.target for e in examples], dtype=np.float64)
    names = [e.dataset for e in examples]
    counts = {n: names.count(n) for n in sorted(set(names))}  # sorted: float sums in one order
    total = sum(shares[n] for n in counts)
    row_w = np.array([shares[n] / total * len(examples) / counts[n] for n in names])
    X2 = sp.vstack([X, X]).tocsr()
    y2 = np.concatenate([np.ones(len(examples)), np.zeros(len(examples))]).astype(np.int8)
    w2 = np.concatenate([row_w * target, row_w * (1 - target)])
    keep = w2 > 0
    return X2[keep], y2[keep], w2[keep]


def fit_logistic(X: sp.csr_matrix, y: npt.NDArray[np.int8], w: npt.NDArray[np.float64], *,
                 C: float, seed: int) -> Layers:
    """L2-regularised logistic regression; returns the one layer ``(W [dim, 1], b [1])``."""
    model = LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=seed)
    model.fit(X, y, sample_weight=w)
    return [(model.coef_.T.astype(np.float32), model.intercept_.astype(np.float32))]


def predict(layers: Layers, X: sp.csr_matrix) -> npt.NDArray[np.float64]:
    """P(strong needed) for each row, the same computation as the ONNX graph."""
    z: npt.NDArray[np.float64] = np.asarray(X @ layers[0][0], dtype=np.float64) + layers[0][1]
    for w, b in layers[1:]:
        z = np.asarray(np.maximum(z, 0) @ w + b, dtype=np.float64)
    return np.asarray(1 / (1 + np.exp(-z[:, 0])), dtype=np.float64)


def dev_metrics(scores: dict[str, npt.NDArray[np.float64]],
                dev: dict[str, list[D.Example]]) -> dict[str, dict[str, float]]:
    """APGR, CPT(50%), CPT(80%) per evaluated set."""
    out = {}
    for name, examples in dev.items():
        cheap = np.array([e.cheap_quality for e in examples])
        strong = np.array([e.strong_quality for e in examples])
        r = RoutingScore.of(cost_quality_curve(scores[name], cheap, strong))
        out[name] = {"n": len(examples), "apgr": round(r.apgr, 4), "cpt50": round(r.cpt50, 4),
                     "cpt80": round(r.cpt80, 4)}
    return out


def load_data(data_dir: Path | None, own: Path | None = None) -> tuple[list[D.Example], dict[str, list[D.Example]]]:
    """(training examples with a target, evaluation rows per evaluated set).

    ``own`` adds your labelled traffic (``data.load_own``), split the same way as the rest.
    """
    train: list[D.Example] = []
    dev: dict[str, list[D.Example]] = {}
    if data_dir is not None:
        for name in D.TRAINABLE:
            rows = [e for e in D.split(D.load_set(data_dir, name))[0] if e.target is not None]
            log(f"{name}: {len(rows)} training rows ({D.SETS[name].licence})")
            train += rows
        dev = {name: D.evaluation_rows(data_dir, name) for name in D.EVALUATED}
    if own is not None:
        own_train, own_dev = D.split(D.load_own(own))
        log(f"{D.OWN}: {len(own_train)} training rows, {len(own_dev)} dev rows from {own}")
        train += own_train
        scored = [e for e in own_dev if e.cheap_quality is not None and e.strong_quality is not None]
        if scored and np.mean([e.strong_quality for e in scored]) > np.mean([e.cheap_quality for e in scored]):
            dev[D.OWN] = scored
    if not train:
        raise SystemExit("nothing to train on: pass --data (shared/data) and/or --own (your traffic)")
    return train, dev


def summary(train: Sequence[D.Example], metrics: dict[str, dict[str, float]], *, seed: int,
            C: float, shares: dict[str, float]) -> dict[str, Any]:
    """The training summary stored in the model file."""
    import sklearn

    sizes = {n: sum(e.dataset == n for e in train) for n in sorted({e.dataset for e in train})}
    return {
        "family": "logistic",
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "seed": seed,
        "hyperparameters": {"C": C, "solver": "liblinear", "set_share": shares},
        "trained_on": {n: {"rows": k, "licence": D.SETS[n].licence if n in D.SETS else "own data"}
                       for n, k in sizes.items()},
        "never_trained_on": sorted(n for n, s in D.SETS.items() if s.role == "eval_only"),
        "dev_split": f"{D.DEV_SHARE:.0%} of each set by SHA-256 of the question stem; eval_only sets whole",
        "dev_metrics": metrics,
        "dev_mean_apgr": round(float(np.mean([m["apgr"] for m in metrics.values()])), 4) if metrics else None,
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }


def train(data_dir: Path | None, out: Path, *, seed: int, C: float, own: Path | None = None,
          own_share: float = 0.5) -> dict[str, Any]:
    """Train, export, reload through onnxruntime and check it agrees; returns the summary."""
    shares = {**SET_SHARE, D.OWN: own_share}
    extractor = FeatureExtractor.create()
    train_rows, dev = load_data(data_dir, own)
    X = featurize([e.text for e in train_rows], extractor, "training rows")
    X2, y2, w2 = training_matrix(train_rows, X, shares)
    log(f"fitting logistic regression on {X2.shape[0]} weighted rows x {X2.shape[1]} features (C={C})")
    layers = fit_logistic(X2, y2, w2, C=C, seed=seed)
    dev_X = {n: featurize([e.text for e in ex], extractor, f"dev {n}") for n, ex in dev.items()}
    scores = {n: predict(layers, x) for n, x in dev_X.items()}
    metrics = dev_metrics(scores, dev)
    info = summary(train_rows, metrics, seed=seed, C=C,
                   shares={n: s for n, s in shares.items() if any(e.dataset == n for e in train_rows)})
    info["dev_score_quantiles"] = score_quantiles(scores)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(build_model(layers, family="logistic", summary=info), str(out))
    sample = train_rows[:: max(1, len(train_rows) // 300)]
    _check_onnx(out, extractor, [e.text for e in sample], predict(layers, X[:: max(1, len(train_rows) // 300)]))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); dev mean APGR {info['dev_mean_apgr']}")
    return info


def score_quantiles(scores: dict[str, npt.NDArray[np.float64]]) -> list[float]:
    """Percentiles 0..100 of the dev scores of the permissively licensed sets: what a route's
    ``strong_share`` is turned into a threshold with, when no traffic sample is at hand."""
    pooled = [s for n, s in scores.items() if "NC" not in (D.SETS[n].licence if n in D.SETS else "NC")]
    if not pooled:
        return []
    return [round(float(q), 6) for q in np.quantile(np.concatenate(pooled), np.linspace(0.0, 1.0, 101))]


def _check_onnx(path: Path, extractor: FeatureExtractor, texts: list[str],
                expected: npt.NDArray[np.float64]) -> None:
    """Reload the file as the gateway does and compare its scores with training's own."""
    classifier = DifficultyClassifier.load(path, extractor=extractor)
    worst = float(np.abs(np.array([classifier.score(t) for t in texts]) - expected).max())
    if worst > 1e-4:
        raise RuntimeError(f"onnxruntime and training disagree by {worst:.2e}: export is broken")
    log(f"onnxruntime agrees with training (max |diff| {worst:.1e}); version {classifier.version}")


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m router.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="the shared/data folder")
    parser.add_argument("--own", type=Path, help="your labelled traffic, JSONL (see docs/router-model.md)")
    parser.add_argument("--own-share", type=float, default=0.5,
                        help="weight of --own rows against the shipped mix, whose shares add up to 1")
    parser.add_argument("--out", type=Path, default=Path("router/models/difficulty.onnx"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--C", type=float, default=C_DEFAULT, help="inverse L2 strength")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    info = train(args.data, args.out, seed=args.seed, C=args.C, own=args.own, own_share=args.own_share)
    for name, m in info["dev_metrics"].items():
        print(f"{name:26s} n={m['n']:5d}  APGR {m['apgr']:.3f}  CPT50 {m['cpt50']:.3f}  CPT80 {m['cpt80']:.3f}")
    if info["dev_mean_apgr"] is not None:
        print(f"mean dev APGR {info['dev_mean_apgr']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
