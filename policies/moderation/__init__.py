"""Moderation of requests and answers: categories (an ONNX classifier), PII and secrets
(deterministic detectors), blocked terms; whole texts, streams and tool-call arguments.

Run time needs onnxruntime, numpy and tiktoken only. Build one ``ModerationClassifier`` per
process and one ``Moderator`` per policy; ``Moderator.stream()`` gives the ``StreamModerator``
of one streamed answer. Training (``python -m policies.moderation.train``) needs the ``train``
extra. See ``docs/moderation-model.md``.
"""

from __future__ import annotations

from policies.moderation.categories import (
    CATEGORIES,
    PII_TYPES,
    Category,
    Direction,
    PiiType,
)
from policies.moderation.classifier import (
    ModerationClassifier,
    ModerationModelError,
    default_model_path,
)
from policies.moderation.config import (
    CategoryRule,
    CheckSet,
    InputChecks,
    ModerationConfig,
    OutputChecks,
    PiiRule,
)
from policies.moderation.engine import Moderator
from policies.moderation.pii import PiiSpan, find_pii
from policies.moderation.stream import StreamModerator
from policies.moderation.verdict import (
    ContentPolicyViolation,
    Finding,
    Release,
    Verdict,
)

__all__ = [
    "CATEGORIES",
    "PII_TYPES",
    "Category",
    "CategoryRule",
    "CheckSet",
    "ContentPolicyViolation",
    "Direction",
    "Finding",
    "InputChecks",
    "ModerationClassifier",
    "ModerationConfig",
    "ModerationModelError",
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
