"""A guard model as a second opinion: its policy section, its answers, its categories mapped to ours.

Two formats (``backends/guard.py`` speaks them, ``backends/sim/guard.py`` simulates them):

- ``llama_guard``: a Llama Guard 3-style chat classifier (served by SGLang's
  ``/v1/chat/completions``; the model's chat template builds its prompt, the safety policy with
  its fourteen categories S1-S14 and the conversation). It answers ``safe``, or ``unsafe`` and,
  on a second line, the violated categories: ``unsafe\\nS1,S10``.
- ``openai_moderation``: an OpenAI-compatible ``POST /v1/moderations`` (``{"model", "input"}``
  in, ``results[0].categories`` and ``category_scores`` out).

Only text the local classifier finds **borderline** (a blocking category's score at or above
``release_below`` times its threshold, under the threshold) is sent: the guard decides those,
the local model everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

from pydantic import Field

from backends.config import StrictModel
from policies.moderation.categories import Category

__all__ = ["LLAMA_GUARD_CATEGORIES", "OPENAI_CATEGORIES", "GuardConfig", "categories_of"]

GuardKind = Literal["llama_guard", "openai_moderation"]

LLAMA_GUARD_CATEGORIES: dict[str, Category | None] = {
    "S1": "violence",        # Violent Crimes
    "S2": None,              # Non-Violent Crimes
    "S3": "sexual",          # Sex-Related Crimes
    "S4": "sexual/minors",   # Child Sexual Exploitation
    "S5": None,              # Defamation
    "S6": None,              # Specialized Advice
    "S7": None,              # Privacy
    "S8": None,              # Intellectual Property
    "S9": "violence",        # Indiscriminate Weapons
    "S10": "hate",           # Hate
    "S11": "self-harm",      # Suicide & Self-Harm
    "S12": "sexual",         # Sexual Content
    "S13": None,             # Elections
    "S14": None,             # Code Interpreter Abuse
}
"""Llama Guard 3's hazard categories and ours; None: no category of ours (recorded as a flag
named ``guard:S<n>``, never blocking: the policy has no rule for it)."""

OPENAI_CATEGORIES: dict[str, Category | None] = {
    "hate": "hate", "hate/threatening": "hate",
    "harassment": "harassment", "harassment/threatening": "harassment",
    "self-harm": "self-harm", "self-harm/intent": "self-harm", "self-harm/instructions": "self-harm",
    "sexual": "sexual", "sexual/minors": "sexual/minors",
    "violence": "violence", "violence/graphic": "violence",
    "illicit": None, "illicit/violent": None,
}
"""OpenAI moderation categories and ours (the classifier is named after them)."""


class GuardConfig(StrictModel):
    """A guard model consulted for borderline text (``moderation.guard``)."""

    kind: GuardKind
    """``llama_guard`` (a chat classifier answering ``safe`` / ``unsafe\\nS1,S10``) or
    ``openai_moderation`` (an OpenAI-compatible ``/v1/moderations``)."""
    url: str
    """Base URL of the endpoint: an SGLang worker serving the guard model, or the moderation
    API (``https://api.openai.com``); ``/v1/...`` is appended."""
    model: str
    """The guard's model name (``meta-llama/Llama-Guard-3-1B``, ``omni-moderation-latest``)."""
    api_key_env: str | None = None
    """Environment variable holding the endpoint's key (sent as ``Authorization: Bearer``)."""
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 2.0
    """Longest wait for the guard's answer; past it, ``on_error`` decides."""
    on_error: Literal["open", "closed"] = "open"
    """What a timeout or a failed call means: ``open`` lets the text through on the local
    verdict (recorded as ``guard_unavailable``); ``closed`` blocks it."""


def categories_of(kind: GuardKind, labels: Iterable[str]) -> tuple[list[Category], list[str]]:
    """The guard's labels as our categories, and the labels with no category of ours."""
    table: Mapping[str, Category | None] = LLAMA_GUARD_CATEGORIES if kind == "llama_guard" else OPENAI_CATEGORIES
    ours: list[Category] = []
    other: list[str] = []
    for label in labels:
        category = table.get(label)
        if category is None:
            other.append(label)
        elif category not in ours:
            ours.append(category)
    return ours, other
