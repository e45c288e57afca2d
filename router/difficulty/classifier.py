"""The difficulty classifier at run time: router text in, how much the strong model is needed out.

Build one ``DifficultyClassifier`` per process at start-up (``DifficultyClassifier.load``) and
pass it to whatever routes; it owns the process's one ``onnxruntime.InferenceSession``. The
session runs on one intra-op and one inter-op thread: a decision is ~0.1 ms of work, far too
little to split, and the gateway's event loop and other requests want the other cores.

Loading checks everything it can before the gateway takes traffic, and fails with a
``ClassifierError`` naming the file and what to do: missing file, a file onnxruntime cannot
read, a model built for another feature spec or shape, a graph that does not run. There is no
silent fallback: a router that quietly sent everything to one tier would cost money or quality
without anyone noticing.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from backends.errors import SwitchyardError
from router.difficulty.features import FeatureExtractor
from router.sparse_linear import ModelFile, ModelSpec, open_model, session_options

__all__ = ["MODEL_FILE", "ClassifierError", "DifficultyClassifier", "default_model_path", "session_options"]

MODEL_FILE = "difficulty.onnx"
_OUTPUT = "p_strong"
_RETRAIN = "retrain with `python -m router.train --data <shared/data> --out <file>`"


class ClassifierError(SwitchyardError):
    """The difficulty model is missing, unreadable, or does not match this build's features."""

    status_code, error_type, code = 503, "api_error", "classifier_unavailable"


def default_model_path() -> Path:
    """The model shipped in the package: ``router/models/difficulty.onnx``."""
    return Path(str(resources.files("router.models").joinpath(MODEL_FILE)))


class DifficultyClassifier:
    """Scores router text with how much the strong model is needed, in [0, 1]: the strong
    tier's expected quality gain mapped to [0, 1], so 0.5 is "no gain expected".

    Attributes:
        version: ``<feature spec>:<first 12 hex of the file's SHA-256>``; goes on spans and in
            the debug header, so a decision can be traced to the exact model that made it.
        path: where the model was loaded from.
        family: the model family recorded in the file (e.g. ``logistic``).
        summary: the training summary recorded in the file (data sets, sizes, seed, metrics).
    """

    def __init__(self, model: ModelFile, extractor: FeatureExtractor, *, path: Path) -> None:
        self._session = model.session
        self._extractor = extractor
        self.path = path
        self.version = f"{model.meta['feature_spec_version']}:{model.digest[:12]}"
        self.family = model.meta.get("model_family", "unknown")
        self.summary: dict[str, Any] = json.loads(model.meta.get("training_summary", "{}"))

    @classmethod
    def load(cls, path: str | Path | None = None, *, extractor: FeatureExtractor | None = None,
             threads: int = 1) -> DifficultyClassifier:
        """Open a model file (default: the shipped one), check it, and run it once.

        Raises:
            ClassifierError: the file is missing or broken, or was built for another feature
                spec; the message says which and how to fix it.
        """
        model_path = Path(path) if path is not None else default_model_path()
        extractor = extractor or FeatureExtractor.create()
        spec = ModelSpec("difficulty model", extractor.spec_version, extractor.dim, _OUTPUT, _RETRAIN,
                         ClassifierError)
        classifier = cls(open_model(model_path, spec, threads), extractor, path=model_path)
        classifier.score("Is this model working?")  # a graph that cannot run fails now, not on traffic
        return classifier

    def score(self, text: str) -> float:
        """How much the strong model is needed for one router text (see ``router_text``).

        Raises:
            ClassifierError: onnxruntime failed to run the model.
        """
        features = self._extractor.extract(text)
        try:
            (out,) = self._session.run([_OUTPUT], {"indices": features.indices,
                                                   "values": features.values.reshape(1, -1)})
        except Exception as e:
            raise ClassifierError(f"difficulty model {self.path} failed to run: {e}") from e
        return float(np.asarray(out).reshape(-1)[0])

