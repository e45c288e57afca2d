"""The moderation classifier at run time: a batch of texts in, per-category scores out.

Build one ``ModerationClassifier`` per process at start-up (``ModerationClassifier.load``) and
hand it to every ``Moderator``; it owns the process's one ``onnxruntime.InferenceSession``
(one thread: a batch of stream windows is ~0.1 ms of work). The model is a logistic layer per
category over hashed n-grams (``features.py``); see ``docs/moderation-model.md``.

Loading checks the file before the gateway takes traffic and fails with a
``ModerationModelError`` that names the file and the fix: missing or unreadable file, not
ONNX, another feature spec or shape, other categories, a graph that does not run. There is no
silent fallback: a gateway that quietly stopped moderating would be worse than one that does
not start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backends.errors import SwitchyardError
from policies.moderation.categories import CATEGORIES
from policies.moderation.features import FeatureExtractor
from router.sparse_linear import ModelFile, ModelSpec, batch_inputs, open_model

__all__ = ["MODEL_FILE", "OUTPUT", "ModerationClassifier", "ModerationModelError", "default_model_path"]

MODEL_FILE = "moderation.onnx"
BATCH = 32
"""Texts per ONNX run: a batch's ``values`` is dense ``[batch, features of the whole batch]``,
so it grows with the square of the batch; 32 windows are ~1 MB and one run."""
OUTPUT = "scores"
_RETRAIN = "retrain with `python -m policies.moderation.train --data <shared/data>`"


class ModerationModelError(SwitchyardError):
    """The moderation model is missing, unreadable, or does not match this build."""

    status_code, error_type, code = 503, "api_error", "moderation_unavailable"


def default_model_path() -> Path:
    """The model shipped in the package: ``policies/moderation/models/moderation.onnx``."""
    return Path(str(resources.files("policies.moderation.models").joinpath(MODEL_FILE)))


class ModerationClassifier:
    """Scores texts per category (``CATEGORIES`` order), each score in [0, 1].

    Attributes:
        version: ``<feature spec>:<first 12 hex of the file's SHA-256>``, for spans and metrics.
        path: where the model was loaded from.
        thresholds: the per-category thresholds tuned at training time (used where the policy
            sets none).
        summary: the training summary recorded in the file (data, licences, seed, metrics).
    """

    def __init__(self, model: ModelFile, extractor: FeatureExtractor, *, path: Path) -> None:
        meta = model.meta
        if json.loads(meta["categories"]) != list(CATEGORIES):
            raise ModerationModelError(f"moderation model {path} scores categories {meta['categories']}, "
                                       f"this Switchyard expects {list(CATEGORIES)}; {_RETRAIN}")
        self._session = model.session
        self._extractor = extractor
        self.path = path
        self.version = f"{meta['feature_spec_version']}:{model.digest[:12]}"
        self.family = meta.get("model_family", "unknown")
        self.thresholds: dict[str, float] = {c: float(t) for c, t in json.loads(meta["thresholds"]).items()}
        self.summary: dict[str, Any] = json.loads(meta.get("training_summary", "{}"))

    @classmethod
    def load(cls, path: str | Path | None = None, *, extractor: FeatureExtractor | None = None,
             threads: int = 1) -> ModerationClassifier:
        """Open a model file (default: the shipped one), check it, and run it once.

        Raises:
            ModerationModelError: the file is missing or broken, or was built for another
                feature spec or category list; the message says which and how to fix it.
        """
        model_path = Path(path) if path is not None else default_model_path()
        extractor = extractor or FeatureExtractor.create()
        spec = ModelSpec("moderation model", extractor.spec_version, extractor.dim, OUTPUT, _RETRAIN,
                         ModerationModelError, required=("thresholds", "categories"))
        classifier = cls(open_model(model_path, spec, threads), extractor, path=model_path)
        classifier.scores(["Is this model working?", ""])  # a graph that cannot run fails now
        return classifier

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """``[len(texts), len(CATEGORIES)]`` scores, one ONNX run per ``BATCH`` texts.

        Raises:
            ModerationModelError: onnxruntime failed to run the model.
        """
        if len(texts) <= BATCH:  # one run (a request's message, a stream's window): no copy
            return self._run(texts)
        out = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            out[start:start + BATCH] = self._run(texts[start:start + BATCH])
        return out

    def _run(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        rows = self._extractor.extract_many(texts)
        # one text's values are its own row (a view): nothing to lay out
        indices, values = (rows[0].indices, rows[0].values[None, :]) if len(rows) == 1 else batch_inputs(rows)
        try:
            (out,) = self._session.run([OUTPUT], {"indices": indices, "values": values})
        except Exception as e:
            raise ModerationModelError(f"moderation model {self.path} failed to run: {e}") from e
        return np.asarray(out, dtype=np.float32).reshape(len(texts), len(CATEGORIES))

