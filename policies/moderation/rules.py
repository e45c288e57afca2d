"""One side's checks (input or output), compiled: blocked terms, PII actions, category thresholds.

``Rules.check`` runs every check on a batch of windows with one classifier call and answers,
per window, the text to release (redacted), the findings and the block, if any. The stream
moderator and the whole-text checks both go through it, so a streamed answer and the same
answer checked at once get the same verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from policies.moderation.categories import CATEGORIES, Category, PiiType
from policies.moderation.config import OVERLAP_CHARS, CheckSet, PiiAction
from policies.moderation.holdback import HoldBack
from policies.moderation.pii import PiiSpan, find_pii
from policies.moderation.verdict import Finding, redaction

__all__ = ["Outcome", "Rules", "Scorer", "Window", "term_pattern"]


class Scorer(Protocol):
    """What the rules need of a classifier (``ModerationClassifier`` is one)."""

    @property
    def thresholds(self) -> Mapping[str, float]: ...

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class Window:
    """A piece of text to release and what the checks read around it.

    ``text[start:end]`` is the piece; ``text[:start]`` is already-released context and
    ``text[end:]`` look-ahead still held back. ``offset`` is where ``text`` starts in the whole
    stream; ``spans`` are the PII spans of ``text`` (the stream needs them first, to cut).
    """

    text: str
    start: int
    end: int
    offset: int
    spans: tuple[PiiSpan, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one window: its releasable text, findings, and the block if any."""

    text: str
    findings: tuple[Finding, ...]
    blocked: Finding | None
    borderline: bool = False
    """A blocking category scored at or above ``release_below`` times its threshold, and none
    reached it: what a guard model is asked about."""
    release_ahead: int | None = 0
    """Characters past this window's text its score lets an ``incremental`` stream release
    (``Rules.release_ahead``); None: borderline. 0 when the classifier did not run."""


