"""The labelled routing sets in ``shared/data``: what each row means, the dev split, licences.

Shared by the training script and ``bench/routing_quality``, so both read one definition of
the target ("the strong model is needed"), of each set's per-model quality, and of the dev split.

- **Target**: how much the strong model is needed, in [0, 1]. On the ``route_*`` sets it is
  the strong tier's expected quality **gain** over the cheap tier, mapped from [-1, 1] to
  [0, 1] (0.5 = no difference): exactly what the cost-quality curve rewards. The sets' own
  label ("cheap suffices" unless the strong model is right and the cheap one wrong) ignores
  the prompts the cheap model gets right and the strong one wrong; training on the gain
  measured +0.03 APGR on MMLU and +0.07 on GSM8K (docs/router-model.md). The ``prompts_*``
  sets give weak, soft targets from their difficulty level or source.
- **Quality** (for the cost-quality curve): the cheap and the strong tier's correctness or
  judge score on each prompt, so routing can be scored the way routing research scores it.
- **Dev split**: 20% of every set, by a SHA-256 of the question stem (answer options cut off),
  so a prompt that sits in several sets (GSM8K in two, an MMLU question re-asked in MMLU-Pro)
  is on the same side in all of them. Nothing in the dev split is ever trained on.
- **Licences**: only ``TRAINABLE`` sets (Apache-2.0, MIT, CC BY) are trained on. The CC BY-NC
  sets are evaluation-only; the GPL one is not a routing set.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEV_SHARE = 0.2
OWN = "own_traffic"
"""The set name of rows passed with ``--own`` (your traffic) to the training script."""
_STEM_CUT = re.compile(r"\n\s*(?:Options:|\(?A[.)]\s)")

Row = dict[str, Any]
Role = Literal["train", "eval_only", "weak"]


@dataclass(frozen=True, slots=True)
class Example:
    """One prompt: its text, where it comes from, its target and (if known) per-tier quality."""

    text: str
    dataset: str
    target: float | None
    """How much the strong model is needed, on the gain scale (0.5: no difference, 1: the
    strong tier is better by a full gain, 0: the cheap tier is), or None."""
    cheap_quality: float | None = None
    strong_quality: float | None = None
    category: str = ""


@dataclass(frozen=True, slots=True)
class RoutingSet:
    """How to read one set of ``shared/data``."""

    name: str
    role: Role
    licence: str
    quality: Callable[[Row], tuple[float, float] | None] | None = None
    """(cheap, strong) quality of one row; sets with it get a cost-quality curve."""
    target: Callable[[Row], float | None] | None = None
    note: str = ""


def from_need(p_strong_needed: float) -> float:
    """A P(strong needed) on the gain scale: needed means a full gain, not needed no gain (the
    cheap tier being better is not something a label or a difficulty level tells)."""
    return 0.5 + p_strong_needed / 2.0


def _label_target(row: Row) -> float | None:
    return None if row.get("label") is None else from_need(1.0 - float(row["label"]))


def _gain_target(quality: Callable[[Row], tuple[float, float] | None],
                 full_gain: float) -> Callable[[Row], float | None]:
    """Target from the strong tier's quality gain: ``full_gain`` or more is 1, no gain 0.5,
    a loss of ``full_gain`` or more 0 (rows where the cheap tier does better pull down)."""
    def target(row: Row) -> float | None:
        tiers = quality(row)
        if tiers is None:
            return None
        gain = (tiers[1] - tiers[0]) / full_gain
        return (min(max(gain, -1.0), 1.0) + 1.0) / 2.0
    return target


def _correct(row: Row) -> tuple[float, float]:
    return float(row["cheap_correct"]), float(row["strong_correct"])


def _mtbench(row: Row) -> tuple[float, float]:
    return float(row["scores"]["cheap_turn1"]), float(row["scores"]["strong_turn1"])


def _arena(row: Row) -> tuple[float, float] | None:
    if row.get("cheap_mean") is None or row.get("strong_mean") is None:
        return None
    return float(row["cheap_mean"]), float(row["strong_mean"])


def _mmlu_pro(row: Row) -> tuple[float, float]:
    return float(row["cheap_acc"]), float(row["strong_acc"])


def _alpaca(row: Row) -> tuple[float, float]:
    # Win probabilities are against gpt4_1106_preview, which wins 0.5 against itself: it is the
    # strong tier the set's label compares with (cheap suffices iff cheap_win_prob >= 0.5).
    return float(row["cheap_win_prob"]), 0.5


MATH_LEVEL_TARGET = {1: 0.15, 2: 0.3, 3: 0.45, 4: 0.6, 5: 0.75}
"""P(strong needed) of a MATH problem by its level (1-5), a weak target."""


def _math_level(row: Row) -> float | None:
    level = row.get("difficulty")
    return from_need(MATH_LEVEL_TARGET[level]) if level in MATH_LEVEL_TARGET else None


def _gsm8k_steps(row: Row) -> float | None:
    steps = row.get("n_calc_steps")
    # P(strong needed | calculator steps), fitted on route_routellm_gsm8k's train rows:
    # 0.25 at 2 steps, 0.33 at 4, 0.45 at 6, 0.54 at 7.
    return None if steps is None else from_need(min(0.15 + 0.045 * int(steps), 0.6))


SETS: dict[str, RoutingSet] = {s.name: s for s in (
    # full gain: one right answer (0/1 correctness); a 0.5 accuracy margin over the tiers'
    # models (MMLU-Pro); 3 points of the judge's 1-10 scale (arena-bench)
    RoutingSet("route_routellm_mmlu", "train", "Apache-2.0 / MIT", _correct, _gain_target(_correct, 1.0)),
    RoutingSet("route_routellm_gsm8k", "train", "Apache-2.0 / MIT", _correct, _gain_target(_correct, 1.0)),
    RoutingSet("route_mmlu_pro", "train", "Apache-2.0", _mmlu_pro, _gain_target(_mmlu_pro, 0.5)),
    RoutingSet("route_arena_bench_v1", "train", "Apache-2.0", _arena, _gain_target(_arena, 3.0)),
    RoutingSet("route_routellm_mtbench", "eval_only", "Apache-2.0", _mtbench, _label_target,
               note="67 prompts: worth more as a whole evaluation set than as training rows"),
    RoutingSet("route_alpaca_eval", "eval_only", "CC BY-NC 4.0", _alpaca, _label_target,
               note="non-commercial: evaluation only, never trained on"),
    RoutingSet("prompts_math", "weak", "MIT", target=_math_level),
    RoutingSet("prompts_gsm8k", "weak", "MIT", target=_gsm8k_steps),
    RoutingSet("prompts_arena_hard", "weak", "Apache-2.0", target=lambda row: from_need(0.7)),
    RoutingSet("prompts_selfinstruct_seed", "weak", "Apache-2.0", target=lambda row: from_need(0.1)),
)}
"""Every set the router uses; the CC BY-NC and GPL sets not listed here are never read."""

TRAINABLE = tuple(name for name, s in SETS.items() if s.role != "eval_only")
EVALUATED = tuple(name for name, s in SETS.items() if s.quality is not None)


def split_key(text: str) -> str:
    """The question stem, lower-cased and whitespace-normalised: what the dev split hashes."""
    stem = _STEM_CUT.split(text, maxsplit=1)[0]
    return " ".join(stem.lower().split())


def is_dev(text: str, share: float = DEV_SHARE) -> bool:
    """Whether a prompt is in the dev split (deterministic, the same in every set)."""
    digest = hashlib.sha256(b"switchyard-router-dev:" + split_key(text).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def read_rows(data_dir: Path, name: str) -> Iterator[Row]:
    """The rows of one set's ``train.jsonl.gz`` (the ~80% of each set that ships)."""
    path = data_dir / name / "train.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is --data the shared/data folder?")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def load_set(data_dir: Path, name: str) -> list[Example]:
    """One set's rows as examples; rows with neither target nor quality are dropped."""
    spec = SETS[name]
    examples = []
    for row in read_rows(data_dir, name):
        target = spec.target(row) if spec.target else None
        quality = spec.quality(row) if spec.quality else None
        if target is None and quality is None:
            continue
        cheap, strong = quality if quality else (None, None)
        examples.append(Example(row["text"], name, target, cheap, strong, str(row.get("category", ""))))
    return examples


