"""Write a trained moderation model as ONNX (training time only: needs the ``train`` extra).

The graph (``router.sparse_linear_export.build_graph``) reads a batch of hashed feature
vectors as ``indices`` (int64 ``[n]``) and ``values`` (float32 ``[batch, n]``) and computes
``scores = sigmoid(values @ W[indices] + b)``, ``[batch, 6]``: one logistic model per category,
sharing the gather. ``W`` is stored as float16 (2^18 x 6 weights: 3 MB instead of 6; the scores
move by under 1e-3).

The file's ``metadata_props``: ``feature_spec_version`` and ``feature_dim`` (checked at load),
``categories`` (JSON list, the column order), ``thresholds`` (JSON, tuned per category on the
dev split), ``model_family`` and ``training_summary`` (JSON: data and hashes, licences, seed,
hyperparameters, dev metrics).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import onnx

from policies.moderation.categories import CATEGORIES
from policies.moderation.classifier import OUTPUT
from policies.moderation.features import FEATURE_DIM, FEATURE_SPEC_VERSION
from router.sparse_linear_export import Layers, build_graph, save_model

__all__ = ["build_model", "save_model"]


def build_model(
    layers: Layers,
    *,
    thresholds: Mapping[str, float],
    summary: Mapping[str, Any],
    family: str = "logistic",
    spec_version: str = FEATURE_SPEC_VERSION,
    feature_dim: int = FEATURE_DIM,
) -> onnx.ModelProto:
    """The ONNX model of per-category logistic layers ``[(W [dim, 6], b [6])]``."""
    w, b = layers[-1]
    if layers[0][0].shape[0] != feature_dim or w.shape[1] != len(CATEGORIES) or b.shape != (len(CATEGORIES),):
        raise ValueError(f"expected W [{feature_dim}, {len(CATEGORIES)}] and b [{len(CATEGORIES)}], "
                         f"got {layers[0][0].shape} and {b.shape}")
    return build_graph(
        layers, name="switchyard_moderation", output=OUTPUT, values_shape=["batch", "n"],
        output_shape=["batch", len(CATEGORIES)], producer="switchyard.policies.moderation.train",
        doc="Per-category moderation scores; see docs/moderation-model.md", first_layer_dtype="float16",
        props={
            "feature_spec_version": spec_version,
            "feature_dim": str(feature_dim),
            "categories": json.dumps(list(CATEGORIES)),
            "thresholds": json.dumps({c: round(float(thresholds[c]), 4) for c in CATEGORIES}),
            "model_family": family,
            "training_summary": json.dumps(summary, sort_keys=True),
        },
    )