def term_pattern(terms: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for all blocked terms: whole words, any whitespace between."""
    if not terms:
        return None
    alternatives = (r"\s+".join(re.escape(word) for word in term.split()) for term in terms)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


class Rules:
    """The compiled checks of one side.

    Args:
        checks: the ``InputChecks`` or ``OutputChecks`` of the policy.
        scorer: the classifier; needed when ``checks`` names any category.
        release_below: an incremental stream's bar for the running score (``OutputChecks``).
        hold_limit: most characters an incremental stream holds for a possible match.
        release_ahead: characters an incremental stream may release past what a running score
            with a clear margin read (``release_ahead``); 0 scores before every release.
        running: scores an incremental stream's running window (default: ``scorer``); a
            cheaper estimate on the same threshold scale (the cascade's n-gram half).
    """

    def __init__(self, checks: CheckSet, scorer: Scorer | None, *, release_below: float = 0.5,
                 hold_limit: int = 160, release_ahead: int = OVERLAP_CHARS, running: Scorer | None = None) -> None:
        if checks.categories and scorer is None:
            raise ValueError("the moderation policy checks categories but no classifier was given")
        self._scorer = scorer if checks.categories else None
        self._running = running or self._scorer
        defaults = scorer.thresholds if scorer is not None else {}
        self._categories = tuple(
            (CATEGORIES.index(c), c, rule.threshold if rule.threshold is not None else defaults[c], rule.action)
            for c, rule in checks.categories.items())
        self._pii: dict[PiiType, PiiAction] = {t: rule.action for t, rule in checks.pii.items()}
        self._terms = term_pattern(checks.blocked_terms)
        self._release_below = release_below
        self._release_ahead = release_ahead
        self.flagged_pii = frozenset(t for t, action in self._pii.items() if action == "flag")
        """PII types only recorded: an incremental stream does not hold text for them."""
        self.hold = HoldBack(self._pii.keys() - self.flagged_pii, checks.blocked_terms, hold_limit)
        """What an incremental stream must hold back (``holdback.py``)."""

    @property
    def thresholds(self) -> dict[Category, float]:
        """The threshold in force per checked category."""
        return {c: t for _, c, t, _ in self._categories}

    def pii(self, text: str) -> list[PiiSpan]:
        """The PII spans of the types these rules look for."""
        return find_pii(text, self._pii.keys()) if self._pii else []

    def term_spans(self, text: str) -> list[tuple[int, int]]:
        """Where blocked terms occur in ``text``."""
        return [m.span() for m in self._terms.finditer(text)] if self._terms is not None else []

    @property
    def classifies(self) -> bool:
        """Whether these rules run the classifier at all."""
        return self._scorer is not None

    def check(self, windows: Sequence[Window], *, classify: bool = True, match: bool = True) -> list[Outcome]:
        """Every check on every window; the classifier runs once for the whole batch.

        ``classify=False`` skips the classifier, ``match=False`` the terms and PII (then the
        window's text is released as it is): an incremental stream runs them apart.
        """
        scores = None
        if classify and self._scorer is not None and windows:
            scores = self._scorer.scores([w.text for w in windows])
        return [self._check_one(w, None if scores is None else scores[i], match) for i, w in enumerate(windows)]

    def release_ahead(self, text: str) -> int | None:
        """How many characters past ``text`` its running score lets a stream release: None when
        it is borderline (at or above ``release_below`` times a blocking threshold), the
        ``release_ahead`` given to these rules (at most a quarter of ``text``'s length) when it
        is under half of that in every blocking category, else 0 (only what the score read)."""
        if self._scorer is None or self._running is None:
            return self._release_ahead
        return self._ahead(self._running.scores([text])[0], len(text))

    def _ahead(self, scores: npt.NDArray[np.float32], read: int) -> int | None:
        if self._near(scores):
            return None
        # a bag-average score moves little when the text grows by a small share of what it read,
        # not when a short text doubles: a quarter of the text read, at most
        return min(self._release_ahead, read // 4) if not self._near(scores, 0.5) else 0

    def _check_one(self, w: Window, scores: npt.NDArray[np.float32] | None, match: bool = True) -> Outcome:
        if not match:
            return self._categories_only(w, scores)
        if scores is None and self._terms is None and not w.spans:
            return Outcome(w.text[w.start:w.end], (), None)  # nothing to find: most stream releases
        findings: list[Finding] = []
        if self._terms is not None:
            # a term anywhere after the released context blocks now, look-ahead included
            findings += [Finding("term", "blocked_term", "block", 1.0, w.offset + m.start(), w.offset + m.end())
                         for m in self._terms.finditer(w.text) if m.end() > w.start]
        released, redactions = w.text[w.start:w.end], []
        for span in w.spans:
            if span.end <= w.start or span.start >= w.end:
                continue
            start, end = max(span.start, w.start), min(span.end, w.end)
            action = self._pii[span.type]
            findings.append(Finding("pii", span.type, action, 1.0, w.offset + start, w.offset + end))
            if action == "redact":
                redactions.append((start - w.start, end - w.start, span.type))
        for start, end, kind in reversed(redactions):
            released = released[:start] + redaction(kind) + released[end:]
        findings += self._categories_only(w, scores).findings
        blocked = next((f for f in findings if f.action == "block"), None)
        return Outcome(released, tuple(findings), blocked, blocked is None and self._near(scores))

    def _near(self, scores: npt.NDArray[np.float32] | None, share: float = 1.0) -> bool:
        bar = share * self._release_below
        return scores is not None and any(scores[i] >= bar * threshold
                                          for i, _, threshold, action in self._categories if action == "block")

    def _categories_only(self, w: Window, scores: npt.NDArray[np.float32] | None) -> Outcome:
        if scores is None:
            return Outcome(w.text[w.start:w.end], (), None)
        findings = tuple(Finding("category", name, action, float(scores[i]))
                         for i, name, threshold, action in self._categories if scores[i] >= threshold)
        blocked = next((f for f in findings if f.action == "block"), None)
        return Outcome(w.text[w.start:w.end], findings, blocked, blocked is None and self._near(scores),
                       self._ahead(scores, len(w.text)))
