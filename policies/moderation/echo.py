"""The client's own words: an answer's text made only of them tells the client nothing new.

An answer often opens by repeating its question (``What is child abuse?`` -> ``Child abuse
refers to ...``). The n-gram model scores such a sensitive subject by itself at a category's
full score, so ``incremental`` mode held those first words until the sentence said what it
was, 2 to 4 tokens of time to first visible token. ``Echo`` lets a stream release, past a
borderline running score, a run of words that all occur in the request being answered: the
client wrote them. Terms and PII are still checked and held as always (``HoldBack``), and the
window is still scored whole when it is complete, so a category still ends the stream there.

What this adds to what ``incremental`` may let out before a block: words of at least
``MIN_CHARS`` letters that the request itself contains, in any order (one- and two-letter
words are not echoes, so a slur cannot be spelt out of a prompt's letters). The request's words
are read once per stream, and only if a running score is borderline.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MIN_CHARS", "Echo"]

MIN_CHARS = 3
"""Shortest word that counts as an echo of the request."""

_WORD = re.compile(r"\w+")


class Echo:
    """The words of the request an answer replies to, read from ``source`` on first use."""

    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source
        self._words: frozenset[str] | None = None

    def _vocabulary(self) -> frozenset[str]:
        if self._words is None:
            self._words = frozenset(w for w in _WORD.findall(self._source().lower()) if len(w) >= MIN_CHARS)
        return self._words

    def extent(self, text: str, start: int, end: int) -> int:
        """Where the run of the request's words that starts at ``text[start]`` ends, within
        ``end``: the end of its last word (``start``: not one). Between the words may stand
        anything that is not a word character (spaces, punctuation); a word cut short by
        ``end``, or by the end of what has arrived, counts as what it is so far."""
        if start >= end:
            return start
        words = self._vocabulary()
        reached = start
        for m in _WORD.finditer(text, start, end):
            if m.group().lower() not in words:
                break
            reached = m.end()
        return reached
