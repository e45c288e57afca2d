"""Feature extraction and the router text: bounded, deterministic, safe on any input."""

from __future__ import annotations

import numpy as np
import pytest

from backends.types import Message, TextPart
from router.difficulty import FEATURE_DIM, FeatureExtractor, router_text
from router.difficulty.context import CONTEXT_CHARS, TURN_CHARS
from router.difficulty.features import MAX_CHARS, N_HASHED, STRUCTURAL, clip_text


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor.create()


@pytest.mark.parametrize("text", ["", "a", "Hello, world?", "é" * 5000, "<|endoftext|>", "x\n" * 20_000])
def test_vector_is_in_range(extractor: FeatureExtractor, text: str) -> None:
    f = extractor.extract(text)
    assert f.indices.dtype == np.int64 and f.values.dtype == np.float32
    assert f.indices.shape == f.values.shape
    assert f.indices.min() >= 0 and f.indices.max() < FEATURE_DIM
    assert np.isfinite(f.values).all()
    # the structural block is always present, at the end, in order
    assert list(f.indices[-len(STRUCTURAL):]) == list(range(N_HASHED, FEATURE_DIM))


def test_hashed_families_are_bag_averages(extractor: FeatureExtractor) -> None:
    f = extractor.extract("the cat sat on the mat " * 40)
    hashed = f.values[f.indices < N_HASHED]
    assert hashed.sum() == pytest.approx(2.0, rel=1e-5)  # unigrams and bigrams each sum to one


def test_extraction_is_deterministic(extractor: FeatureExtractor) -> None:
    a, b = extractor.extract("Solve x^2 = 4."), FeatureExtractor.create().extract("Solve x^2 = 4.")
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)


def test_structure_is_seen(extractor: FeatureExtractor) -> None:
    def value(text: str, name: str) -> float:
        return float(extractor.extract(text).values[-len(STRUCTURAL) + STRUCTURAL.index(name)])

    assert value("```python\nprint(1)\n```", "code_fences") > value("print one", "code_fences")
    assert value("$\\frac{a}{b}$", "latex") > value("a over b", "latex")
    assert value("Q?\nA. x\nB. y\nC. z\nD. w\nAnswer:", "options") > 0
    assert value("Q?\nA. x\nB. y\nAnswer:", "answer_cue") == 1.0


def test_long_text_is_clipped_head_and_tail() -> None:
    text = "h" * MAX_CHARS + "middle" + "t" * MAX_CHARS
    clipped = clip_text(text)
    assert len(clipped) <= MAX_CHARS + 1 and clipped.startswith("h") and clipped.endswith("t")
    assert "middle" not in clipped


def user(text: str) -> Message:
    return Message(role="user", content=text)


def test_router_text_is_the_last_user_turn_with_recent_context() -> None:
    messages = [
        Message(role="system", content="You are a helpful assistant. " * 50),
        user("Write a function that merges overlapping intervals."),
        Message(role="assistant", content="def merge(xs): ..."),
        user("Now do it in Rust."),
    ]
    text = router_text(messages)
    assert text.endswith("\n\nNow do it in Rust.")
    assert "assistant: def merge(xs): ..." in text
    assert "user: Write a function" in text
    assert "helpful assistant" not in text  # system prompts are left out


def test_router_text_context_is_bounded_and_keeps_the_newest() -> None:
    messages = [user("old " * 1000), Message(role="assistant", content="recent " * 1000), user("and?")]
    text = router_text(messages)
    context = text[: -len("\n\nand?")]
    assert len(context) <= CONTEXT_CHARS
    assert "old" not in context and context.endswith("recent")


def test_router_text_bounds_a_huge_turn() -> None:
    text = router_text([user("a" * 100_000 + "QUESTION")])
    assert len(text) <= TURN_CHARS + 1 and text.endswith("QUESTION")


def test_router_text_edge_cases() -> None:
    assert router_text([]) == ""
    assert router_text([Message(role="system", content="only a system prompt")]) == ""
    parts = Message(role="user", content=[TextPart(text="see "), TextPart(text="this")])
    assert router_text([parts]) == "see this"
    assert router_text([user("q")], context_chars=0) == "q"
    tool = [user("look it up"), Message(role="tool", content="{...}", tool_call_id="1"), user("thanks, and?")]
    assert "{...}" not in router_text(tool)
