"""Fixtures of the moderation tests: a keyword scorer (so stream tests do not depend on the
model's weights) and the path of ``shared/data`` (tests that need it skip without it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from policies.moderation.categories import CATEGORIES, PII_TYPES, Category

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
REDACT_EMAIL = {t: {"action": "flag" if t == "ip_address" else "redact"} for t in PII_TYPES}
"""Output PII rules that redact e-mail addresses too (the default only flags them)."""


class KeywordScorer:
    """Scores 0.9 for a category when one of its keywords is in the text, else 0.05."""

    def __init__(self, keywords: Mapping[Category, Sequence[str]]) -> None:
        self.keywords = keywords
        self.thresholds: dict[str, float] = dict.fromkeys(CATEGORIES, 0.5)
        self.calls: list[int] = []

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(len(texts))
        out = np.full((len(texts), len(CATEGORIES)), 0.05, dtype=np.float32)
        for i, text in enumerate(texts):
            for k, category in enumerate(CATEGORIES):
                if any(word in text.lower() for word in self.keywords.get(category, ())):
                    out[i, k] = 0.9
        return out


@pytest.fixture
def scorer() -> KeywordScorer:
    return KeywordScorer({"violence": ["i will hurt you badly"], "harassment": ["you utter clown"]})


@pytest.fixture
def data_dir() -> Path:
    if not (DATA / "pii_presidio_synth" / "train.jsonl.gz").is_file():
        pytest.skip(f"needs the shared data sets at {DATA} (../shared/data next to the repo), which are absent")
    return DATA
