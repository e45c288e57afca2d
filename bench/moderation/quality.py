"""Quality: the classifier on the dev split and benign sets, the PII detectors on Presidio.

The classifier scores each text as the gateway does: the max over the text's stream windows
(``classifier_windows``, the default 160-character window) at the thresholds in the model.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policies.moderation import data as D
from policies.moderation import find_pii
from policies.moderation.categories import CATEGORIES
from policies.moderation.evaluation import dev_report
from policies.moderation.rules import Scorer
from policies.moderation.stream import classifier_windows

PRESIDIO = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card",
            "IBAN_CODE": "iban", "US_SSN": "us_ssn", "IP_ADDRESS": "ip_address"}
"""Presidio entity types with a detector here (the others: names, addresses, dates... are not PII
types of the policy)."""


def dev_sets(data_dir: Path) -> dict[str, list[D.Example]]:
    """What each set is evaluated on: its dev split, or the whole set if never trained on."""
    return {name: D.split_set(D.load_set(data_dir, name), name)[1] for name in D.SETS}


def window_scores(classifier: Scorer, texts: list[str], window_chars: int = 160,
                  batch: int = 256) -> np.ndarray:
    """Per-text max over its windows, scored in batches."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
        for w in classifier_windows(text, window_chars):
            pieces.append(w)
            owner.append(i)
    scores = np.vstack([classifier.scores(pieces[i:i + batch]) for i in range(0, len(pieces), batch)]) \
        if pieces else np.zeros((0, len(CATEGORIES)))
    out = np.zeros((len(texts), len(CATEGORIES)))
    np.maximum.at(out, np.array(owner, dtype=np.intp), scores.astype(np.float64))
    return out


def classifier_quality(classifier: Scorer, data_dir: Path) -> dict[str, Any]:
    """Per-category P/R/F1/AUPRC and benign false-positive rates (``evaluation.dev_report``)."""
    dev = dev_sets(data_dir)
    scores = {name: window_scores(classifier, [e.text for e in rows]) for name, rows in dev.items()}
    thresholds = classifier.thresholds
    report = dev_report(scores, dev, thresholds)
    report["xstest_safe_by_type"] = _by_group(scores["mod_xstest_prompts"], dev["mod_xstest_prompts"],
                                              thresholds)
    return report


def _by_group(scores: np.ndarray, rows: list[D.Example], thresholds: Mapping[str, float]) -> dict[str, Any]:
    t = np.array([thresholds[c] for c in CATEGORIES])
    hit = np.asarray((scores >= t).any(axis=1), dtype=bool).tolist()
    groups = sorted({e.group for e in rows})
    return {g: {"n": sum(e.group == g for e in rows),
                "flagged": int(sum(h for h, e in zip(hit, rows, strict=True) if e.group == g))} for g in groups}


def pii_quality(data_dir: Path) -> dict[str, Any]:
    """Recall and precision per type on the Presidio synthetic set (a detection counts if it
    overlaps a gold span of its type), and how often benign texts get any detection."""
    tp: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    found: Counter[str] = Counter()
    false: Counter[str] = Counter()
    with gzip.open(data_dir / "pii_presidio_synth" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            spans = [(PRESIDIO[s["entity_type"]], s["start"], s["end"]) for s in row["spans"]
                     if s["entity_type"] in PRESIDIO]
            detected = find_pii(row["text"])
            for kind, start, end in spans:
                gold[kind] += 1
                tp[kind] += any(d.type == kind and d.start < end and start < d.end for d in detected)
            for d in detected:
                found[d.type] += 1
                false[d.type] += not any(k == d.type and d.start < e and s < d.end for k, s, e in spans)
    per_type = {kind: {"gold": gold[kind], "detected": found[kind], "recall": round(tp[kind] / max(gold[kind], 1), 4),
                       "precision": round(1 - false[kind] / found[kind], 4) if found[kind] else None}
                for kind in PRESIDIO.values()}
    per_type["secret"] = {"gold": 0, "detected": found["secret"], "recall": None,
                          "precision": round(1 - false["secret"] / found["secret"], 4) if found["secret"] else None}
    benign = {}
    for pool, names in (("routing_prompts_dev", D.BENIGN_SETS), ("xstest_answers_dev", ("mod_xstest_completions",))):
        rows = [e for name in names for e in dev_sets_one(data_dir, name)]
        hits: Counter[str] = Counter(s.type for e in rows for s in find_pii(e.text))
        with_any = sum(bool(find_pii(e.text)) for e in rows)
        benign[pool] = {"n": len(rows), "texts_with_any": with_any, "by_type": dict(sorted(hits.items()))}
    return {"presidio": per_type, "benign_detections": benign}


def dev_sets_one(data_dir: Path, name: str) -> list[D.Example]:
    """The evaluation rows of one set."""
    return D.split_set(D.load_set(data_dir, name), name)[1]


def render_classifier(report: dict[str, Any], thresholds: Mapping[str, float]) -> str:
    """Markdown tables: per category on OpenAI dev, on the hate sets; benign false positives."""
    lines = ["| category | threshold | dev n / positives | precision | recall | F1 | AUPRC |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c, entry in report["categories"].items():
        m = entry["mod_openai_moderation"]
        lines.append(f"| {c} | {thresholds[c]:.2f} | {m['n']} / {m['positives']} | {m['precision']:.3f} | "
                     f"{m['recall']:.3f} | {m['f1']:.3f} | {m['auprc']:.3f} |")
    lines += ["", "| category | set (dev) | n / positives | precision | recall | F1 | AUPRC |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for c, entry in report["categories"].items():
        for name, m in entry.items():
            if name != "mod_openai_moderation":
                lines.append(f"| {c} | {name} | {m['n']} / {m['positives']} | {m['precision']:.3f} | "
                             f"{m['recall']:.3f} | {m['f1']:.3f} | {m['auprc']:.3f} |")
    lines += ["", "| benign set | n | flagged by any category | worst category |", "| --- | --- | --- | --- |"]
    for pool, fpr in report["false_positive_rates"].items():
        worst = max(fpr["by_category"].items(), key=lambda kv: kv[1])
        lines.append(f"| {pool} | {fpr['n']} | {fpr['any_category']:.2%} | {worst[0]} {worst[1]:.2%} |")
    return "\n".join(lines)


def render_pii(pii: dict[str, Any]) -> str:
    """Markdown table of PII recall/precision per type."""
    lines = ["| type | gold spans | detections | recall | precision |", "| --- | --- | --- | --- | --- |"]
    for kind, m in pii["presidio"].items():
        recall = "—" if m["recall"] is None else f"{m['recall']:.3f}"
        precision = "—" if m["precision"] is None else f"{m['precision']:.3f}"
        lines.append(f"| {kind} | {m['gold']} | {m['detected']} | {recall} | {precision} |")
    lines += ["", "| benign set | texts | with any PII detection | by type |", "| --- | --- | --- | --- |"]
    for pool, b in pii["benign_detections"].items():
        lines.append(f"| {pool} | {b['n']} | {b['texts_with_any']} | {b['by_type']} |")
    return "\n".join(lines)
