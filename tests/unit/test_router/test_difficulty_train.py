"""Retraining on your own traffic: the JSONL format, a model that loads, and the same bytes twice.

Needs the ``train`` extra (scikit-learn, scipy, onnx); skips without it. No shared/data needed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from router.difficulty import DifficultyClassifier
from router.difficulty import data as D

REPO = Path(__file__).resolve().parents[3]


def write_traffic(path: Path, n: int = 120) -> None:
    rng = random.Random(7)
    easy = ["what time is it in {}?", "say hello in {}", "translate 'thanks' to {}"]
    hard = ["prove that the sum over {} of 1/k^2 converges, with a full epsilon-delta argument",
            "design a lock-free queue for {} and argue its linearizability step by step"]
    places = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Accra"]
    with path.open("w") as f:
        for i in range(n):
            is_hard = i % 2 == 0
            text = rng.choice(hard if is_hard else easy).format(rng.choice(places)) + f" (#{i})"
            row = {"text": text, "label": 0 if is_hard else 1,
                   "cheap_quality": 0.2 if is_hard else 0.9, "strong_quality": 0.9}
            f.write(json.dumps(row) + "\n")


def test_own_traffic_format(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "target": 0.7, "cheap_quality": 1}\n')
    rows = D.load_own(path)
    assert [(r.text, r.target, r.cheap_quality) for r in rows] == [("a", 0.5, None), ("b", 0.7, 1.0)]
    path.write_text('{"text": "no label"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:1: each line needs text and target"):
        D.load_own(path)


def test_train_on_own_traffic_is_reproducible(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="train extra not installed")
    pytest.importorskip("onnx", reason="train extra not installed")
    from router.difficulty.train import main

    traffic = tmp_path / "traffic.jsonl"
    write_traffic(traffic)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["--own", str(traffic), "--out", str(a), "--seed", "3"]) == 0
    # the same bytes from another process with another hash seed: nothing depends on set order
    subprocess.run([sys.executable, "-m", "router.train", "--own", str(traffic), "--out", str(b), "--seed", "3"],
                   check=True, capture_output=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "99"})
    assert a.read_bytes() == b.read_bytes()
    model = DifficultyClassifier.load(a)
    assert model.summary["trained_on"] == {D.OWN: {"rows": model.summary["trained_on"][D.OWN]["rows"],
                                                   "licence": "own data"}}
    assert model.summary["seed"] == 3
    hard = model.score("prove that the sum over Lima of 1/k^2 converges, with a full epsilon-delta argument")
    assert hard > model.score("say hello in Oslo")
