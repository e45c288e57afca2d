"""Stream modes that release before a window is complete: ``incremental`` and ``async``.

``IncrementalStreamModerator`` (the default) runs two things over the same text:

- the **classifier windows** of ``buffered`` mode (``stream.next_cut``: the same cuts, the
  same texts scored, so the same category verdicts), each scored once it is complete;
- a **release point**: everything before the tail ``HoldBack`` says could still grow into a
  blocked term or a PII value is checked for terms and PII (with the released context and the
  held tail, so a term that has arrived whole blocks at once) and released, redacted, as long
  as the classifier's running score of the open window is under ``release_below`` times each
  blocking threshold. Borderline text waits for its window to be complete and pass.

The running score is not recomputed at every word (that was ~93 % of this mode's CPU): a score
under *half* of ``release_below`` times every blocking threshold lets text go up to
``release_ahead`` characters (``Rules``, 48), and at most a quarter of the text it read, past
what it read (a short text's score moves a lot as it grows); text past that waits for a new
score, computed at most once per feed. A score with less margin covers only what it read, and
a borderline one is recomputed once a word (a whitespace, or 16 characters) has arrived. A
complete window's score counts as the running score of what it read.

A borderline score does not hold a run of words the request itself contains (``Echo``: an
answer that repeats its question's sensitive subject shows it at once), when the stream was
given the request's words.

What this guarantees: a blocked term, or a PII value of the types checked, never reaches the
client, however the stream is chunked (up to the hold bound, ``window_chars - 1``); text a
category blocks may have been released up to its window's start plus the part running scores
passed, plus at most ``release_ahead`` characters no score had read yet, plus words of the
request. ``AsyncStreamModerator``
releases every delta as it comes and runs ``buffered`` checks beside it: a block ends the
stream, after the text before it went out unredacted.
"""

from __future__ import annotations

import re

from policies.moderation.config import OVERLAP_CHARS
from policies.moderation.echo import Echo
from policies.moderation.pii import PiiSpan
from policies.moderation.rules import Rules, Window
from policies.moderation.stream import StreamModerator, next_cut
from policies.moderation.verdict import Finding, Release

__all__ = ["AsyncStreamModerator", "IncrementalStreamModerator"]

_SPACE = re.compile(r"\s")
_RESCORE_CHARS = 16
"""A borderline running score is computed again once this many characters, or a whitespace,
have arrived since: a few more letters of the same word barely move it."""


