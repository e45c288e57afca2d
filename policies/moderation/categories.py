"""The names the moderation policy, engine, classifier and benchmarks share."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["CATEGORIES", "PII_TYPES", "Category", "ClassifierKind", "Direction", "PiiType"]

Category = Literal["hate", "harassment", "violence", "self-harm", "sexual", "sexual/minors"]
"""Classifier categories, named as in OpenAI's moderation API (its data trains them)."""

PiiType = Literal["email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "secret"]
"""PII and secret types the deterministic detectors find (``policies/moderation/pii.py``)."""

Direction = Literal["input", "output"]
"""``input``: the request's messages; ``output``: what the model sends back."""

ClassifierKind = Literal["ngrams", "cascade"]
"""Which classifier scores the categories (``moderation.classifier``): the n-gram model alone,
or the cascade of it and a sentence encoder (``policies/moderation/cascade.py``)."""

CATEGORIES: tuple[Category, ...] = get_args(Category)
"""The classifier's outputs, in the order of its score columns."""
PII_TYPES: tuple[PiiType, ...] = get_args(PiiType)
