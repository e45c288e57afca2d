"""The difficulty classifier at run time: router text in, P(strong model needed) out.

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

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from backends.errors import SwitchyardError
from router.difficulty.features import FeatureExtractor
from router.sparse_linear import session_options

__all__ = ["MODEL_FILE", "ClassifierError", "DifficultyClassifier", "default_model_path", "session_options"]

MODEL_FILE = "difficulty.onnx"
_INPUTS = {"indices", "values"}
_OUTPUT = "p_strong"
_RETRAIN = "retrain with `python -m router.train --data <shared/data> --out <file>`"


class ClassifierError(SwitchyardError):
    """The difficulty model is missing, unreadable, or does not match this build's features."""

    status_code, error_type, code = 503, "api_error", "classifier_unavailable"


def default_model_path() -> Path:
    """The model shipped in the package: ``router/models/difficulty.onnx``."""
    return Path(str(resources.files("router.models").joinpath(MODEL_FILE)))


class DifficultyClassifier:
    """Scores router text with P(the strong model is needed), in [0, 1].

    Attributes:
        version: ``<feature spec>:<first 12 hex of the file's SHA-256>``; goes on spans and in
            the debug header, so a decision can be traced to the exact model that made it.
        path: where the model was loaded from.
        family: the model family recorded in the file (e.g. ``logistic``).
        summary: the training summary recorded in the file (data sets, sizes, seed, metrics).
    """

    def __init__(self, session: ort.InferenceSession, extractor: FeatureExtractor, *,
                 path: Path, digest: str) -> None:
        meta = _checked_metadata(session, extractor, path)
        self._session = session
        self._extractor = extractor
        self.path = path
        self.version = f"{meta['feature_spec_version']}:{digest[:12]}"
        self.family = meta.get("model_family", "unknown")
        self.summary: dict[str, Any] = json.loads(meta.get("training_summary", "{}"))

    @classmethod
    def load(cls, path: str | Path | None = None, *, extractor: FeatureExtractor | None = None,
             threads: int = 1) -> DifficultyClassifier:
        """Open a model file (default: the shipped one), check it, and run it once.

        Raises:
            ClassifierError: the file is missing or broken, or was built for another feature
                spec; the message says which and how to fix it.
        """
        model_path = Path(path) if path is not None else default_model_path()
        try:
            blob = model_path.read_bytes()
        except OSError as e:
            raise ClassifierError(f"difficulty model {model_path} cannot be read ({e.strerror or e}); "
                                  f"point the router at a model file or {_RETRAIN}") from e
        try:
            session = ort.InferenceSession(blob, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for bad files
            raise ClassifierError(f"difficulty model {model_path} is not a valid ONNX model: {e}") from e
        classifier = cls(session, extractor or FeatureExtractor.create(), path=model_path,
                         digest=hashlib.sha256(blob).hexdigest())
        classifier.score("Is this model working?")  # a graph that cannot run fails now, not on traffic
        return classifier

    def score(self, text: str) -> float:
        """P(the strong model is needed) for one router text (see ``router_text``).

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


def _checked_metadata(session: ort.InferenceSession, extractor: FeatureExtractor, path: Path) -> dict[str, str]:
    meta: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    spec = meta.get("feature_spec_version")
    if spec is None:
        raise ClassifierError(f"difficulty model {path} has no feature_spec_version in its metadata: "
                              f"it is not a Switchyard difficulty model; {_RETRAIN}")
    if spec != extractor.spec_version:
        raise ClassifierError(f"difficulty model {path} was trained on feature spec {spec!r}, but this "
                              f"Switchyard extracts {extractor.spec_version!r}; {_RETRAIN}, or run the "
                              "Switchyard version the model was trained with")
    if meta.get("feature_dim") != str(extractor.dim):
        raise ClassifierError(f"difficulty model {path} expects {meta.get('feature_dim')} features, "
                              f"spec {spec!r} has {extractor.dim}: the file is inconsistent; {_RETRAIN}")
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if inputs != _INPUTS or _OUTPUT not in outputs:
        raise ClassifierError(f"difficulty model {path} has inputs {sorted(inputs)} and outputs "
                              f"{sorted(outputs)}; expected {sorted(_INPUTS)} -> {_OUTPUT!r}; {_RETRAIN}")
    return meta
