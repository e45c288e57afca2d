"""``BatchingScorer``: the texts asked for in one turn of the loop are scored in one run, and
a check gets the scores it would have got alone, prescored or not."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from gateway.score_batch import READY_LIMIT, BatchingScorer
from policies.moderation import ModerationClassifier


class CountingScorer:
    """Scores a text by its length (one column per category), recording every run."""

    thresholds: Mapping[str, float] = {"hate": 0.5}

    def __init__(self, fail: bool = False) -> None:
        self.runs: list[list[str]] = []
        self.fail = fail

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.runs.append(list(texts))
        if self.fail:
            raise RuntimeError("the model is gone")
        return np.array([[len(t) / 100] * 6 for t in texts], dtype=np.float32).reshape(len(texts), 6)


async def _check(batcher: BatchingScorer, text: str) -> npt.NDArray[np.float32]:
    await batcher.prescore([text])
    return batcher.scores([text])  # what the synchronous check does next


async def test_texts_asked_for_in_one_turn_share_one_run_and_each_check_finds_its_scores() -> None:
    inner = CountingScorer()
    batcher = BatchingScorer(inner)
    texts = [f"message number {i}" + "x" * i for i in range(12)]
    results = await asyncio.gather(*(_check(batcher, t) for t in texts))
    assert inner.runs == [texts]  # one run; the checks scored nothing on their own
    for text, got in zip(texts, results, strict=True):
        assert np.array_equal(got, inner.scores([text]))
    assert (batcher.batches, batcher.texts) == (1, 12)


async def test_a_text_not_prescored_is_scored_on_the_spot_with_the_ready_ones() -> None:
    inner = CountingScorer()
    batcher = BatchingScorer(inner)
    await batcher.prescore(["ready one"])
    got = batcher.scores(["ready one", "not asked for"])
    assert inner.runs == [["ready one"], ["not asked for"]]
    assert np.array_equal(got, inner.scores(["ready one", "not asked for"]))


async def test_the_same_text_twice_in_a_turn_is_scored_once() -> None:
    inner = CountingScorer()
    batcher = BatchingScorer(inner)
    await asyncio.gather(batcher.prescore(["same"]), batcher.prescore(["same", "other"]))
    assert inner.runs == [["same", "other"]]


async def test_a_request_cancelled_while_it_waits_leaves_the_batch_to_the_others() -> None:
    inner = CountingScorer()
    batcher = BatchingScorer(inner)
    leaving = asyncio.ensure_future(batcher.prescore(["leaving"]))
    staying = asyncio.ensure_future(_check(batcher, "staying"))
    await asyncio.sleep(0)  # both have asked; the run is scheduled
    leaving.cancel()
    got = await staying
    assert leaving.cancelled() and np.array_equal(got, inner.scores(["staying"]))


async def test_a_failing_run_leaves_each_check_to_meet_the_error_itself() -> None:
    batcher = BatchingScorer(CountingScorer(fail=True))
    await batcher.prescore(["anything"])  # does not raise: the check reports it where it handles it
    with pytest.raises(RuntimeError, match="gone"):
        batcher.scores(["anything"])
    assert batcher.batches == 0


async def test_scores_no_check_took_are_dropped_past_the_limit() -> None:
    inner = CountingScorer()
    batcher = BatchingScorer(inner)
    await batcher.prescore([f"abandoned {i}" for i in range(READY_LIMIT)])
    await batcher.prescore(["next"])  # the held scores would pass the limit: replaced
    batcher.scores(["abandoned 0"])
    assert inner.runs[-1] == ["abandoned 0"]


async def test_the_real_classifier_gives_a_batched_text_its_own_scores() -> None:
    classifier = ModerationClassifier.load()
    batcher = BatchingScorer(classifier)
    texts = ["You are a wonderful person.", "I will hurt you badly, you clown.", "Here is the plan for today."]
    results = await asyncio.gather(*(_check(batcher, t) for t in texts))
    for text, got in zip(texts, results, strict=True):
        assert np.allclose(got, classifier.scores([text]), atol=1e-6)
