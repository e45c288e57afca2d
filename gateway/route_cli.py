"""``switchyard route explain`` and ``switchyard route calibrate``: the difficulty router for ops."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from backends.types import Message
from gateway.runtime import compile_routes
from policies.loader import PolicyError, load_policy
from router.difficulty import (
    ClassifierError,
    DifficultyClassifier,
    calibrate,
    router_text,
)
from router.tiering import DifficultyRoute


def _routes(policy_path: str, classifier_path: str | None, only: str | None) -> dict[str, DifficultyRoute]:
    policy = load_policy(policy_path)
    scorer = DifficultyClassifier.load(classifier_path)
    routes = compile_routes(policy, scorer)
    if only is not None:
        if only not in routes:
            raise PolicyError([("routes", f"no route named {only!r} (have: {', '.join(routes) or 'none'})")])
        return {only: routes[only]}
    if not routes:
        raise PolicyError([("routes", "the policy declares no difficulty route")])
    return routes


def explain(policy_path: str, prompt: str, *, route: str | None = None,
            classifier_path: str | None = None) -> int:
    """Print score, tier, model and why for one prompt, for each difficulty route."""
    try:
        routes = _routes(policy_path, classifier_path, route)
    except (PolicyError, ClassifierError) as exc:
        print(exc.message, file=sys.stderr)
        return 1
    for name, compiled in routes.items():
        decision = compiled.decide([Message(role="user", content=prompt)], {})
        relation = ">=" if decision.tier == "strong" else "<"
        print(f"route {name}: score {decision.score:.4f} {relation} threshold {decision.threshold:.4f} "
              f"-> {decision.tier} tier -> model {decision.model}")
        print(f"  classifier {decision.classifier_version}; the score is how much the strong model is "
              "needed for the last user turn (0.5: no gain expected; docs/router-model.md)")
    return 0


def _sample_scores(scorer: DifficultyClassifier, sample: Path) -> list[float]:
    """Scores of a JSONL sample: rows with ``messages`` (chat), ``prompt`` or ``text``."""
    scores = []
    for line in sample.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row: dict[str, Any] = json.loads(line)
        if "messages" in row:
            messages = [Message(role=m["role"], content=m.get("content") or "") for m in row["messages"]]
        else:
            messages = [Message(role="user", content=str(row.get("prompt", row.get("text", ""))))]
        scores.append(scorer.score(router_text(messages)))
    return scores


def calibrate_share(policy_path: str, strong_share: float, *, sample: str | None = None,
                    route: str | None = None, classifier_path: str | None = None) -> int:
    """Print the threshold sending ``strong_share`` of a sample to the strong tier."""
    try:
        routes = _routes(policy_path, classifier_path, route)
        scorer = DifficultyClassifier.load(classifier_path)
    except (PolicyError, ClassifierError) as exc:
        print(exc.message, file=sys.stderr)
        return 1
    if sample is not None:
        scores, source = _sample_scores(scorer, Path(sample)), f"{sample}"
    else:
        # the training dev split, summarised in the model file as 101 score quantiles
        scores, source = list(scorer.summary.get("dev_score_quantiles") or []), "the model's dev split"
    if not scores:
        print(f"no scores to calibrate on ({source} is empty)", file=sys.stderr)
        return 1
    result = calibrate(scores, strong_share)
    print(f"sample: {source} ({len(scores)} scores), classifier {scorer.version}")
    print(f"threshold {result.threshold:.4f} sends {result.strong_share:.1%} to the strong tier")
    print(f"expected quality retained: {result.expected_gap_recovered:.1%} of the cheap-to-strong gap "
          f"recovered; {result.expected_missed_share:.1%} of calls expected to need the strong model "
          "but go cheap")
    for name in routes:
        print(f"policy: routes.{name}.threshold: {result.threshold:.4f}   (or strong_share: {strong_share})")
    return 0
