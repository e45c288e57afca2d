"""Stream modes that release before a window is complete: ``incremental`` and ``async``.

``IncrementalStreamModerator`` (the default) runs two things over the same text:

- the **classifier windows** of ``buffered`` mode (``stream.next_cut``: the same cuts, the
  same texts scored, so the same category verdicts), each scored once it is complete;
- a **release point**: everything before the tail ``HoldBack`` says could still grow into a
  blocked term or a PII value is checked for terms and PII (with the released context and the
  held tail, so a term that has arrived whole blocks at once) and released, redacted, as long
  as the classifier's running score of the open window is under ``release_below`` times each
  blocking threshold. Borderline text waits for its window to be complete and pass.

What this guarantees: a blocked term, or a PII value of the types checked, never reaches the
client, however the stream is chunked (up to the hold bound, ``window_chars - 1``); text a
category blocks may have been released up to its window's start plus the part the running
score passed. ``AsyncStreamModerator`` releases every delta as it comes and runs ``buffered``
checks beside it: a block ends the stream, after the text before it went out unredacted.
"""

from __future__ import annotations

from policies.moderation.config import OVERLAP_CHARS
from policies.moderation.rules import Rules, Window
from policies.moderation.stream import StreamModerator, next_cut
from policies.moderation.verdict import Finding, Release

__all__ = ["AsyncStreamModerator", "IncrementalStreamModerator"]


class IncrementalStreamModerator(StreamModerator):
    """Release as soon as nothing can still block it (``mode: incremental``)."""

    def __init__(self, rules: Rules, window_chars: int) -> None:
        super().__init__(rules, window_chars)
        self._open = ""  # the classifier's open window (part may already be released)
        self._open_context = ""  # the OVERLAP_CHARS before it
        self._cleared = 0  # stream position up to which complete windows passed the classifier

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
        if not windows:
            return ()
        findings: list[Finding] = []
        outcomes = self._rules.check([w for w, _ in windows], match=False)
        for (_, cut), outcome in zip(windows, outcomes, strict=True):
            findings += [f for f in outcome.findings if self._is_new(f)]
            if outcome.blocked is not None:
                self._blocked = outcome.blocked
                break
            self._open_context = (self._open_context + self._open[:cut])[-OVERLAP_CHARS:]
            self._open = self._open[cut:]
            self._cleared += cut
        return tuple(findings)

    def _release_ready(self, *, final: bool) -> tuple[str, tuple[Finding, ...]]:
        """Check and release what the hold-back and the running score allow."""
        text = self._context + self._pending
        base = len(self._context)
        hold = len(text) if final else max(base, self._rules.hold.start(text))
        limit = self._offset + hold - base
        if not final and limit > self._cleared and self._open and self._rules.classifies \
                and self._rules.is_borderline(self._open_context + self._open):
            limit = min(limit, self._cleared)  # borderline: only what whole windows passed
        end = base + limit - self._offset
        if end <= base:
            return "", ()
        spans = self._rules.pii(text)
        for span in spans:  # never release part of a PII value: stop before it
            if span.start < end < span.end:
                end = span.start if span.start > base else span.end
        if end <= base:
            return "", ()
        outcome = self._rules.check([Window(text, base, end, self._offset - base, tuple(spans))], classify=False)[0]
        findings = tuple(f for f in outcome.findings if self._is_new(f))
        if outcome.blocked is not None:
            self._blocked = outcome.blocked
            return "", findings
        released = text[base:end]
        self._context = (self._context + released)[-OVERLAP_CHARS:]
        self._pending = self._pending[len(released):]
        self._offset += len(released)
        return outcome.text, findings


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
