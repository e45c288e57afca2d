"""The shipped difficulty model loads, scores stably, and every bad model file is a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.errors import SwitchyardError
from router.difficulty import (
    FEATURE_SPEC_VERSION,
    ClassifierError,
    DifficultyClassifier,
    FeatureExtractor,
    default_model_path,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[3]
PROMPTS = [
    "What is the capital of France?",
    ("Prove that there are infinitely many primes p such that p + 2 is also prime, or explain why "
     "this is open, and sketch the best known partial result."),
    "```python\ndef f(xs):\n    return sorted(set(xs))[::-1]\n```\nWhat does this return for [3, 1, 3]?",
    "Let $x^2 + 3x - 4 = 0$. Find all real roots.\nA. 1 and -4\nB. -1 and 4\nC. 2 and -2\nD. 0\nAnswer:",
    "",
]


@pytest.fixture(scope="module")
def classifier() -> DifficultyClassifier:
    return DifficultyClassifier.load()


def test_shipped_model_loads_with_its_card(classifier: DifficultyClassifier) -> None:
    assert classifier.path == default_model_path()
    assert classifier.version.startswith(FEATURE_SPEC_VERSION + ":")
    assert classifier.family == "logistic"
    summary = classifier.summary
    assert summary["feature_spec_version"] == FEATURE_SPEC_VERSION
    assert isinstance(summary["seed"], int)
    assert summary["dev_metrics"] and 0 < summary["dev_mean_apgr"] < 1.5


def test_shipped_model_never_trained_on_non_commercial_or_gpl_sets(classifier: DifficultyClassifier) -> None:
    trained = set(classifier.summary["trained_on"])
    assert trained, "the training summary lists the sets the model was trained on"
    assert not trained & {"route_alpaca_eval", "prompts_wizardlm_testset", "prompts_mbppplus", "mod_ethos"}
    assert "route_alpaca_eval" in classifier.summary["never_trained_on"]


def test_scores_are_probabilities_and_stable(classifier: DifficultyClassifier) -> None:
    first = [classifier.score(p) for p in PROMPTS]
    assert all(0.0 <= s <= 1.0 for s in first)
    assert [classifier.score(p) for p in PROMPTS] == first
    again = DifficultyClassifier.load(default_model_path())
    assert [again.score(p) for p in PROMPTS] == first


def test_scores_do_not_depend_on_the_process_hash_seed(classifier: DifficultyClassifier) -> None:
    """Features hash with a fixed function, never Python's salted ``hash()``."""
    code = ("import json, sys; from router.difficulty import DifficultyClassifier as C; "
            "c = C.load(); print(json.dumps([c.score(p) for p in json.load(sys.stdin)]))")
    here = [classifier.score(p) for p in PROMPTS]
    for seed in ("1", "12345"):
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(PROMPTS), capture_output=True,
                             text=True, check=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == pytest.approx(here, abs=1e-7)


def test_harder_prompt_scores_higher(classifier: DifficultyClassifier) -> None:
    easy = classifier.score("hi! what's 2 + 2?")
    hard = classifier.score(
        "Let $G$ be a finite group of order $p^2 q$ with primes $p < q$. Prove that $G$ has a normal "
        "Sylow subgroup, then compute the number of isomorphism classes of such groups when "
        "$q \\equiv 1 \\pmod{p^2}$. Justify every step of the argument.")
    assert hard > easy


def test_text_with_special_token_markers_is_scored(classifier: DifficultyClassifier) -> None:
    assert 0.0 <= classifier.score("ignore <|endoftext|> and <|im_start|>system") <= 1.0


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ClassifierError, match="nope.onnx cannot be read") as info:
        DifficultyClassifier.load(missing)
    assert isinstance(info.value, SwitchyardError)
    assert (info.value.status_code, info.value.code) == (503, "classifier_unavailable")
    assert "router.train" in info.value.message


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", "truncated"])
def test_broken_file_is_a_clear_error(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "broken.onnx"
    blob = default_model_path().read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if content == "truncated" else content)  # type: ignore[arg-type]
    with pytest.raises(ClassifierError, match="broken.onnx is not a valid ONNX model"):
        DifficultyClassifier.load(path)


def test_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="cannot be read"):
        DifficultyClassifier.load(tmp_path)


def test_model_of_another_feature_spec_is_refused() -> None:
    with pytest.raises(ClassifierError, match=r"trained on feature spec 'hashed-ngrams/0', but this "
                                              r"Switchyard extracts") as info:
        DifficultyClassifier.load(FIXTURES / "old_spec.onnx")
    assert "python -m router.train" in info.value.message


def test_model_of_another_shape_is_refused() -> None:
    with pytest.raises(ClassifierError, match="expects 4 features"):
        DifficultyClassifier.load(FIXTURES / "wrong_dim.onnx")


def test_onnx_file_that_is_not_a_difficulty_model_is_refused() -> None:
    with pytest.raises(ClassifierError, match="no feature_spec_version"):
        DifficultyClassifier.load(FIXTURES / "no_metadata.onnx")


def test_fixtures_are_current() -> None:
    pytest.importorskip("onnx", reason="onnx (train extra) not installed: fixtures not regenerated")
    # the cascade extra brings onnx alone; the exporter also needs scipy
    pytest.importorskip("scipy", reason="scipy (train extra) not installed: fixtures not regenerated")
    from tests.unit.test_router.fixtures.make_fixtures import fixtures

    for name, model in fixtures().items():
        assert (FIXTURES / name).read_bytes() == model.SerializeToString(), (
            f"{name} is stale: python -m tests.unit.test_router.fixtures.make_fixtures")


def test_exported_graph_computes_what_training_computes(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="onnx (train extra) not installed")
    sp = pytest.importorskip("scipy.sparse", reason="scipy (train extra) not installed")
    from router.difficulty.export import build_model, save_model
    from router.difficulty.features import FEATURE_DIM

    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(FEATURE_DIM, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)),
              (rng.normal(size=(8, 1)).astype(np.float32), np.array([0.1], dtype=np.float32))]
    path = tmp_path / "mlp.onnx"
    save_model(build_model(layers, family="mlp", summary={"seed": 0}), str(path))
    extractor = FeatureExtractor.create()
    model = DifficultyClassifier.load(path, extractor=extractor)
    for prompt in PROMPTS:
        f = extractor.extract(prompt)
        x = sp.csr_matrix((f.values, f.indices, [0, f.indices.size]), shape=(1, FEATURE_DIM))
        z = np.maximum(x @ layers[0][0] + layers[0][1], 0) @ layers[1][0] + layers[1][1]
        assert model.score(prompt) == pytest.approx(float(1 / (1 + np.exp(-z[0, 0]))), abs=1e-5)
    assert model.family == "mlp"
