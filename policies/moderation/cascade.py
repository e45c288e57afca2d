"""The cascade classifier: the n-gram model decides most windows, the encoder the uncertain ones.

``CascadeClassifier`` is a ``Scorer`` (``rules.py``) like ``ModerationClassifier``, so the
stream moderators and whole-text checks use it unchanged. Per window:

1. the n-gram model scores it (``ModerationClassifier``, ~0.1 ms);
2. if no category reaches ``gate`` times the n-gram model's own threshold, that is the
   verdict: its scores are rescaled to the cascade's thresholds (``s * T / t``), so they stay
   under ``gate`` times the threshold in force and keep their order;
3. else MiniLM-L6 embeds the window (``encoder.py``, milliseconds), a logistic layer per
   category on the 384-d vector (the **head**, ``models/encoder_head.json``) scores it, and
   the window's score is the mean of the head's and the n-gram model's log-odds: the encoder
   reads meaning (self-harm, sexual content, threats in plain words), the n-grams read slurs,
   leetspeak and templates, and on the dev split the mean beat either alone.

A policy opts in with ``moderation.classifier: cascade`` (``config.py``); the gateway loads
the encoder once per process, only when a policy names it, and runs moderation with it off
the event loop. An incremental stream's running score (its open window, scored about once per
48 characters) stays on the n-gram model, rescaled to the cascade's thresholds
(``scorers.RescaledScorer``): part-windows would send the encoder a third of them. Each complete
window is scored by the cascade before the stream goes on. Trained by
``python -m policies.moderation.train_cascade``; figures in ``docs/moderation-model.md`` ("Cascade").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from policies.moderation.categories import CATEGORIES
from policies.moderation.classifier import ModerationModelError

__all__ = ["HEAD_FILE", "HEAD_FORMAT", "CascadeClassifier", "EncoderHead", "default_head_path"]

HEAD_FILE = "encoder_head.json"
HEAD_FORMAT = "switchyard-moderation-head/1"
Scores = npt.NDArray[np.float32]


class _Scorer(Protocol):
    @property
    def thresholds(self) -> Mapping[str, float]: ...

    def scores(self, texts: Sequence[str]) -> Scores: ...


class _Encoder(Protocol):
    def embed(self, texts: Sequence[str]) -> Scores: ...


def default_head_path() -> Path:
    """The head shipped in the package: ``policies/moderation/models/encoder_head.json``."""
    return Path(str(resources.files("policies.moderation.models").joinpath(HEAD_FILE)))


@dataclass(frozen=True, slots=True)
class EncoderHead:
    """A logistic layer per category on the encoder's vector, with the cascade's settings.

    Attributes:
        weights: ``[384, 6]``; bias ``[6]`` (``CATEGORIES`` order).
        thresholds: the cascade's tuned threshold per category.
        gate: a window goes to the encoder when some category's n-gram score reaches ``gate``
            times the n-gram threshold.
        encoder_sha256: the weights file the head was trained on (``encoder_export.WEIGHTS_SHA256``).
        summary: data, hashes, hyperparameters and dev figures of the training run.
    """

    weights: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    thresholds: dict[str, float]
    gate: float
    encoder_sha256: str
    summary: dict[str, Any]

    def logits(self, vectors: Scores) -> Scores:
        """Per-category log-odds of ``[n, 384]`` vectors."""
        return np.asarray(vectors @ self.weights + self.bias, dtype=np.float32)

    def combine(self, vectors: Scores, ngram_scores: Scores) -> Scores:
        """The cascade's score of encoded windows: the mean of the head's and the n-gram log-odds."""
        p = np.clip(ngram_scores.astype(np.float64), 1e-6, 1 - 1e-6)
        mean = (self.logits(vectors).astype(np.float64) + np.log(p / (1 - p))) / 2
        return np.asarray(1 / (1 + np.exp(-mean)), dtype=np.float32)

    @classmethod
    def load(cls, path: Path | None = None) -> EncoderHead:
        """Read a head file (default: the shipped one).

        Raises:
            ModerationModelError: missing, another format or category list.
        """
        path = path or default_head_path()
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModerationModelError(f"moderation head {path}: {e}") from e
        if doc.get("format") != HEAD_FORMAT or doc.get("categories") != list(CATEGORIES):
            raise ModerationModelError(f"moderation head {path} is not {HEAD_FORMAT} for {list(CATEGORIES)}; "
                                       "retrain with `python -m policies.moderation.train_cascade`")
        return cls(np.asarray(doc["weights"], dtype=np.float32), np.asarray(doc["bias"], dtype=np.float32),
                   {c: float(doc["thresholds"][c]) for c in CATEGORIES}, float(doc["gate"]),
                   str(doc["encoder_sha256"]), dict(doc.get("training_summary", {})))

    def document(self) -> dict[str, Any]:
        """The JSON document ``load`` reads (weights rounded to 6 decimals: ~30 KB)."""
        return {"format": HEAD_FORMAT, "categories": list(CATEGORIES),
                "weights": np.round(self.weights.astype(np.float64), 6).tolist(),
                "bias": np.round(self.bias.astype(np.float64), 6).tolist(),
                "thresholds": {c: round(self.thresholds[c], 4) for c in CATEGORIES}, "gate": self.gate,
                "encoder_sha256": self.encoder_sha256, "training_summary": self.summary}


class CascadeClassifier:
    """Scores texts per category like ``ModerationClassifier``, asking the encoder only about
    the texts the n-gram model is unsure of.

    Args:
        ngrams: the process's n-gram classifier.
        encoder: the sentence encoder (``SentenceEncoder``).
        head: the trained head and the cascade's thresholds and gate.

    Attributes:
        encoded: texts the encoder has read so far; ``scored``: texts scored (for the share).
    """

    def __init__(self, ngrams: _Scorer, encoder: _Encoder, head: EncoderHead) -> None:
        self._ngrams = ngrams
        self._encoder = encoder
        self._head = head
        self.thresholds: dict[str, float] = dict(head.thresholds)
        base = np.array([ngrams.thresholds[c] for c in CATEGORIES], dtype=np.float32)
        self._gate_at = np.float32(head.gate) * base
        self._rescale = np.array([head.thresholds[c] for c in CATEGORIES], dtype=np.float32) / base
        self.version = f"cascade:{getattr(ngrams, 'version', '?')}+minilm-{head.encoder_sha256[:12]}"
        self.encoded = 0
        self.scored = 0

    def uncertain(self, ngram_scores: Scores) -> npt.NDArray[np.bool_]:
        """Rows whose n-gram scores send them to the encoder."""
        return np.asarray((ngram_scores >= self._gate_at).any(axis=1), dtype=np.bool_)

    def scores(self, texts: Sequence[str]) -> Scores:
        """``[len(texts), 6]`` scores: the n-gram model's, rescaled, or combined with the encoder head's."""
        first = self._ngrams.scores(texts)
        out = np.minimum(first * self._rescale, np.float32(1.0))
        ask = np.flatnonzero(self.uncertain(first))
        if ask.size:
            out[ask] = self._head.combine(self._encoder.embed([texts[int(i)] for i in ask]), first[ask])
        self.encoded += int(ask.size)
        self.scored += len(texts)
        return np.asarray(out, dtype=np.float32)
