"""Train the cascade's head and tune its gate: ``python -m policies.moderation.train_cascade``.

    python -m policies.moderation.train_cascade --data ../shared/data --out policies/moderation/models/encoder_head.json

The head is one logistic regression per category on MiniLM-L6's 384-d vector of a **stream
window** (``classifier_windows``: what the gateway scores), trained on the same sets and
licences as the n-gram model (``data.TRAIN``; never mod_ethos, the CC BY-NC sets, or any dev
row):

- windows of a benign text are benign; a toxic text's label is the text's, not each window's,
  so each of its windows is a positive weighted ``1/windows``, then (one refit) only its
  top-scoring window per category stays positive (multiple-instance learning: the harm is in
  some window, not all);
- the large sets are sampled (``SAMPLE``) to keep embedding under ~10 minutes of CPU; each set
  is weighted to its ``train.SET_SHARE`` as the n-gram trainer does.

Then on the dev split, scoring each text as the gateway does (max over windows): for each
candidate gate, the cascade's scores (the n-gram model's below the gate, the mean of the head's
and the n-gram log-odds above it: ``EncoderHead.combine``), thresholds
tuned as ``train.tune`` does (best F1 on OpenAI dev within 0.2 % benign routing prompts), and
the share of windows the encoder reads. The gate kept is the lowest whose benign routing
windows sent to the encoder stay within ``MAX_ENCODED_SHARE``. Embeddings are cached under
``--cache`` (default ``/tmp/switchyard-embeddings``) by text hash, so a rerun costs seconds.
Needs the ``train`` and ``cascade`` extras.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

from policies.moderation import data as D
from policies.moderation.cascade import EncoderHead
from policies.moderation.categories import CATEGORIES
from policies.moderation.classifier import ModerationClassifier
from policies.moderation.encoder import SentenceEncoder, default_cache_dir
from policies.moderation.encoder_export import WEIGHTS_SHA256
from policies.moderation.evaluation import dev_report
from policies.moderation.stream import classifier_windows
from policies.moderation.train import SET_SHARE, load, log, share_of, tune

SAMPLE = {"mod_davidson": 4000, "benign": 4000}
"""Texts sampled from Davidson's tweets, and windows from the routing prompts, for training."""
GATES = (0.02, 0.05, 0.1, 0.2, 0.3)
MAX_ENCODED_SHARE = 0.10
"""Most benign routing windows (dev) the gate may send to the encoder."""
C_DEFAULT = 16.0
"""Inverse L2 strength of the head: dev AUPRC (OpenAI, mean of categories) 0.626 at C = 1, 0.643 at 4,
0.658 at 16, 0.642 at 64 (gate 0.05)."""
WINDOW_CHARS = 160
Matrix = npt.NDArray[np.float64]
_worker: SentenceEncoder | None = None


def _init(cache_dir: str) -> None:
    global _worker  # one encoder per worker process, built before its first chunk
    _worker = SentenceEncoder.load(Path(cache_dir))


def _embed_chunk(texts: list[str]) -> npt.NDArray[np.float32]:
    assert _worker is not None
    return _worker.embed(texts)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def embed_all(texts: Sequence[str], cache: Path, encoder_dir: Path, workers: int) -> npt.NDArray[np.float32]:
    """Vectors of ``texts``, from the cache file where known, else embedded in ``workers`` processes."""
    cache.mkdir(parents=True, exist_ok=True)
    store = cache / f"{WEIGHTS_SHA256[:12]}.npz"
    known: dict[str, npt.NDArray[np.float32]] = {}
    if store.is_file():
        with np.load(store) as f:
            known = dict(zip(f["keys"].tolist(), f["vectors"], strict=True))
    keys = [_key(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    log(f"embedding {len(todo)} windows ({len(texts)} asked, the others cached or repeated)")
    if todo:
        chunks = [[t for _, t in todo[i:i + 256]] for i in range(0, len(todo), 256)]
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(str(encoder_dir),)) as pool:
            vectors = np.vstack(list(pool.map(_embed_chunk, chunks)))
        known.update(zip([k for k, _ in todo], vectors, strict=True))
        tmp = store.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, keys=np.array(list(known)), vectors=np.vstack(list(known.values())))
        os.replace(tmp, store)
    return np.vstack([known[k] for k in keys]) if keys else np.zeros((0, 384), dtype=np.float32)


