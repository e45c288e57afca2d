"""What a moderation check answers: findings, a verdict for a whole text, a release of a stream.

None of these values holds checked text except ``Verdict.text`` and ``Release.text`` (what may
be sent on), so a finding can go on a span event or into a log line as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from backends.errors import SwitchyardError

__all__ = ["Action", "ContentPolicyViolation", "Finding", "FindingKind", "Release", "Verdict", "redaction"]

Action = Literal["block", "flag", "redact"]
FindingKind = Literal["category", "pii", "term"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found.

    Attributes:
        kind: ``category`` (the classifier), ``pii`` (a detector) or ``term`` (a blocked term).
        name: the category (``hate``), PII type (``email``) or ``blocked_term``.
        action: what the policy does about it: ``block``, ``flag`` or ``redact``.
        score: the classifier's score for a category; 1.0 for PII and terms.
        start: where it starts in the checked text (for a stream: in everything the stream
            has received), or None for a category (which scores a window, not a span).
        end: where it ends, likewise.
    """

    kind: FindingKind
    name: str
    action: Action
    score: float = 1.0
    start: int | None = None
    end: int | None = None

    def attributes(self) -> dict[str, str | float]:
        """Span-event / log attributes: kind, name, action and score; never text."""
        return {"moderation.kind": self.kind, "moderation.name": self.name,
                "moderation.action": self.action, "moderation.score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking one whole text (a message, a response, tool arguments).

    Attributes:
        text: the text to pass on: the input with every ``redact`` span replaced by
            ``[REDACTED:<TYPE>]``. If the verdict is blocked, only the part before the blocking
            window (what a stream would have released), so nothing after it leaks.
        findings: everything found, in text order (each category at most once).
    """

    text: str
    findings: tuple[Finding, ...] = ()
    borderline: bool = False
    """Whether the classifier found some window close to a blocking threshold (and none over
    it): the text a guard model is asked about."""

    @property
    def blocked(self) -> Finding | None:
        """The finding that blocks, if any."""
        return next((f for f in self.findings if f.action == "block"), None)

    @property
    def redacted(self) -> bool:
        """Whether any span was redacted."""
        return any(f.action == "redact" for f in self.findings)


@dataclass(frozen=True, slots=True)
class Release:
    """What ``StreamModerator.feed``/``finish`` lets through now.

    Attributes:
        text: text safe to send now (possibly empty), redactions applied. The concatenation of
            every release's text is the stream's text with redactions, cut where it blocked.
        blocked: the finding that stopped the stream, or None. Once set, it stays set and no
            more text is released: send a final chunk with ``finish_reason: content_filter``.
        findings: what was found in the text released now (flags, redactions, the block).
    """

    text: str = ""
    blocked: Finding | None = None
    findings: tuple[Finding, ...] = ()


def redaction(pii_type: str) -> str:
    """The replacement of a redacted span: ``[REDACTED:EMAIL]``."""
    return f"[REDACTED:{pii_type.upper()}]"


class ContentPolicyViolation(SwitchyardError):
    """A request the moderation policy blocks (HTTP 400, code ``content_policy_violation``).

    The message names the category or PII type, never the matched text.
    """

    status_code, error_type, code = 400, "invalid_request_error", "content_policy_violation"

    @classmethod
    def of(cls, finding: Finding, *, param: str | None = "messages") -> ContentPolicyViolation:
        """The error for a blocking finding on a request."""
        what = {"category": f"category {finding.name!r}", "pii": f"PII of type {finding.name!r}",
                "term": "a blocked term"}[finding.kind]
        error = cls(f"The request was blocked by the moderation policy: {what}.", param=param)
        error.finding = finding
        return error

    finding: Finding | None = None
