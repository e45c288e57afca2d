"""Moderating a stream as it arrives: hold back a bounded window, release what passed.

The gateway's relay calls ``feed(delta)`` for each content delta and sends what the returned
``Release`` carries; at the end it calls ``finish()``. Text is cut into windows only by the
text itself, never by how it was chunked:

- at a **sentence end** (``.``, ``!``, ``?`` or ``…`` then a space, or a newline) once the window
  holds ``MIN_WINDOW`` characters, so text flows sentence by sentence;
- else, when ``window_chars`` characters are waiting, at the last space that keeps the last
  ``OVERLAP_CHARS`` (48) back; those 48 are checked with the window (look-ahead) and stay held.

Each window is checked with the last 48 released characters before it (context) and its look-
ahead, so a phrase or a PII value of up to 48 characters that straddles a cut is seen whole
before any of it is released. A PII value that would straddle a cut moves the cut before it.
Checks run once per window, not per chunk: a feed that completes no window costs a few string
operations. The classifier scores every window of one feed in one batch.

A stream with nothing to redact or block comes out byte for byte as it went in.
"""

from __future__ import annotations

import re

from policies.moderation.config import OVERLAP_CHARS
from policies.moderation.rules import Outcome, Rules, Window
from policies.moderation.verdict import Finding, Release

__all__ = ["MIN_WINDOW", "OVERLAP_CHARS", "StreamModerator", "classifier_windows", "next_cut"]

MIN_WINDOW = 64
"""Shortest window cut at a sentence end (about 16 tokens): "Yes." alone tells the classifier
nothing, and each window checked costs ~0.1 ms of CPU whatever its length."""

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]*_]*\s|\n")


def next_cut(pending: str, window_chars: int) -> tuple[int, int] | None:
    """``(cut, look_end)``: release ``pending[:cut]``, checking it with ``pending[cut:look_end]``.

    None while the text could still continue the current window. Depends on the text only:
    the same text cut into any chunks gives the same windows.
    """
    for m in _SENTENCE_END.finditer(pending, 0, window_chars):
        if m.end() >= MIN_WINDOW:
            return m.end(), m.end()
    if len(pending) < window_chars:
        return None
    limit = window_chars - OVERLAP_CHARS
    space = max(pending.rfind(" ", MIN_WINDOW, limit), pending.rfind("\n", MIN_WINDOW, limit))
    return (space + 1 if space >= 0 else limit), window_chars


def classifier_windows(text: str, window_chars: int) -> list[str]:
    """What the classifier reads for each window of a whole ``text`` (context + window + look-ahead).

    For training and benchmarks: scoring a text as the gateway does is the max over these.
    PII cut adjustments are left out (they move a cut only where a PII value straddles it).
    """
    out, context, pending = [], "", text
    while pending:
        cut, look_end = next_cut(pending, window_chars) or (len(pending), len(pending))
        out.append(context + pending[:look_end])
        context = (context + pending[:cut])[-OVERLAP_CHARS:]
        pending = pending[cut:]
    return out


