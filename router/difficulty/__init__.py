"""The difficulty classifier: how much the strong model is needed for a conversation.

Run time needs onnxruntime, numpy and tiktoken only. ``DifficultyClassifier.load()`` opens the
shipped ``router/models/difficulty.onnx`` (see ``docs/router-model.md``); ``router_text``
says what of a conversation it reads; ``calibrate`` turns a strong-call budget into a
threshold. Training (``python -m router.train``) needs the ``train`` extra.
"""

from __future__ import annotations

from router.difficulty.calibration import Calibration, calibrate
from router.difficulty.classifier import (
    ClassifierError,
    DifficultyClassifier,
    default_model_path,
)
from router.difficulty.context import router_text
from router.difficulty.features import (
    FEATURE_DIM,
    FEATURE_SPEC_VERSION,
    FeatureExtractor,
)

__all__ = [
    "FEATURE_DIM",
    "FEATURE_SPEC_VERSION",
    "Calibration",
    "ClassifierError",
    "DifficultyClassifier",
    "FeatureExtractor",
    "calibrate",
    "default_model_path",
    "router_text",
]
