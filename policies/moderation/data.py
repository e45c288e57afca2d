"""The labelled moderation sets of ``shared/data``: targets per category, licences, dev split.

Shared by the training script and ``bench/moderation``, so both read one definition of what a
row means. Training time and benchmarks only: the gateway never reads data.

- **Targets** are per category (``CATEGORIES``): 1, 0, or unknown (``nan``, not trained on for
  that category). Only ``mod_openai_moderation`` labels every category; the hate sets label
  hate (and, for HateCheck's threats, violence); benign sets are 0 everywhere. A category a set
  says nothing about is unknown, never a guessed 0.
- **Dev split**: 20 % of every set by SHA-256 of the whitespace-normalised, lower-cased text,
  so one text is on the same side in every set. Nothing in it is trained on. XSTest's model
  answers are split 50/50 by prompt: they are the only answer-style benign text (what output
  moderation reads), so half trains and half measures false positives on unseen prompts.
- **Licences**: only ``TRAIN`` sets (MIT, Apache-2.0, CC BY, CDLA-Permissive) are trained on.
  ``mod_ethos`` (GPL-3.0) and the CC BY-NC routing sets are never read. XSTest's prompts (CC
  BY) are kept whole for evaluation: its safe prompts are the false-positive test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from policies.moderation.categories import CATEGORIES

DEV_SHARE = 0.2
NAN = float("nan")

Row = dict[str, Any]
Role = Literal["train", "eval"]
Targets = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Example:
    """One text with its per-category targets (``nan`` = unknown), in ``CATEGORIES`` order."""

    text: str
    dataset: str
    targets: Targets
    group: str = ""
    """A subset name for the benchmark tables (e.g. XSTest's safe prompts)."""
    key: str = ""
    """What the dev split hashes (default: the text)."""


@dataclass(frozen=True, slots=True)
class ModerationSet:
    """How to read one set of ``shared/data``."""

    name: str
    role: Role
    licence: str
    targets: Callable[[Row], Targets | None]
    group: Callable[[Row], str] = lambda row: ""
    key: Callable[[Row], str] | None = None
    """What the dev split hashes; default the text. XSTest completions: the prompt, so all five
    models' answers to one prompt sit on the same side."""
    dev_share: float = DEV_SHARE


def _targets(**known: float) -> Targets:
    return tuple(float(known.get(c.replace("-", "_").replace("/", "_"), NAN)) for c in CATEGORIES)


def _any(*values: int | None) -> float:
    known = [v for v in values if v is not None]
    return float(max(known)) if known else NAN


def _openai(row: Row) -> Targets:
    lab = row["labels"]
    return _targets(hate=_any(lab["hate"], lab["hate/threatening"]), harassment=_any(lab["harassment"]),
                    violence=_any(lab["violence"], lab["violence/graphic"]), self_harm=_any(lab["self-harm"]),
                    sexual=_any(lab["sexual"]), sexual_minors=_any(lab["sexual/minors"]))


def _davidson(row: Row) -> Targets:
    # Tweets: "neither" is benign; "offensive_language" is profanity and abuse the annotators
    # did not call hate. It is not taken as harassment: measured, that taught "tweet-like" and
    # flagged 9 % of XSTest's safe prompts, and OpenAI dev harassment AUPRC fell (0.34 -> 0.28).
    category = row["category"]
    if category == "neither":
        return _targets(hate=0, harassment=0, violence=0, self_harm=0, sexual=0, sexual_minors=0)
    return _targets(hate=float(category == "hate_speech"), self_harm=0, sexual_minors=0)


def _hatecheck(row: Row) -> Targets:
    threat = str(row["category"]).startswith("threat_")
    return _targets(hate=float(row["label"]), violence=float(threat), self_harm=0, sexual=0, sexual_minors=0)


def _toxigen(row: Row) -> Targets:
    if row["label"]:
        return _targets(hate=1, self_harm=0, sexual_minors=0)
    return _targets(hate=0, harassment=0, violence=0, self_harm=0, sexual=0, sexual_minors=0)


def _benign(row: Row) -> Targets:
    return _targets(hate=0, harassment=0, violence=0, self_harm=0, sexual=0, sexual_minors=0)


def _xstest(row: Row) -> Targets | None:
    # Unsafe contrast prompts are unsafe for many reasons (privacy, drugs, fraud) that are not
    # our categories: only the safe prompts carry a usable label (0 everywhere).
    return None if row["label"] else _benign(row)


def _xstest_completion(row: Row) -> Targets | None:
    # answers to safe prompts, and refusals of unsafe ones, are benign; a compliant or partial
    # answer to an unsafe prompt is harmful for reasons the set does not map to our categories
    if not row["prompt_unsafe"] or row["response_type"] == "2_full_refusal":
        return _benign(row)
    return None


BENIGN_SETS = ("route_routellm_mmlu", "route_mmlu_pro", "route_routellm_gsm8k", "route_arena_bench_v1",
               "route_routellm_mtbench", "prompts_math", "prompts_gsm8k", "prompts_humaneval",
               "prompts_arena_hard", "prompts_fastchat_bench", "prompts_selfinstruct_seed")
"""Routing prompts (Apache-2.0 / MIT): everyday and technical requests, none toxic. The CC
BY-NC routing sets (route_alpaca_eval, prompts_wizardlm_testset, prompts_mbppplus) are not here."""

SETS: dict[str, ModerationSet] = {s.name: s for s in (
    ModerationSet("mod_openai_moderation", "train", "MIT", _openai),
    ModerationSet("mod_davidson", "train", "MIT", _davidson),
    ModerationSet("mod_hatecheck", "train", "CC BY 4.0", _hatecheck, lambda row: str(row["category"])),
    ModerationSet("mod_toxigen_seed", "train", "MIT + CDLA-Permissive-2.0", _toxigen),
    *(ModerationSet(name, "train", "Apache-2.0 / MIT", _benign) for name in BENIGN_SETS),
    ModerationSet("mod_xstest_prompts", "eval", "CC BY 4.0", _xstest, lambda row: str(row["category"])),
    ModerationSet("mod_xstest_completions", "train", "CC BY 4.0", _xstest_completion,
                  lambda row: str(row["category"]), key=lambda row: str(row["xstest_prompt_id"]), dev_share=0.5),
)}
"""Every set the moderation model reads. Not listed, so never read: mod_ethos (GPL-3.0), the
CC BY-NC routing sets, and mod_safetext (physical-harm advice: not one of our categories)."""

TRAIN = tuple(name for name, s in SETS.items() if s.role == "train")
LABELLED = ("mod_openai_moderation", "mod_davidson", "mod_hatecheck", "mod_toxigen_seed")
"""Sets with toxic rows, for the per-category precision / recall tables."""
TUNE_SETS = ("mod_openai_moderation",)
"""Labelled dev rows the thresholds are tuned for (F1): OpenAI's LLM-style texts, the traffic
the gateway sees. The hate sets (tweets, templates) would pull the hate threshold to their own
score range; XSTest is kept out to stay an honest false-positive test."""


def split_key(text: str) -> str:
    """What the dev split hashes: the lower-cased, whitespace-normalised text."""
    return " ".join(text.lower().split())


def is_dev(text: str, share: float = DEV_SHARE) -> bool:
    """Whether a text is in the dev split (deterministic, the same in every set)."""
    digest = hashlib.sha256(b"switchyard-moderation-dev:" + split_key(text).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def set_path(data_dir: Path, name: str) -> Path:
    """The file of one set (the ~80 % of each set that ships in ``shared/data``)."""
    return data_dir / name / "train.jsonl.gz"


def read_rows(data_dir: Path, name: str) -> Iterator[Row]:
    """The rows of one set."""
    path = set_path(data_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is --data the shared/data folder?")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def file_sha256(path: Path) -> str:
    """SHA-256 of a data file, recorded in the model so a retrain can be checked against it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_set(data_dir: Path, name: str) -> list[Example]:
    """One set's rows as examples; rows with no usable label are dropped."""
    spec = SETS[name]
    out = []
    for row in read_rows(data_dir, name):
        targets = spec.targets(row)
        if targets is not None and str(row.get("text", "")).strip():
            out.append(Example(row["text"], name, targets, spec.group(row), spec.key(row) if spec.key else ""))
    return out


def split(examples: list[Example], share: float = DEV_SHARE) -> tuple[list[Example], list[Example]]:
    """(train, dev) by ``is_dev`` of each example's key (its text unless the set says otherwise)."""
    dev = [is_dev(e.key or e.text, share) for e in examples]
    return [e for e, d in zip(examples, dev, strict=True) if not d], [e for e, d in zip(examples, dev, strict=True) if d]


def split_set(examples: list[Example], name: str) -> tuple[list[Example], list[Example]]:
    """(train, dev) of one set: everything is dev for an evaluation-only set."""
    spec = SETS[name]
    return ([], examples) if spec.role == "eval" else split(examples, spec.dev_share)


def target_matrix(examples: list[Example]) -> npt.NDArray[np.float64]:
    """``[len(examples), len(CATEGORIES)]`` targets, ``nan`` where unknown."""
    return np.array([e.targets for e in examples], dtype=np.float64).reshape(len(examples), len(CATEGORIES))
