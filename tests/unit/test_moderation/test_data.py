"""The moderation data definitions: licences, per-category targets, a stable dev split.

No shared data needed except the last test, which skips without it."""

from __future__ import annotations

import math
from pathlib import Path

from policies.moderation import CATEGORIES
from policies.moderation import data as D
from policies.moderation.evaluation import average_precision, metrics_at, tune_threshold


def test_only_permissive_sets_are_trained_on() -> None:
    assert "mod_ethos" not in D.SETS
    assert not set(D.SETS) & {"route_alpaca_eval", "prompts_wizardlm_testset", "prompts_mbppplus", "mod_safetext"}
    for name in D.TRAIN:
        licence = D.SETS[name].licence
        assert "GPL" not in licence and "NC" not in licence, name
    assert "mod_xstest_prompts" not in D.TRAIN


def test_targets_are_unknown_where_a_set_says_nothing() -> None:
    openai = D.SETS["mod_openai_moderation"].targets(
        {"labels": {"sexual": 0, "hate": None, "violence": 0, "harassment": 1, "self-harm": None,
                    "sexual/minors": 0, "hate/threatening": 1, "violence/graphic": None}})
    assert openai is not None
    by_name = dict(zip(CATEGORIES, openai, strict=True))
    assert by_name["hate"] == 1 and by_name["harassment"] == 1 and by_name["violence"] == 0
    assert math.isnan(by_name["self-harm"])
    offensive = D.SETS["mod_davidson"].targets({"category": "offensive_language"})
    assert offensive is not None
    assert dict(zip(CATEGORIES, offensive, strict=True))["hate"] == 0
    assert math.isnan(dict(zip(CATEGORIES, offensive, strict=True))["harassment"])
    threat = D.SETS["mod_hatecheck"].targets({"label": 1, "category": "threat_dir_h"})
    assert threat is not None and threat[CATEGORIES.index("violence")] == 1
    assert D.SETS["mod_xstest_prompts"].targets({"label": 1}) is None
    assert D.SETS["mod_xstest_completions"].targets({"prompt_unsafe": 1, "response_type": "1_full_compliance"}) is None


def test_dev_split_is_stable_and_about_a_fifth() -> None:
    texts = [f"prompt number {i}" for i in range(4000)]
    dev = [D.is_dev(t) for t in texts]
    assert 0.17 < sum(dev) / len(dev) < 0.23
    assert D.is_dev("Hello   World") == D.is_dev("hello world")


def test_metrics() -> None:
    import numpy as np

    labels = np.array([1.0, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    assert average_precision(labels, scores) == (1 + 2 / 3) / 2
    m = metrics_at(labels, scores, 0.75)
    assert (m.precision, m.recall) == (0.5, 0.5)
    benign = np.array([0.1, 0.2, 0.95])
    # 0.7 would flag nothing extra among labelled rows but a third of benign rows: not allowed
    assert tune_threshold(labels, scores, benign, max_fpr=0.0) == 0.99
    assert tune_threshold(labels, scores, benign, max_fpr=0.34) == 0.7
    # no allowed threshold finds a positive: the most sensitive allowed one, not the tie's 0.99
    missed = np.array([0.0, 0.8, 0.0, 0.6, 0.55])
    assert tune_threshold(labels, missed, np.array([0.1, 0.2, 0.3]), max_fpr=0.0) == 0.5


def test_every_set_loads(data_dir: Path) -> None:
    for name in D.SETS:
        rows = D.load_set(data_dir, name)
        train, dev = D.split_set(rows, name)
        assert rows and dev, name
        assert not {e.text for e in train} & {e.text for e in dev} or name == "mod_xstest_completions"
