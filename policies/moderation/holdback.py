"""What an incremental stream must still hold back: the tail that could grow into a match.

A blocked term or a PII value is only found once it has arrived whole, so the text that could
still be its beginning stays held; everything before it can go. ``HoldBack.start(text)`` is
the index from which ``text`` (the released context plus what is not released yet) must be
held, computed from the checks a policy turns on:

- **blocked terms**: the earliest word start whose rest of the text (lower-cased, whitespace
  runs read as one space) is a beginning of a term: ``"the acme sec"`` holds ``"acme sec"``
  when ``"acme secret plan"`` is blocked;
- **PII with no spaces**: the last run of characters such a value can hold (letters, digits
  and ``. _ % + - @ : / = ~ # ( )``), when it could still begin a value of a type the policy
  redacts or blocks:

  - e-mail: any run (every word may be a local part); ``"Write to jane.doe"`` holds ``"jane.doe"``;
  - card, phone or SSN numbers: a run with a digit, ``+`` or ``(``; IP addresses: a run with a
    digit or ``:``, or a word of up to four hex digits (``"dead"`` may begin ``dead:beef::1``);
  - secrets: a word that is, or begins, a known key shape (``sk-``, ``AKIA``, ``ghp_``, ...:
    ``pii.SECRET_PREFIXES``); any run within 48 characters of a key word (``token``,
    ``password``, ``Bearer``, ...: a keyed value may follow); a run of token characters
    longer than ``TOKEN_LEAD`` (8), unless it is a plain word (``Improving``, ``Non-binary``:
    lower-case letters after at most one capital, hyphens between);
  - IBANs: a word that has its two country letters and a digit (``"DE8"``).

  So ``"Sure"`` or ``"The"`` alone holds nothing unless e-mail addresses are redacted;
- **numbers with spaces** (phone, card, SSN): a trailing run of digits, spaces and ``( ) . -``
  that starts with a digit, ``+`` or ``(``: ``"call +1 415 555 "`` holds ``"+1 415 555 "``;
- **IBANs with spaces**: a trailing ``CC00`` followed by groups of up to four letters or digits.

What may reach the client of a value found later, by design, is a lead that does not give it
away: up to ``TOKEN_LEAD`` characters of a random token (32 or more characters, so 24 or more
are redacted), or its leading plain word (a word is no secret; the detector redacts only tokens
less than half made of words, and a random base62 token opens with nine lower-case letters
once in ~2,500), an IBAN's two country letters. A word of more than ``TOKEN_LEAD`` letters
is not held for the token it could begin: one of XSTest's answers in thirty opens with one
(``Improving``, ``Terminating``), which would otherwise show one token late. Types a policy only flags hold nothing: their
values are found when complete, with the released context (``OVERLAP_CHARS``) around them.

A text that ends with a space or a punctuation mark after a word (``"Sure! "``) holds nothing
but what a term could still begin with. The hold never exceeds ``limit`` characters, so a
very long run (a minified line, a base64 blob) is released once it passes the bound; a PII
value longer than that can then be split (its first part released unredacted).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from policies.moderation.categories import PiiType
from policies.moderation.pii import KEY_WORDS, SECRET_PREFIXES

__all__ = ["TOKEN_LEAD", "HoldBack"]

TOKEN_LEAD = 8
"""Characters of a run of token characters released before it could be a random token: a
token the detector redacts has 32 or more (``pii._TOKEN``), so 24 or more of it stay unseen."""
_KEY_REACH = 48
"""How far before a run a key word makes it a possible keyed value (``token = "...``)."""

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
_WORD_BACK = re.compile(r"[\w-]*")  # a known key shape starts where such a run does
_TOKEN_BACK = re.compile(r"[A-Za-z0-9_+/=-]*")
_ALNUM_BACK = re.compile(r"[A-Za-z0-9]*")
_PLAIN_WORD = re.compile(r"[A-Z]?[a-z]+(?:-[a-z]+)*")
_NUMBER_LEAD = re.compile(r"[\d+(]")
_IP_LEAD = re.compile(r"[\d:]")
_HEX_WORD = re.compile(r"[0-9A-Fa-f]{1,4}")
_IBAN_LEAD = re.compile(r"[A-Za-z]{2}\d")
_WORD_START = re.compile(r"(?<!\w)\w")
_SPACE = re.compile(r"\s+")

_NUMBER_TYPES: frozenset[PiiType] = frozenset({"phone", "credit_card", "us_ssn"})
_SECRET_LEADS = frozenset(p[:n] for p in SECRET_PREFIXES for n in range(1, len(p) + 1))
"""Every beginning of a known key shape (a word that may still grow into one)."""


class HoldBack:
    """The tail of a stream that could still become a blocked term or a PII value.

    Args:
        pii_types: the PII types whose values the policy changes (redacts or blocks).
        terms: the blocked terms.
        limit: most characters ever held for a possible match.
    """

    def __init__(self, pii_types: Collection[PiiType], terms: Sequence[str], limit: int) -> None:
        types = frozenset(pii_types)
        self._emails = "email" in types
        self._numbers = bool(types & _NUMBER_TYPES)
        self._ips = "ip_address" in types
        self._secrets = "secret" in types
        self._ibans = "iban" in types
        self._runs = self._emails or self._numbers or self._ips or self._secrets or self._ibans
        self._terms = tuple(sorted({_normal(t) for t in terms}))
        self._longest = max((len(t) for t in terms), default=0)
        self._limit = limit

    def start(self, text: str) -> int:
        """Index in ``text`` from which it must be held (``len(text)``: nothing to hold)."""
        end = len(text)
        floor = max(0, end - self._limit)
        back = text[floor:][::-1]  # the last `limit` characters, last first
        start = end
        if self._runs and (run := _run_length(_RUN_BACK, back)):
            start = self._run_start(text, back, end - run)
        digits = (self._numbers or self._ibans) and _DIGIT.search(back) is not None
        if digits and self._numbers:
            start = min(start, _tail_match(_SPACED_NUMBER, _NUMBER_BACK, text, back, end))
        if digits and self._ibans:
            start = min(start, _tail_match(_SPACED_IBAN, _IBAN_BACK, text, back, end))
        if self._terms:
            start = min(start, self.term_start(text))
        return max(start, floor)

    def _run_start(self, text: str, back: str, run_start: int) -> int:
        """Where the run ``text[run_start:]`` must be held from, by the types that could still
        make a value of it (``len(text)``: none)."""
        if self._emails:
            return run_start
        end = len(text)
        run = text[run_start:]
        alnum = end - _run_length(_ALNUM_BACK, back)  # where the trailing word of letters and digits starts
        if (self._numbers and _NUMBER_LEAD.search(run)) or (
                self._ips and (_IP_LEAD.search(run) or _HEX_WORD.fullmatch(text, alnum))):
            return run_start
        start = self._secret_start(text, back, run_start) if self._secrets else end
        if self._ibans and _IBAN_LEAD.match(text, alnum):
            start = min(start, alnum)
        return start

    @staticmethod
    def _secret_start(text: str, back: str, run_start: int) -> int:
        end = len(text)
        near = text[max(0, run_start - _KEY_REACH):].lower()
        if any(word in near for word in KEY_WORDS):
            return run_start
        token = end - _run_length(_TOKEN_BACK, back)
        word = text[end - _run_length(_WORD_BACK, back):]
        # a word that is a key shape's beginning, or begins with one (one C call and one set
        # lookup: the loop over the prefixes was ~5 % of an incremental stream's CPU)
        if word and (word in _SECRET_LEADS or word.startswith(SECRET_PREFIXES)):
            return min(token, end - len(word))
        return token if end - token > TOKEN_LEAD and _PLAIN_WORD.fullmatch(text, token) is None else end

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
