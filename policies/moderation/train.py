"""Train the moderation classifier and write it as ONNX: ``python -m policies.moderation.train``.

    python -m policies.moderation.train --data ../shared/data --out policies/moderation/models/moderation.onnx

One L2-regularised logistic regression per category over the hashed features of
``features.py``, each fitted on the rows whose label for that category is known
(``data.py``), positives and negatives weighted equally, every set weighted to its share of
``SET_SHARE``. Thresholds are tuned per category on the dev split, scoring each text as the
gateway does (the max over its stream windows): the best F1 on OpenAI's dev rows among the
thresholds that flag at most 0.2 % of the benign routing prompts' dev rows, never below 0.5.

Reproducible: the dev split is a hash of the text, liblinear is deterministic and seeded, the ONNX file holds
no timestamp, and the summary in the file records the SHA-256 of every data file read. Trains
only on the ``data.TRAIN`` sets (MIT, Apache-2.0, CC BY, CDLA-Permissive); never on mod_ethos
(GPL-3.0) or the CC BY-NC sets. Needs the ``train`` extra (scikit-learn, scipy, onnx).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from policies.moderation import data as D
from policies.moderation.categories import CATEGORIES
from policies.moderation.classifier import ModerationClassifier
from policies.moderation.evaluation import dev_report, known_rows, tune_threshold
from policies.moderation.export import build_model, save_model
from policies.moderation.features import (
    FEATURE_DIM,
    FEATURE_SPEC_VERSION,
    FeatureExtractor,
)
from policies.moderation.stream import classifier_windows
from router.sparse_linear import SparseFeatures
from router.sparse_linear_export import Layers, sparse_matrix

BENIGN = "benign_prompts"
SET_SHARE: dict[str, float] = {
    "mod_openai_moderation": 0.35,
    "mod_davidson": 0.15,
    "mod_hatecheck": 0.15,
    "mod_toxigen_seed": 0.10,
    "mod_xstest_completions": 0.10,
    BENIGN: 0.15,
}
"""Share of the training weight per set (the routing sets share ``benign_prompts``), whatever
its size: Davidson's 16k tweets would otherwise drown OpenAI's 1k labelled LLM-style texts."""
WINDOWED = (*D.BENIGN_SETS, "mod_xstest_completions")
"""Benign sets whose texts are also trained on cut into stream windows (every third text), as
the gateway scores them: a window of a benign text is benign, and without them a fragment of
an exam question or a how-to answer could hit a weight learnt from whole toxic texts. Every
text of these sets is also trained on cut into prefixes (``PREFIX_WORDS``)."""
PREFIX_WORDS = (1, 2, 3, 4, 6, 8, 12)
PREFIX_CHARS = (12, 24)
"""Where the benign prefix rows end: after so many words, and at so many characters (mid-word,
as a token can end). The running score of ``mode: incremental`` reads an answer's first words;
trained only on whole texts and windows, a one-word bag put all its weight on one n-gram
(``The`` scored harassment 1.0, ``It is`` hate 1.0) and half of XSTest's benign answers had
their first word held."""
LABELLED_PREFIX_WORDS = (1, 2, 3, 4)
"""Where the prefix rows of the hate sets' benign texts end (``I live with two Muslims``: a
text of ``data.LABELLED`` with every known target 0). A group's name alone is most often
the start of a text about it; learnt only from whole texts, ``Muslims`` or ``Black`` alone
scored hate 1.0 and an answer that opens with one was held for up to 18 words. Short only:
longer prefixes of these texts read like the hateful ones."""
MAX_BENIGN_FPR = 0.002
"""Most benign routing prompts (dev) one category may flag at its tuned threshold: 0.2 %."""
C_DEFAULT = 32.0
WINDOW_CHARS = 160
Matrix = npt.NDArray[np.float64]

_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the time since start."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def share_of(name: str) -> float:
    """The training share of one set (the routing sets share ``BENIGN``'s)."""
    return SET_SHARE[BENIGN if name in D.BENIGN_SETS else name]


def load(data_dir: Path) -> tuple[list[D.Example], dict[str, list[D.Example]], dict[str, str]]:
    """(training rows, dev rows per set, SHA-256 per data file read)."""
    train: list[D.Example] = []
    dev: dict[str, list[D.Example]] = {}
    hashes = {}
    for name, spec in D.SETS.items():
        rows = D.load_set(data_dir, name)
        hashes[name] = D.file_sha256(D.set_path(data_dir, name))
        rows_train, dev[name] = D.split_set(rows, name)
        if spec.role == "eval":
            continue
        train += rows_train
        log(f"{name}: {len(rows_train)} training rows, {len(dev[name])} dev rows ({spec.licence})")
    return train, dev, hashes


def featurize(texts: Sequence[str], extractor: FeatureExtractor, what: str) -> sp.csr_matrix:
    """The sparse feature matrix of ``texts``."""
    def rows() -> Iterator[SparseFeatures]:
        last = time.perf_counter()
        for i, text in enumerate(texts):
            yield extractor.extract(text)
            if time.perf_counter() - last > 10:
                log(f"featurizing {what}: {i + 1}/{len(texts)}")
                last = time.perf_counter()

    return sparse_matrix(rows(), FEATURE_DIM)


def benign_windows(rows: Sequence[D.Example], window_chars: int) -> list[D.Example]:
    """Stream windows of every third text of the ``WINDOWED`` sets, as extra benign rows."""
    out = []
    for i, e in enumerate(rows):
        if e.dataset in WINDOWED and i % 3 == 0:
            windows = classifier_windows(e.text, window_chars)
            if len(windows) > 1:
                out += [D.Example(w, e.dataset, e.targets, e.group, e.key) for w in windows]
    return out


def benign_prefixes(rows: Sequence[D.Example]) -> list[D.Example]:
    """The first words of every text of the ``WINDOWED`` sets, and of the hate sets' benign
    texts (``LABELLED_PREFIX_WORDS``), as extra benign rows: the beginning of a benign text is
    benign, and the running score reads exactly that."""
    out = []
    words: tuple[int, ...]
    chars: tuple[int, ...]
    for e in rows:
        if e.dataset in WINDOWED:
            words, chars = PREFIX_WORDS, PREFIX_CHARS
        elif e.dataset in D.LABELLED and all(t == 0 for t in e.targets if not np.isnan(t)):
            words, chars = LABELLED_PREFIX_WORDS, ()
        else:
            continue
        ends = [m.end() for m in re.finditer(r"\s*\S+", e.text)]
        cuts = {ends[k - 1] for k in words if k < len(ends)} | {c for c in chars if c < len(e.text)}
        out += [D.Example(e.text[:cut], e.dataset, e.targets, e.group, e.key) for cut in sorted(cuts)]
    return out


def row_weights(examples: Sequence[D.Example]) -> Matrix:
    """Each row's weight: its set's share spread over the set's rows, mean 1."""
    names = [BENIGN if e.dataset in D.BENIGN_SETS else e.dataset for e in examples]
    counts = {n: names.count(n) for n in sorted(set(names))}
    w = np.array([SET_SHARE[n] / counts[n] for n in names])
    return np.asarray(w / w.mean(), dtype=np.float64)


def fit(X: sp.csr_matrix, Y: Matrix, w: Matrix, *, C: float, seed: int) -> Layers:
    """One logistic regression per category on its known rows, classes weighted equally."""
    W = np.zeros((X.shape[1], len(CATEGORIES)), dtype=np.float32)
    b = np.zeros(len(CATEGORIES), dtype=np.float32)
    for k, category in enumerate(CATEGORIES):
        known = ~np.isnan(Y[:, k])
        y, wk = Y[known, k], w[known].copy()
        pos = y == 1
        wk[pos] *= 0.5 * wk.sum() / wk[pos].sum()
        wk[~pos] *= 0.5 * wk.sum() / wk[~pos].sum()
        log(f"fitting {category}: {int(known.sum())} rows, {int(pos.sum())} positive (C={C})")
        model = LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=seed)
        model.fit(X[known], y.astype(np.int8), sample_weight=wk / wk.mean())
        W[:, k] = model.coef_[0]
        b[k] = model.intercept_[0]
    return [(W, b)]


