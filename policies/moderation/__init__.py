"""Moderation of requests and answers: categories (an ONNX classifier), PII and secrets
(deterministic detectors), blocked terms; whole texts, streams and tool-call arguments.

Run time needs onnxruntime, numpy and tiktoken only. Build one ``ModerationClassifier`` per
process (in a ``ModerationModels``, which adds the cascade of ``moderation.classifier: cascade``
on first use: the ``cascade`` extra) and one ``Moderator`` per policy; ``Moderator.stream()``
gives the ``StreamModerator`` of one streamed answer. Training (``python -m policies.moderation.train``) needs the ``train``
extra. See ``docs/moderation-model.md``.

Names load on first use (PEP 562): the policy document imports only this package's config
module, so ``switchyard policy check`` does not load what the request path needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from policies.moderation.categories import CATEGORIES, PII_TYPES, Category, ClassifierKind, Direction, PiiType
    from policies.moderation.classifier import ModerationClassifier, ModerationModelError, default_model_path
    from policies.moderation.config import CategoryRule, CheckSet, InputChecks, ModerationConfig, OutputChecks, PiiRule
    from policies.moderation.echo import Echo
    from policies.moderation.engine import Moderator
    from policies.moderation.pii import PiiSpan, find_pii
    from policies.moderation.scorers import ModerationModels
    from policies.moderation.stream import StreamModerator
    from policies.moderation.verdict import ContentPolicyViolation, Finding, Release, Verdict

__all__ = [
    "CATEGORIES",
    "PII_TYPES",
    "Category",
    "CategoryRule",
    "CheckSet",
    "ClassifierKind",
    "ContentPolicyViolation",
    "Direction",
    "Echo",
    "Finding",
    "InputChecks",
    "ModerationClassifier",
    "ModerationConfig",
    "ModerationModelError",
    "ModerationModels",
    "Moderator",
    "OutputChecks",
    "PiiRule",
    "PiiSpan",
    "PiiType",
    "Release",
    "StreamModerator",
    "Verdict",
    "default_model_path",
    "find_pii",
]

_HOME = {
    "CATEGORIES": "categories",
    "Category": "categories",
    "CategoryRule": "config",
    "CheckSet": "config",
    "ClassifierKind": "categories",
    "ContentPolicyViolation": "verdict",
    "Direction": "categories",
    "Echo": "echo",
    "Finding": "verdict",
    "InputChecks": "config",
    "ModerationClassifier": "classifier",
    "ModerationConfig": "config",
    "ModerationModelError": "classifier",
    "ModerationModels": "scorers",
    "Moderator": "engine",
    "OutputChecks": "config",
    "PII_TYPES": "categories",
    "PiiRule": "config",
    "PiiSpan": "pii",
    "PiiType": "categories",
    "Release": "verdict",
    "StreamModerator": "stream",
    "Verdict": "verdict",
    "default_model_path": "classifier",
    "find_pii": "pii",
}


__getattr__ = lazy_exports(__name__, _HOME)
