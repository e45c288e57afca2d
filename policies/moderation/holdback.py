"""What an incremental stream must still hold back: the tail that could grow into a match.

A blocked term or a PII value is only found once it has arrived whole, so the text that could
still be its beginning stays held; everything before it can go. ``HoldBack.start(text)`` is
the index from which ``text`` (the released context plus what is not released yet) must be
held, computed from the checks a policy turns on:

- **blocked terms**: the earliest word start whose rest of the text (lower-cased, whitespace
  runs read as one space) is a beginning of a term: ``"the acme sec"`` holds ``"acme sec"``
  when ``"acme secret plan"`` is blocked;
- **PII with no spaces** (email, secrets, IP addresses, card, phone or SSN numbers written
  without spaces): the last run of characters such a value can hold (letters, digits and
  ``. _ % + - @ : / = ~ # ( )``); ``"Write to jane.doe"`` holds ``"jane.doe"``;
- **numbers with spaces** (phone, card, SSN): a trailing run of digits, spaces and ``( ) . -``
  that starts with a digit, ``+`` or ``(``: ``"call +1 415 555 "`` holds ``"+1 415 555 "``;
- **IBANs with spaces**: a trailing ``CC00`` followed by groups of up to four letters or digits.

A text that ends with a space or a punctuation mark after a word (``"Sure! "``) holds nothing
but what a term could still begin with. The hold never exceeds ``limit`` characters, so a
very long run (a minified line, a base64 blob) is released once it passes the bound; a PII
value longer than that can then be split (its first part released unredacted).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from policies.moderation.categories import PiiType

__all__ = ["HoldBack"]

_SPACED_NUMBER = re.compile(r"(?:\+|00)?\(?\d[\d ().\-]*\Z")
# groups of exactly four, so a long run of letters and digits cannot backtrack exponentially
_SPACED_IBAN = re.compile(r"[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4})*(?: [A-Za-z0-9]{0,4})?\Z")
# Each pattern above only holds characters of one class. A search for a pattern anchored at
# the end (\Z) tries every start in the text, ~7 us per call on 80 characters; the run of
# its class at the end of the text, read on the reversed text (one anchored match), bounds
# where a match can start, so the search only reads that run (usually a word or nothing).
_RUN_BACK = re.compile(r"[\w.%+\-@:/=~#()]*")
_NUMBER_BACK = re.compile(r"[\d ().\-+]*")
_IBAN_BACK = re.compile(r"[A-Za-z0-9 ]*")
_DIGIT = re.compile(r"\d")
_WORD_START = re.compile(r"(?<!\w)\w")
_SPACE = re.compile(r"\s+")

_RUN_TYPES: frozenset[PiiType] = frozenset(
    {"email", "secret", "ip_address", "credit_card", "phone", "us_ssn", "iban"})
_NUMBER_TYPES: frozenset[PiiType] = frozenset({"phone", "credit_card", "us_ssn"})


class HoldBack:
    """The tail of a stream that could still become a blocked term or a PII value.

    Args:
        pii_types: the PII types the policy looks for.
        terms: the blocked terms.
        limit: most characters ever held for a possible match.
    """

    def __init__(self, pii_types: Collection[PiiType], terms: Sequence[str], limit: int) -> None:
        types = frozenset(pii_types)
        self._runs = bool(types & _RUN_TYPES)
        self._numbers = bool(types & _NUMBER_TYPES)
        self._ibans = "iban" in types
        self._terms = tuple(sorted({_normal(t) for t in terms}))
        self._longest = max((len(t) for t in terms), default=0)
        self._limit = limit

    def start(self, text: str) -> int:
        """Index in ``text`` from which it must be held (``len(text)``: nothing to hold)."""
        end = len(text)
        floor = max(0, end - self._limit)
        back = text[floor:][::-1]  # the last `limit` characters, last first
        start = end
        if self._runs:
            start = end - _run_length(_RUN_BACK, back)
        digits = (self._numbers or self._ibans) and _DIGIT.search(back) is not None
        if digits and self._numbers:
            start = min(start, _tail_match(_SPACED_NUMBER, _NUMBER_BACK, text, back, end))
        if digits and self._ibans:
            start = min(start, _tail_match(_SPACED_IBAN, _IBAN_BACK, text, back, end))
        if self._terms:
            start = min(start, self.term_start(text))
        return max(start, floor)

    def term_start(self, text: str) -> int:
        """Where the beginning of a blocked term ends ``text`` (``len(text)``: none does)."""
        if not self._terms:
            return len(text)
        # a term with runs of whitespace may be longer than written: look back twice as far
        begin = max(0, len(text) - 2 * self._longest)
        for m in _WORD_START.finditer(text, begin):
            rest = _normal(text[m.start():])
            if len(rest) <= self._longest and any(t.startswith(rest) and t != rest for t in self._terms):
                return m.start()
        return len(text)


def _run_length(chars: re.Pattern[str], back: str) -> int:
    m = chars.match(back)
    return m.end() if m is not None else 0


def _tail_match(pattern: re.Pattern[str], chars_back: re.Pattern[str], text: str, back: str, end: int) -> int:
    """Where ``pattern`` (anchored at the end, every match holding a digit and only characters
    ``chars_back`` reads) first matches in the tail ``back`` covers; ``end`` if nowhere."""
    run_start = end - _run_length(chars_back, back)
    if _DIGIT.search(text, run_start) is None:
        return end
    m = pattern.search(text, run_start)
    return m.start() if m is not None else end


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.lower())