class IncrementalStreamModerator(StreamModerator):
    """Release as soon as nothing can still block it (``mode: incremental``)."""

    def __init__(self, rules: Rules, window_chars: int, echo: Echo | None = None) -> None:
        super().__init__(rules, window_chars)
        self._echo = echo  # the request's words, which a borderline score does not hold
        self._open = ""  # the classifier's open window (part may already be released)
        self._open_context = ""  # the OVERLAP_CHARS before it
        self._uncut = 0  # length of _open known to complete no window (next_cut: None)
        self._cleared = 0  # stream position up to which complete windows passed the classifier
        self._scored_end = 0  # stream position up to which the last running score read
        self._trusted: int | None = 0  # stream position that score lets text go to; None: borderline
        self._flags_to = 0  # stream position up to which flagged PII values were reported

    def feed(self, delta: str) -> Release:
        """Take the next piece of text; return what may be sent now."""
        if self._blocked is not None:
            return Release(blocked=self._blocked)
        self._pending += delta
        self._open += delta
        return self._step(final=False)

    def finish(self) -> Release:
        """The stream ended: score the last window, check and release the rest."""
        if self._blocked is not None:
            return Release(blocked=self._blocked)
        return self._step(final=True)

    def _step(self, *, final: bool) -> Release:
        findings = self._classify(final=final)
        if self._blocked is not None:
            return Release("", self._blocked, findings)
        text, more = self._release_ready(final=final)
        return Release(text, self._blocked, findings + more)

    def _classify(self, *, final: bool) -> tuple[Finding, ...]:
        """Score every window completed by now (``buffered``'s cuts, without PII moves)."""
        if not self._rules.classifies:
            self._open = ""  # nothing to score: only terms and PII decide
            return ()
        # a cut ends with a whitespace or at window_chars: text that added neither cuts nothing new
        if not final and len(self._open) < self._window and _SPACE.search(self._open, self._uncut) is None:
            return ()
        windows: list[tuple[Window, int]] = []
        context, pending = self._open_context, self._open
        while pending:
            cut_at = next_cut(pending, self._window)
            if cut_at is None:
                if not final:
                    break
                cut_at = (len(pending), len(pending))
            cut, look_end = cut_at
            windows.append((Window(context + pending[:look_end], len(context), len(context) + cut, 0, ()), cut))
            context = (context + pending[:cut])[-OVERLAP_CHARS:]
            pending = pending[cut:]
        self._uncut = len(self._open)
        if not windows:
            return ()
        findings: list[Finding] = []
        outcomes = self._rules.check([w for w, _ in windows], match=False)
        for (window, cut), outcome in zip(windows, outcomes, strict=True):
            findings += [f for f in outcome.findings if self._is_new(f)]
            self._saw(outcome, window)
            if outcome.blocked is not None:
                self._blocked = outcome.blocked
                break
            self._on_scored(self._cleared + len(window.text) - window.start, outcome.release_ahead)
            self._open_context = (self._open_context + self._open[:cut])[-OVERLAP_CHARS:]
            self._open = self._open[cut:]
            self._cleared += cut
        self._uncut = len(self._open)
        return tuple(findings)

    def _release_ready(self, *, final: bool) -> tuple[str, tuple[Finding, ...]]:
        """Check and release what the hold-back and the running score allow."""
        text = self._context + self._pending
        base = len(self._context)
        hold = len(text) if final else max(base, self._rules.hold.start(text))
        limit = self._offset + hold - base
        if not final and limit > self._cleared and self._open and self._rules.classifies:
            scored = self._scored_limit(text, base, limit)
            if scored < limit and self._echo is not None:  # the client's own words go out anyway
                start = base + max(scored, self._offset) - self._offset
                scored = max(scored, self._offset - base + self._echo.extent(text, start, base + limit - self._offset))
            limit = max(self._cleared, min(limit, scored))
        end = base + limit - self._offset
        if end <= base:
            return "", ()
        spans = self._rules.pii(text)
        for span in spans:  # never release part of a PII value: stop before it
            if span.start < end < span.end:
                end = span.start if span.start > base else span.end
        if end <= base:
            return "", ()
        flagged = self._rules.flagged_pii
        window = Window(text, base, end, self._offset - base, tuple(s for s in spans if s.type not in flagged))
        outcome = self._rules.check([window], classify=False)[0]
        findings = tuple(f for f in outcome.findings if self._is_new(f)) + self._settled_flags(spans, text, base, final)
        if outcome.blocked is not None:
            self._blocked = outcome.blocked
            return "", findings
        released = text[base:end]
        self._context = (self._context + released)[-OVERLAP_CHARS:]
        self._pending = self._pending[len(released):]
        self._offset += len(released)
        return outcome.text, findings

    def _settled_flags(self, spans: list[PiiSpan], text: str, base: int, final: bool) -> tuple[Finding, ...]:
        """Findings of the flagged values that can no longer grow, each once, whole.

        Flagged values are not held (``HoldBack``), so one may go out in pieces and still be
        growing at the end of the text (``jane@example.or``): it is reported once something
        follows it, with the offsets a whole-text check gives (the released context keeps
        ``OVERLAP_CHARS`` of it, so a value up to that long is seen whole).
        """
        out: list[Finding] = []
        for span in spans:
            start = self._offset - base + span.start
            if span.type not in self._rules.flagged_pii or start < self._flags_to or \
                    (span.end == len(text) and not final):
                continue
            self._flags_to = start + span.end - span.start
            out.append(Finding("pii", span.type, "flag", 1.0, start, self._flags_to))
        return tuple(out)

    def _scored_limit(self, text: str, base: int, wanted: int) -> int:
        """Stream position up to which the running score lets text go (``wanted`` at most).

        A score with a clear margin covers ``release_ahead_chars`` past what it read, so the
        open window is scored again only when text past that is to go; a borderline one is
        scored again once a word (a whitespace, or 16 characters) has arrived since.
        """
        if self._trusted is not None and wanted <= self._trusted:
            return wanted
        end = self._offset + len(text) - base  # the stream position of the end of what arrived
        if self._trusted is not None or end - self._scored_end >= _RESCORE_CHARS or \
                _SPACE.search(text, max(base, base + self._scored_end - self._offset)) is not None:
            self._on_scored(end, self._rules.release_ahead(self._open_context + self._open))
        return self._cleared if self._trusted is None else min(wanted, self._trusted)

    def _on_scored(self, read_end: int, ahead: int | None) -> None:
        """A score (running, or a whole window's) read the stream up to ``read_end``: the latest
        one decides how far text may go past what complete windows passed."""
        if read_end >= self._scored_end:
            self._scored_end = read_end
            self._trusted = None if ahead is None else read_end + ahead


class AsyncStreamModerator(StreamModerator):
    """Release at once, check behind (``mode: async``): a block ends the stream afterwards.

    The checks are ``buffered``'s, on the same windows; their redactions are not applied (the
    text is already out) but their findings are recorded as they are.
    """

    @property
    def held(self) -> int:
        """Nothing is held back in this mode."""
        return 0

    def feed(self, delta: str) -> Release:
        """Pass ``delta`` on now unless a check that has just completed blocks."""
        if self._blocked is not None:
            return Release(blocked=self._blocked)
        checked = super().feed(delta)
        return Release("" if checked.blocked else delta, checked.blocked, checked.findings)

    def finish(self) -> Release:
        """Check what is left; nothing more to release."""
        checked = super().finish()
        return Release("", checked.blocked, checked.findings)