class StreamModerator:
    """Incremental moderation of one output stream; synchronous, one call per delta.

    Args:
        rules: the compiled output checks (``Moderator.stream()`` builds this object).
        window_chars: most characters held back at once.
    """

    def __init__(self, rules: Rules, window_chars: int) -> None:
        if window_chars < 2 * OVERLAP_CHARS:
            raise ValueError(f"window_chars must be at least {2 * OVERLAP_CHARS}")
        self._rules = rules
        self._window = window_chars
        self._pending = ""
        self._context = ""  # the last OVERLAP_CHARS released characters, unredacted
        self._offset = 0  # where _pending starts in the whole stream
        self._blocked: Finding | None = None
        self._flagged: set[str] = set()
        self.borderline = False
        """Whether a window checked so far was borderline (``Outcome.borderline``)."""
        self.collect_borderline = False
        """Keep each borderline window for ``take_borderline`` (a guard model will be asked)."""
        self._borderline_windows: list[str] = []

    def take_borderline(self) -> list[str]:
        """The borderline windows checked since the last call, as the classifier read them
        (context, window, look-ahead): what a guard model is asked about."""
        taken, self._borderline_windows = self._borderline_windows, []
        return taken

    def _saw(self, outcome: Outcome, window: Window) -> None:
        if outcome.borderline:
            self.borderline = True
            if self.collect_borderline:
                self._borderline_windows.append(window.text)

    @property
    def held(self) -> int:
        """Characters received and not yet released (at most ``window_chars - 1`` between calls)."""
        return len(self._pending)

    @property
    def blocked(self) -> Finding | None:
        """The finding that stopped the stream, if any."""
        return self._blocked

    def feed(self, delta: str) -> Release:
        """Take the next piece of text; return what may be sent now."""
        if self._blocked is not None:
            return Release(blocked=self._blocked)
        self._pending += delta
        return self._release(final=False)

    def finish(self) -> Release:
        """The stream ended: check and release the rest."""
        if self._blocked is not None:
            return Release(blocked=self._blocked)
        return self._release(final=True)

    def whole(self, text: str) -> Release:
        """``feed(text)`` then ``finish()`` on a new ``buffered`` stream (what a whole text is
        checked as: ``Moderator.check_text``), with one classifier run for all
        their windows instead of two: the cuts do not depend on the checks' outcomes (a window
        consumes its text unredacted), so both calls' windows are known before either is checked."""
        self._pending += text
        first, context, pending, offset = self._windows(self._context, self._pending, self._offset, final=False)
        rest, _, _, _ = self._windows(context, pending, offset, final=True)
        windows = first + rest
        return self._apply(windows) if windows else Release()

    def _release(self, *, final: bool) -> Release:
        windows, _, _, _ = self._windows(self._context, self._pending, self._offset, final=final)
        return self._apply(windows) if windows else Release()

    def _windows(self, context: str, pending: str, offset: int, *,
                 final: bool) -> tuple[list[Window], str, str, int]:
        """The windows ``pending`` releases now (all of it when ``final``), and the context,
        pending text and offset once they are consumed."""
        windows: list[Window] = []
        while pending:
            cut_at = next_cut(pending, self._window)
            if cut_at is None:
                if not final:
                    break
                cut_at = (len(pending), len(pending))
            window = self._window_at(context, pending, offset, *cut_at, final=final)
            released = window.end - window.start
            if not released:
                break  # the window ends with the beginning of a blocked term: wait for the rest
            windows.append(window)
            context = (context + pending[:released])[-OVERLAP_CHARS:]
            pending, offset = pending[released:], offset + released
        return windows, context, pending, offset

    def _window_at(self, context: str, pending: str, offset: int, cut: int, look_end: int, *,
                   final: bool = False) -> Window:
        base = len(context)
        if not final and look_end == cut:  # a cut with no look-ahead (a sentence end, a newline)
            cut, look_end = self._term_safe_cut(context + pending, base, cut)
        text = context + pending[:look_end]
        spans = self._rules.pii(text)
        for span in spans:  # never cut through a PII value: cut before it, or after it
            start, end = span.start - base, span.end - base
            if start < cut < end:
                cut = start if start > 0 else min(end, look_end)
        return Window(text, base, base + cut, offset - base, tuple(spans))

    def _term_safe_cut(self, full: str, base: int, cut: int) -> tuple[int, int]:
        """A term's words may continue past a newline: read a term that straddles the cut with
        its window (which then blocks), and never release the beginning of one still arriving."""
        for start, end in self._rules.term_spans(full):
            if start < base + cut < end:
                return cut, end - base
        return max(0, min(cut, self._rules.hold.term_start(full) - base)), cut

    def _apply(self, windows: list[Window]) -> Release:
        texts: list[str] = []
        findings: list[Finding] = []
        for window, outcome in zip(windows, self._rules.check(windows), strict=True):
            findings += [f for f in outcome.findings if self._is_new(f)]
            self._saw(outcome, window)
            if outcome.blocked is not None:
                self._blocked = outcome.blocked
                break
            texts.append(outcome.text)
            self._consume(window)
        return Release("".join(texts), self._blocked, tuple(findings))

    def _consume(self, window: Window) -> None:
        released = window.text[window.start:window.end]
        self._context = (self._context + released)[-OVERLAP_CHARS:]
        self._pending = self._pending[len(released):]
        self._offset += len(released)

    def _is_new(self, finding: Finding) -> bool:
        """Category flags are reported once per stream (the window after a flagged one reads it
        again as context); spans and blocks always."""
        if finding.kind != "category" or finding.action == "block":
            return True
        if finding.name in self._flagged:
            return False
        self._flagged.add(finding.name)
        return True

