"""Requests checked at the same time share classifier runs, through the real endpoint with the
openai SDK: every input and every answer is scored by a batch before its checks run (no check
scores on its own), and the verdicts are the ones each text gets alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import openai
import pytest

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL
from gateway.score_batch import BatchingScorer
from policies.moderation.rules import Scorer
from tests.conftest import ThreadedStack

HATEFUL = "I hate immigrants. They are vermin and should all be exterminated."


class CountingRuns:
    """The classifier, with its runs counted."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.runs: list[int] = []
        self.thresholds = scorer.thresholds

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.runs.append(len(texts))
        return self.scorer.scores(texts)


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    def defaults(document: dict[str, Any]) -> None:
        document["moderation"] = {"default": {}}  # both sides, every category, the shipped model

    stack = ThreadedStack(tmp_path_factory.mktemp("batched"), edit_policy=defaults)
    yield stack
    stack.close()


def _batcher(stack: ThreadedStack) -> BatchingScorer:
    moderator = stack.stack.app.state.gateway.runtime.moderation.for_request("team-a", LOCAL_MODEL)
    assert moderator is not None and isinstance(moderator.scorer, BatchingScorer)
    return moderator.scorer


async def _ask_all(url: str, replies: list[str]) -> list[Any]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=DEMO_KEY, max_retries=0)
    try:
        return await asyncio.gather(*(client.chat.completions.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": f"Question {i}: what about bread?"}],
            extra_body={"sim_reply": reply}) for i, reply in enumerate(replies)))
    finally:
        await client.close()


def test_concurrent_requests_are_checked_from_shared_runs_with_their_own_verdicts(classified: ThreadedStack) -> None:
    batcher = _batcher(classified)
    counting = CountingRuns(batcher.scorer)
    batcher.scorer = counting
    try:
        batches_before, texts_before = batcher.batches, batcher.texts
        replies = [f"Bake loaf {i} at 230 degrees for forty minutes." for i in range(15)] + [HATEFUL]
        answers = asyncio.run(_ask_all(classified.url, replies))
    finally:
        batcher.scorer = counting.scorer
    benign, hateful = answers[:-1], answers[-1]
    assert all(a.choices[0].finish_reason != "content_filter" for a in benign)
    assert [a.choices[0].message.content for a in benign] == replies[:-1]
    assert hateful.choices[0].finish_reason == "content_filter" and "vermin" not in (hateful.choices[0].message.content or "")
    # every input and every answer was scored by a batch run before its check: no check ran its own
    assert len(counting.runs) == batcher.batches - batches_before
    assert sum(counting.runs) == batcher.texts - texts_before == 2 * len(replies)
