"""Write a sparse linear model (or a small MLP) as an ONNX graph; training time only.

Needs the ``train`` extra (``onnx``, ``scipy``). The graph reads a hashed feature vector
(``router.sparse_linear.SparseFeatures``) as ``indices`` (int64, ``[n]``) and ``values``
(float32, ``[rows, n]``) and computes ``activation(values @ W[indices] + b)``, through ReLU
hidden layers when there are several. Gathering only the rows of ``W`` a text uses keeps the
cost proportional to the text, not to the hashed space. ``rows`` is 1 for one text; a batch
of texts concatenates their indices and gives each text one row of ``values`` that is zero
outside its own columns (``batch_values``), so one run scores them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

from router.sparse_linear import SparseFeatures

OPSET = 17
IR_VERSION = 9  # readable by every onnxruntime the runtime dependency allows (>= 1.18)

Layers = list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]
Dim = int | str


def build_graph(
    layers: Layers,
    *,
    name: str,
    output: str,
    values_shape: Sequence[Dim],
    output_shape: Sequence[Dim],
    producer: str,
    doc: str,
    props: Mapping[str, str],
    first_layer_dtype: Literal["float32", "float16"] = "float32",
) -> onnx.ModelProto:
    """The checked ONNX model of a stack of dense layers ``[(W1, b1), (W2, b2), ...]``.

    ``W1`` is gathered by the input indices; every later layer follows a ReLU; the last one is
    passed through a sigmoid into ``output``. ``first_layer_dtype="float16"`` stores ``W1`` at
    half the size (the gathered rows are cast back to float32), for wide multi-output layers.
    """
    inits, nodes = [], []
    for i, (w, b) in enumerate(layers):
        dtype = np.float16 if i == 0 and first_layer_dtype == "float16" else np.float32
        inits += [numpy_helper.from_array(np.ascontiguousarray(w, dtype=dtype), f"W{i}"),
                  numpy_helper.from_array(np.ascontiguousarray(b, dtype=np.float32), f"b{i}")]
    if first_layer_dtype == "float16":
        nodes.append(helper.make_node("Gather", ["W0", "indices"], ["rows16"], axis=0))
        nodes.append(helper.make_node("Cast", ["rows16"], ["rows"], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Gather", ["W0", "indices"], ["rows"], axis=0))
    nodes.append(helper.make_node("MatMul", ["values", "rows"], ["z0"]))
    nodes.append(helper.make_node("Add", ["z0", "b0"], ["a0"]))
    last = "a0"
    for i in range(1, len(layers)):
        nodes.append(helper.make_node("Relu", [last], [f"h{i}"]))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"W{i}"], [f"z{i}"]))
        nodes.append(helper.make_node("Add", [f"z{i}", f"b{i}"], [f"a{i}"]))
        last = f"a{i}"
    nodes.append(helper.make_node("Sigmoid", [last], [output]))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["n"]),
         helper.make_tensor_value_info("values", TensorProto.FLOAT, list(values_shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(output_shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=producer, ir_version=IR_VERSION)
    model.doc_string = doc
    helper.set_model_props(model, dict(props))
    onnx.checker.check_model(model)
    return model


def save_model(model: onnx.ModelProto, path: str) -> None:
    """Write the model as one self-contained file."""
    onnx.save_model(model, path)


def sparse_matrix(rows: Iterable[SparseFeatures], dim: int) -> sp.csr_matrix:
    """The ``[len(rows), dim]`` CSR matrix of feature vectors, duplicate indices summed as the
    ONNX graph sums them."""
    indptr, indices, values = [0], [], []
    for f in rows:
        indices.append(f.indices)
        values.append(f.values)
        indptr.append(indptr[-1] + f.indices.size)
    if not indices:
        return sp.csr_matrix((0, dim), dtype=np.float32)
    matrix = sp.csr_matrix((np.concatenate(values), np.concatenate(indices), np.array(indptr)),
                           shape=(len(indptr) - 1, dim), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix
