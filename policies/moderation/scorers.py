"""The process's moderation classifiers, one per ``moderation.classifier`` kind.

The n-gram model is opened at start-up (``ModerationClassifier.load``); the cascade
(``cascade.py``: the n-gram model plus MiniLM-L6 and its head, ~25 MB) is built the first time
a policy names it and kept for the process's life, so a process whose policies never name it
never loads the encoder (the serving process's memory bar counts every byte).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from backends.errors import SwitchyardError
from policies.moderation.categories import CATEGORIES, ClassifierKind
from policies.moderation.rules import Scorer

__all__ = ["ModerationModels", "RescaledScorer", "load_cascade"]


def load_cascade(ngrams: Scorer, cache_dir: Path | None = None, head_path: Path | None = None) -> Scorer:
    """The cascade on ``ngrams``: builds (first use) or reuses the encoder in ``cache_dir``.

    Raises:
        SwitchyardError: a package is missing, or the head or encoder cannot be read.
    """
    from policies.moderation.cascade import CascadeClassifier, EncoderHead
    from policies.moderation.encoder import SentenceEncoder

    head = EncoderHead.load(head_path)
    return CascadeClassifier(ngrams, SentenceEncoder.load(cache_dir), head)


class RescaledScorer:
    """The n-gram model's scores on another scorer's threshold scale (``s * T / t``, at most 1):
    the same verdict relative to each threshold as the n-gram model alone, at its cost.

    The cascade's running score: an incremental stream scores its open window about once per
    48 characters, and a part-window scores higher than the whole one, so the encoder would
    run on a third of them (on the cost bench's answer: 26 encoder runs a stream instead of 2,
    181 ms of CPU instead of 31). A borderline start is held until its window is complete and
    the cascade scores it whole.
    """

    def __init__(self, ngrams: Scorer, thresholds: Mapping[str, float]) -> None:
        self._ngrams = ngrams
        self.thresholds: dict[str, float] = dict(thresholds)
        self._scale = np.array([thresholds[c] / ngrams.thresholds[c] for c in CATEGORIES], dtype=np.float32)

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The n-gram scores, rescaled."""
        return np.asarray(np.minimum(self._ngrams.scores(texts) * self._scale, np.float32(1.0)), dtype=np.float32)


class ModerationModels:
    """The n-gram classifier, and the cascade on demand; itself a ``Scorer`` (the n-gram one).

    Args:
        ngrams: the process's n-gram classifier.
        cascade: builds the cascade; called once, the first time a policy asks for it.
    """

    def __init__(self, ngrams: Scorer, cascade: Callable[[Scorer], Scorer] = load_cascade) -> None:
        self.ngrams = ngrams
        self._build = cascade
        self._cascade: Scorer | None = None
        self._running: Scorer | None = None
        self._lock = threading.Lock()  # two policy loads at once still build one encoder

    @property
    def thresholds(self) -> Mapping[str, float]:
        """The n-gram model's thresholds."""
        return self.ngrams.thresholds

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The n-gram model's scores."""
        return self.ngrams.scores(texts)

    @property
    def cascade_loaded(self) -> bool:
        """Whether the encoder has been loaded in this process."""
        return self._cascade is not None

    def get(self, kind: ClassifierKind) -> Scorer:
        """The classifier a policy names, loading the cascade on first use.

        Raises:
            ValueError: the cascade cannot be loaded; the message says why and how to fix it.
        """
        if kind == "ngrams":
            return self.ngrams
        with self._lock:
            if self._cascade is None:
                try:
                    self._cascade = self._build(self.ngrams)
                except SwitchyardError as e:
                    raise ValueError(f"moderation.classifier cascade: {e}") from e
                self._running = RescaledScorer(self.ngrams, self._cascade.thresholds)
            return self._cascade

    def running(self, kind: ClassifierKind) -> Scorer | None:
        """What an incremental stream's running score uses with ``kind`` (None: the classifier
        itself); for the cascade, the n-gram model on its scale (``RescaledScorer``).

        Raises:
            ValueError: as ``get``.
        """
        if kind == "ngrams":
            return None
        self.get(kind)
        return self._running