def predict(layers: Layers, X: sp.csr_matrix) -> Matrix:
    """Scores per row, the same computation as the ONNX graph (before float16 storage)."""
    W, b = layers[0]
    return np.asarray(1 / (1 + np.exp(-(np.asarray(X @ W, dtype=np.float64) + b))), dtype=np.float64)


def window_scores(layers: Layers, texts: Sequence[str], extractor: FeatureExtractor, *,
                  window_chars: int, what: str) -> Matrix:
    """Per-text scores as the gateway computes them: the max over the text's stream windows."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
        windows = classifier_windows(text, window_chars)
        pieces += windows
        owner += [i] * len(windows)
    scores = predict(layers, featurize(pieces, extractor, what))
    out = np.zeros((len(texts), len(CATEGORIES)))
    np.maximum.at(out, np.array(owner, dtype=np.intp), scores)
    return out


def tune(scores: dict[str, Matrix], dev: dict[str, list[D.Example]]) -> dict[str, float]:
    """Per-category thresholds: best F1 on the ``data.TUNE_SETS`` dev rows among those that
    flag at most ``MAX_BENIGN_FPR`` of the benign routing prompts' dev rows; floor 0.5."""
    thresholds: dict[str, float] = {}
    for k, category in enumerate(CATEGORIES):
        labels, values = known_rows(scores, dev, D.TUNE_SETS, k)
        benign = np.concatenate([scores[name][:, k] for name in D.BENIGN_SETS])
        thresholds[category] = tune_threshold(labels, values, benign, max_fpr=MAX_BENIGN_FPR)
    return thresholds