def training_windows(rows: Sequence[D.Example], seed: int) -> tuple[list[str], Matrix, Matrix, list[int]]:
    """(window texts, targets, weights, owning text index) of the sampled training rows."""
    rng = random.Random(seed)
    davidson = [e for e in rows if e.dataset == "mod_davidson"]
    keep = set(map(id, rng.sample(davidson, min(SAMPLE["mod_davidson"], len(davidson)))))
    texts: list[str] = []
    targets: list[tuple[float, ...]] = []
    owner: list[int] = []
    names: list[str] = []
    benign: list[tuple[str, D.Example]] = []
    for i, e in enumerate(rows):
        if e.dataset == "mod_davidson" and id(e) not in keep:
            continue
        windows = classifier_windows(e.text, WINDOW_CHARS)
        if e.dataset in D.BENIGN_SETS:
            benign += [(w, e) for w in windows]
            continue
        texts += windows
        targets += [e.targets] * len(windows)
        owner += [i] * len(windows)
        names += [e.dataset] * len(windows)
    for w, e in rng.sample(benign, min(SAMPLE["benign"], len(benign))):
        texts.append(w)
        targets.append(e.targets)
        owner.append(-1 - len(owner))  # each benign window stands alone
        names.append(e.dataset)
    return texts, np.array(targets, dtype=np.float64), _weights(names, owner), owner


def _weights(names: list[str], owner: list[int]) -> Matrix:
    """Each window's weight: its set's share spread over the set's texts, split among the text's windows."""
    per_text: dict[int, int] = {}
    for o in owner:
        per_text[o] = per_text.get(o, 0) + 1
    sets = ["benign_prompts" if n in D.BENIGN_SETS else n for n in names]
    texts_per_set: dict[str, set[int]] = {}
    for s, o in zip(sets, owner, strict=True):
        texts_per_set.setdefault(s, set()).add(o)
    w = np.array([share_of(n) / len(texts_per_set[s]) / per_text[o] for n, s, o in zip(names, sets, owner, strict=True)])
    return np.asarray(w / w.mean(), dtype=np.float64)


