"""The training data rules: licences, a dev split that never leaks, targets in range.

These read ``../shared/data`` beside the repository and skip without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.difficulty import data as D

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
NON_PERMISSIVE = {"route_alpaca_eval", "prompts_wizardlm_testset", "prompts_mbppplus", "mod_ethos"}


def test_only_permissive_sets_are_trainable() -> None:
    assert not set(D.TRAINABLE) & NON_PERMISSIVE
    for name in D.TRAINABLE:
        assert "NC" not in D.SETS[name].licence and "GPL" not in D.SETS[name].licence
    assert D.SETS["route_alpaca_eval"].role == "eval_only"


def test_dev_split_is_deterministic_and_shares_stems() -> None:
    q = "Which of these is a prime number?"
    assert D.is_dev(q) == D.is_dev(q)
    # an MMLU question and its MMLU-Pro re-ask (more options) land on the same side
    assert D.split_key(q + "\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:") == D.split_key(q + "\nOptions:\nA. 4\nB. 7")
    share = sum(D.is_dev(f"prompt number {i}") for i in range(20_000)) / 20_000
    assert share == pytest.approx(D.DEV_SHARE, abs=0.01)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (DATA / "route_routellm_mmlu").is_dir():
        pytest.skip(f"../shared/data not found: {DATA} (the routing sets live beside the repository)")
    return DATA


def test_training_rows_never_meet_the_dev_split(data_dir: Path) -> None:
    train_stems = {D.split_key(e.text) for n in D.TRAINABLE for e in D.split(D.load_set(data_dir, n))[0]}
    for name in D.EVALUATED:
        for e in D.evaluation_rows(data_dir, name):
            if D.SETS[name].role != "eval_only":
                assert D.split_key(e.text) not in train_stems, (name, e.text[:80])


def test_every_set_reads_with_targets_in_range(data_dir: Path) -> None:
    for name, spec in D.SETS.items():
        rows = D.load_set(data_dir, name)
        assert rows, name
        targets = [e.target for e in rows if e.target is not None]
        assert all(0.0 <= t <= 1.0 for t in targets), name
        if spec.quality is not None:
            evaluated = D.evaluation_rows(data_dir, name)
            mean_cheap = sum(e.cheap_quality or 0 for e in evaluated) / len(evaluated)
            mean_strong = sum(e.strong_quality or 0 for e in evaluated) / len(evaluated)
            assert mean_strong > mean_cheap, f"{name}: the strong tier must be better for APGR to mean anything"