def summary(train_rows: Sequence[D.Example], metrics: dict[str, Any], thresholds: dict[str, float], *,
            seed: int, C: float, window_chars: int, hashes: dict[str, str]) -> dict[str, Any]:
    """The training summary stored in the model file."""
    import sklearn

    sizes = {n: sum(e.dataset == n for e in train_rows) for n in sorted({e.dataset for e in train_rows})}
    return {
        "family": "logistic",
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "seed": seed,
        "hyperparameters": {"C": C, "solver": "liblinear", "set_share": SET_SHARE, "class_weight": "balanced",
                            "threshold_floor": 0.5, "max_benign_fpr": MAX_BENIGN_FPR,
                            "window_chars": window_chars},
        "trained_on": {n: {"rows": k, "licence": D.SETS[n].licence, "sha256": hashes[n]} for n, k in sizes.items()},
        "evaluated_only": {n: {"licence": D.SETS[n].licence, "sha256": hashes[n]}
                           for n, s in D.SETS.items() if s.role == "eval"},
        "never_read": ["mod_ethos (GPL-3.0)", "route_alpaca_eval (CC BY-NC 4.0)",
                       "prompts_wizardlm_testset (CC BY-NC 4.0)", "prompts_mbppplus (CC BY-NC 4.0)",
                       "mod_safetext (physical-harm advice: not one of the categories)"],
        "dev_split": f"{D.DEV_SHARE:.0%} of each set by SHA-256 of the normalised text; XSTest completions 50% "
                     "by prompt; XSTest prompts whole",
        "window_rows": "stream windows of every third text of " + ", ".join(WINDOWED),
        "prefix_rows": f"prefixes of {PREFIX_WORDS} words and {PREFIX_CHARS} characters of every text "
                       f"of the same sets; of {LABELLED_PREFIX_WORDS} words of the benign texts of "
                       + ", ".join(D.LABELLED),
        "thresholds": {c: round(t, 4) for c, t in thresholds.items()},
        "dev_metrics": metrics,
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }


def train(data_dir: Path, out: Path, *, seed: int, C: float, window_chars: int = WINDOW_CHARS) -> dict[str, Any]:
    """Train, tune, export, reload through onnxruntime and check it agrees; returns the summary."""
    extractor = FeatureExtractor.create()
    train_rows, dev, hashes = load(data_dir)
    n_texts = len(train_rows)
    train_rows = train_rows + benign_windows(train_rows, window_chars) + benign_prefixes(train_rows)
    X = featurize([e.text for e in train_rows], extractor, "training rows")
    layers = fit(X, D.target_matrix(train_rows), row_weights(train_rows), C=C, seed=seed)
    scores = {name: window_scores(layers, [e.text for e in rows], extractor, window_chars=window_chars,
                                  what=f"dev {name}") for name, rows in dev.items()}
    thresholds = tune(scores, dev)
    metrics = dev_report(scores, dev, thresholds)
    info = summary(train_rows[:n_texts], metrics, thresholds, seed=seed, C=C, window_chars=window_chars, hashes=hashes)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(build_model(layers, thresholds=thresholds, summary=info), str(out))
    sample = [e.text for e in train_rows[:: max(1, len(train_rows) // 300)]]
    _check_onnx(out, extractor, sample, predict(layers, featurize(sample, extractor, "check rows")))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return info


def _check_onnx(path: Path, extractor: FeatureExtractor, texts: list[str], expected: Matrix) -> None:
    """Reload the file as the gateway does and compare its scores with training's own."""
    classifier = ModerationClassifier.load(path, extractor=extractor)
    worst = float(np.abs(classifier.scores(texts).astype(np.float64) - expected).max())
    if worst > 5e-3:  # float16 weights: a few 1e-4 is expected
        raise RuntimeError(f"onnxruntime and training disagree by {worst:.2e}: export is broken")
    log(f"onnxruntime agrees with training (max |diff| {worst:.1e}); version {classifier.version}")


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m policies.moderation.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data",
                        help="the shared/data folder (default: ../shared/data next to the repo)")
    parser.add_argument("--out", type=Path, default=Path("policies/moderation/models/moderation.onnx"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--C", type=float, default=C_DEFAULT, help="inverse L2 strength")
    parser.add_argument("--window-chars", type=int, default=WINDOW_CHARS,
                        help="stream window the dev texts are scored with (the gateway's default)")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    """Command-line entry point: train and print the dev table."""
    args = parse_args(argv)
    info = train(args.data, args.out, seed=args.seed, C=args.C, window_chars=args.window_chars)
    for category, entry in info["dev_metrics"]["categories"].items():
        m = entry["mod_openai_moderation"]
        print(f"{category:14s} threshold {info['thresholds'][category]:.2f}  OpenAI dev n={m['n']:4d} "
              f"pos={m['positives']:3d}  P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f} "
              f"AUPRC {m['auprc']:.3f}")
    for pool, fpr in info["dev_metrics"]["false_positive_rates"].items():
        print(f"false positives on {pool}: {fpr['any_category']:.2%} of {fpr['n']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
