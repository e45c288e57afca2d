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

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from router.difficulty.features import FEATURE_DIM, FEATURE_SPEC_VERSION

OPSET = 17
IR_VERSION = 9  # readable by every onnxruntime the runtime dependency allows (>= 1.18)
INPUTS = ("indices", "values")
OUTPUT = "p_strong"


def build_model(
    layers: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
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
    inits, nodes = [], []
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(np.ascontiguousarray(w, dtype=np.float32), f"W{i}"),
                  numpy_helper.from_array(np.ascontiguousarray(b, dtype=np.float32), f"b{i}")]
    nodes.append(helper.make_node("Gather", ["W0", "indices"], ["rows"], axis=0))
    nodes.append(helper.make_node("MatMul", ["values", "rows"], ["z0"]))
    nodes.append(helper.make_node("Add", ["z0", "b0"], ["a0"]))
    last = "a0"
    for i in range(1, len(layers)):
        nodes.append(helper.make_node("Relu", [last], [f"h{i}"]))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"W{i}"], [f"z{i}"]))
        nodes.append(helper.make_node("Add", [f"z{i}", f"b{i}"], [f"a{i}"]))
        last = f"a{i}"
    nodes.append(helper.make_node("Sigmoid", [last], [OUTPUT]))
    graph = helper.make_graph(
        nodes, "switchyard_difficulty",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["n"]),
         helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="switchyard.router.train", ir_version=IR_VERSION)
    model.doc_string = "P(the strong model is needed) for router text; see docs/router-model.md"
    helper.set_model_props(model, {
        "feature_spec_version": spec_version,
        "feature_dim": str(feature_dim),
        "model_family": family,
        "training_summary": json.dumps(summary, sort_keys=True),
    })
    onnx.checker.check_model(model)
    return model


def save_model(model: onnx.ModelProto, path: str) -> None:
    """Write the model as one self-contained file."""
    onnx.save_model(model, path)
