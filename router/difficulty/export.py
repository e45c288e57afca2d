"""Write a trained difficulty model as an ONNX graph (training time only: needs ``onnx``).

The graph reads the sparse feature vector of ``router.difficulty.features`` as ``indices``
(int64, ``[n]``) and ``values`` (float32, ``[1, n]``), and computes
``p_strong = sigmoid(values @ W[indices] + b)`` for a linear model, or the same through one
ReLU hidden layer for an MLP. Gathering only the rows of ``W`` a prompt uses keeps a decision
proportional to the prompt's length, not to the 262k-wide hashed space.

The file's ``metadata_props`` carry ``feature_spec_version`` and ``feature_dim``, which the
runtime checks before it accepts the file, plus ``model_family`` and ``training_summary``
(JSON: data sets, sizes, seed, dev metrics).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import onnx

from router.difficulty.features import FEATURE_DIM, FEATURE_SPEC_VERSION
from router.sparse_linear_export import (
    IR_VERSION,
    OPSET,
    Layers,
    build_graph,
    save_model,
)

__all__ = ["INPUTS", "IR_VERSION", "OPSET", "OUTPUT", "build_model", "save_model"]

INPUTS = ("indices", "values")
OUTPUT = "p_strong"


def build_model(
    layers: Layers,
    *,
    family: str,
    summary: Mapping[str, Any],
    spec_version: str = FEATURE_SPEC_VERSION,
    feature_dim: int = FEATURE_DIM,
) -> onnx.ModelProto:
    """The ONNX model of a stack of dense layers ``[(W1, b1), (W2, b2), ...]``.

    ``W1`` is ``[feature_dim, h1]`` and is gathered by the input indices; every later layer
    follows a ReLU; the last has one output, passed through a sigmoid.
    """
    if layers[0][0].shape[0] != feature_dim:
        raise ValueError(f"first layer has {layers[0][0].shape[0]} rows, the spec has {feature_dim}")
    return build_graph(
        layers, name="switchyard_difficulty", output=OUTPUT, values_shape=[1, "n"], output_shape=[1, 1],
        producer="switchyard.router.train",
        doc="P(the strong model is needed) for router text; see docs/router-model.md",
        props={
            "feature_spec_version": spec_version,
            "feature_dim": str(feature_dim),
            "model_family": family,
            "training_summary": json.dumps(summary, sort_keys=True),
        },
    )