def load_own(path: Path) -> list[Example]:
    """Your own labelled traffic: gzip'd or plain JSONL, one prompt per line.

    Each line has ``text`` and either ``target`` (on the gain scale: 0.5 no difference, 1 the
    strong model is needed, 0 the cheap one is better) or ``label`` (1 = cheap suffices, the
    shared/data convention, read as 0.5; 0 read as 1); ``cheap_quality`` and ``strong_quality``
    (any scale, higher is better) are optional and give the set a cost-quality curve.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    examples = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "text" not in row or ("target" not in row and "label" not in row):
                raise ValueError(f"{path}:{n}: each line needs text and target (or label)")
            target = float(row["target"]) if "target" in row else from_need(1.0 - float(row["label"]))
            cheap, strong = row.get("cheap_quality"), row.get("strong_quality")
            examples.append(Example(row["text"], OWN, target, None if cheap is None else float(cheap),
                                    None if strong is None else float(strong)))
    return examples


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """(train, dev) by ``is_dev``."""
    train = [e for e in examples if not is_dev(e.text)]
    dev = [e for e in examples if is_dev(e.text)]
    return train, dev


def evaluation_rows(data_dir: Path, name: str) -> list[Example]:
    """What a set is evaluated on: its dev split, or all of it if it is never trained on."""
    examples = [e for e in load_set(data_dir, name) if e.cheap_quality is not None]
    return examples if SETS[name].role == "eval_only" else split(examples)[1]