def fit_head(X: npt.NDArray[np.float32], Y: Matrix, w: Matrix, owner: list[int], *, C: float,
             seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per category: fit on every window, then refit with only each positive text's top window positive."""
    W = np.zeros((X.shape[1], len(CATEGORIES)), dtype=np.float32)
    b = np.zeros(len(CATEGORIES), dtype=np.float32)
    owners = np.array(owner)
    for k, category in enumerate(CATEGORIES):
        known = ~np.isnan(Y[:, k])
        y, wk = Y[known, k].copy(), w[known].copy()
        model = _fit(X[known], y, wk, C, seed)
        scores = model.decision_function(X[known])
        o = owners[known]
        pos = np.flatnonzero(y == 1)
        best: dict[int, int] = {}
        for i in pos:
            if int(o[i]) not in best or scores[i] > scores[best[int(o[i])]]:
                best[int(o[i])] = int(i)
        top = np.zeros(len(y), dtype=bool)
        top[list(best.values())] = True
        keep = (y == 0) | top  # a toxic text's other windows: unknown, not benign
        wk[top] = np.array([w[known][i] * (o == o[i]).sum() for i in np.flatnonzero(top)])
        model = _fit(X[known][keep], y[keep], wk[keep], C, seed)
        log(f"head {category}: {int(known.sum())} windows, {len(best)} positive texts, "
            f"{int(keep.sum())} windows in the refit")
        W[:, k] = model.coef_[0]
        b[k] = model.intercept_[0]
    return W, b


def _fit(X: npt.NDArray[np.float32], y: Matrix, w: Matrix, C: float, seed: int) -> Any:
    pos = y == 1
    w = w.copy()
    w[pos] *= 0.5 * w.sum() / w[pos].sum()  # classes weighted equally, as the n-gram trainer does
    w[~pos] *= 0.5 * w.sum() / w[~pos].sum()
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    model.fit(X, y.astype(np.int8), sample_weight=w / w.mean())
    return model


class DevWindows:
    """Every dev text's windows with their n-gram scores; vectors only for the windows asked for."""

    def __init__(self, dev: dict[str, list[D.Example]], ngrams: ModerationClassifier) -> None:
        self.texts: list[str] = []
        self.owner: dict[str, npt.NDArray[np.intp]] = {}
        self.rows: dict[str, slice] = {}
        for name, rows in dev.items():
            start = len(self.texts)
            owner = []
            for i, e in enumerate(rows):
                windows = classifier_windows(e.text, WINDOW_CHARS)
                self.texts += windows
                owner += [i] * len(windows)
            self.rows[name] = slice(start, len(self.texts))
            self.owner[name] = np.array(owner, dtype=np.intp)
        log(f"dev: {len(self.texts)} windows; n-gram scores")
        self.ngram = np.vstack([ngrams.scores(self.texts[i:i + 512]) for i in range(0, len(self.texts), 512)])
        self.base = np.array([ngrams.thresholds[c] for c in CATEGORIES], dtype=np.float32)

    def ratio(self) -> npt.NDArray[np.float32]:
        """Each window's highest n-gram score as a share of its category's threshold."""
        return np.asarray((self.ngram / self.base).max(axis=1), dtype=np.float32)

    def per_text(self, window_scores: Matrix, dev: dict[str, list[D.Example]]) -> dict[str, Matrix]:
        """The max over each text's windows, per set."""
        out = {}
        for name, rows in dev.items():
            s = np.zeros((len(rows), len(CATEGORIES)))
            np.maximum.at(s, self.owner[name], window_scores[self.rows[name]])
            out[name] = s
        return out


def cascade_scores(windows: DevWindows, head_scores: Matrix, asked: npt.NDArray[np.bool_], gate: float,
                   thresholds: npt.NDArray[np.float64]) -> Matrix:
    """What ``CascadeClassifier.scores`` returns per window (``head_scores``: the combined
    scores of ``EncoderHead.combine``, used where the gate sends the window)."""
    out = np.minimum(windows.ngram * (thresholds / windows.base), 1.0)
    send = asked & (windows.ratio() >= gate)
    out[send] = head_scores[send]
    return np.asarray(out, dtype=np.float64)


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    ngrams = ModerationClassifier.load(args.ngram_model)
    encoder_dir = args.encoder_cache or default_cache_dir()
    SentenceEncoder.load(encoder_dir)  # builds the graph once, before the workers race for it
    train_rows, dev, hashes = load(args.data)
    texts, Y, w, owner = training_windows(train_rows, args.seed)
    X = embed_all(texts, args.cache, encoder_dir, args.workers)
    W, b = fit_head(X, Y, w, owner, C=args.C, seed=args.seed)
    windows = DevWindows(dev, ngrams)
    ratio = windows.ratio()
    labelled = np.zeros(len(windows.texts), dtype=bool)
    for name in dev:  # the encoder alone is measured on every set but the large routing ones
        labelled[windows.rows[name]] = name not in ("route_routellm_mmlu", "route_mmlu_pro")
    asked = labelled | (ratio >= min(GATES))
    idx = np.flatnonzero(asked)
    head = EncoderHead(W, b, {}, 0.0, WEIGHTS_SHA256, {})
    vectors = embed_all([windows.texts[i] for i in idx], args.cache, encoder_dir, args.workers)
    head_alone = np.zeros_like(windows.ngram, dtype=np.float64)
    head_alone[idx] = 1 / (1 + np.exp(-head.logits(vectors)))
    combined = np.zeros_like(windows.ngram, dtype=np.float64)
    combined[idx] = head.combine(vectors, windows.ngram[idx])
    results = evaluate(windows, dev, combined, head_alone, asked, ratio, ngrams)
    gate = choose_gate(results)
    chosen = results["gates"][str(gate)]
    info = {"trained_on": {n: {"licence": D.SETS[n].licence, "sha256": hashes[n]}
                           for n in sorted({e.dataset for e in train_rows})},
            "sample": SAMPLE, "set_share": SET_SHARE, "C": args.C, "seed": args.seed, "windows": len(texts),
            "ngram_model": ngrams.version, "gate": gate, "dev_metrics": chosen["report"],
            "encoded_share": chosen["encoded_share"], "max_encoded_share": MAX_ENCODED_SHARE}
    final = EncoderHead(W, b, chosen["thresholds"], gate, WEIGHTS_SHA256, info)
    args.out.write_text(json.dumps(final.document(), sort_keys=True) + "\n")
    results_path = args.results
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    log(f"wrote {args.out} (gate {gate}) and {results_path}")
    return 0


def evaluate(windows: DevWindows, dev: dict[str, list[D.Example]], head_scores: Matrix, head_alone: Matrix,
             asked: npt.NDArray[np.bool_], ratio: npt.NDArray[np.float32], ngrams: ModerationClassifier) -> dict[str, Any]:
    """The n-gram model, the encoder head alone (sets it read whole) and the cascade per gate."""
    ngram_text = windows.per_text(windows.ngram.astype(np.float64), dev)
    out: dict[str, Any] = {"ngrams": dev_report(ngram_text, dev, ngrams.thresholds), "gates": {}}
    encoder_only = {n: s for n, s in windows.per_text(head_alone, dev).items()
                    if n not in ("route_routellm_mmlu", "route_mmlu_pro")}
    sub = {n: dev[n] for n in encoder_only}
    out["encoder_only_auprc"] = _auprc_table(encoder_only, sub)
    pools = {"routing_prompts_dev": D.BENIGN_SETS, "xstest_answers_dev": ("mod_xstest_completions",),
             "openai_dev": ("mod_openai_moderation",), "all_dev": tuple(dev)}
    for gate in GATES:
        thresholds = np.array([ngrams.thresholds[c] for c in CATEGORIES], dtype=np.float64)
        for _ in range(2):  # the rescaling of ungated windows depends on the thresholds: settle them
            per_text = windows.per_text(cascade_scores(windows, head_scores, asked, gate, thresholds), dev)
            tuned = tune(per_text, dev)
            thresholds = np.array([tuned[c] for c in CATEGORIES])
        share = {p: float(np.mean(np.concatenate([ratio[windows.rows[n]] >= gate for n in names])))
                 for p, names in pools.items()}
        out["gates"][str(gate)] = {"thresholds": tuned, "encoded_share": share,
                                   "report": dev_report(per_text, dev, tuned)}
        log(f"gate {gate}: encoder reads {share['routing_prompts_dev']:.1%} of routing windows, "
            f"{share['all_dev']:.1%} of all dev windows; " + _short(out["gates"][str(gate)]["report"]))
    log("n-gram: " + _short(out["ngrams"]))
    return out


def _auprc_table(scores: dict[str, Matrix], dev: dict[str, list[D.Example]]) -> dict[str, dict[str, float]]:
    from policies.moderation.evaluation import average_precision, known_rows

    table: dict[str, dict[str, float]] = {}
    for k, c in enumerate(CATEGORIES):
        for name in D.LABELLED:
            y, s = known_rows(scores, dev, (name,), k)
            if y.sum() > 0:
                table.setdefault(c, {})[name] = round(average_precision(y, s), 4)
    return table


def _short(report: dict[str, Any]) -> str:
    auprc = " ".join(f"{c[:6]} {e['mod_openai_moderation']['auprc']:.3f}" for c, e in report["categories"].items())
    fpr = report["false_positive_rates"]
    return (f"OpenAI AUPRC {auprc}; FP routing {fpr['routing_prompts_dev']['any_category']:.2%} "
            f"xstest-safe {fpr['xstest_safe_prompts']['any_category']:.2%} answers {fpr['xstest_answers_dev']['any_category']:.2%}")


def choose_gate(results: dict[str, Any]) -> float:
    """The lowest gate (the encoder reads most) within the share bound on benign routing windows."""
    within = [g for g in GATES if results["gates"][str(g)]["encoded_share"]["routing_prompts_dev"] <= MAX_ENCODED_SHARE]
    return min(within) if within else max(GATES)


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m policies.moderation.train_cascade",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("policies/moderation/models/encoder_head.json"))
    parser.add_argument("--results", type=Path, default=Path("bench/moderation/cascade.json"),
                        help="every gate's dev report, the n-gram model's, the encoder alone")
    parser.add_argument("--ngram-model", type=Path, default=None, help="n-gram ONNX file (default: the shipped one)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/switchyard-embeddings"))
    parser.add_argument("--encoder-cache", type=Path, default=None, help="where the built encoder is kept")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--C", type=float, default=C_DEFAULT)
    return parser.parse_args(None if argv is None else list(argv))


if __name__ == "__main__":
    raise SystemExit(main())
