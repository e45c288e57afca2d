"""Deterministic PII and secret detectors: text in, typed character spans out.

Each type is a regular expression that finds candidates and a validator that keeps only what
the format allows: a credit card number passes the Luhn check and starts like a card; an IBAN
has its country's length and passes mod-97; a US SSN has a valid area, group and serial; an IP
address parses (``ipaddress``); a phone number has 7 to 15 digits and is not a date, a
decimal or a year range. Secrets are known key shapes (``sk-...``, ``AKIA...``, ``ghp_...``,
``xox.-...``, JWTs, private-key headers) and high-entropy bearer tokens.

Spans never overlap: where two types claim the same characters, the more specific wins
(``PRIORITY``). Recall and precision per type on the Presidio synthetic set are in
``docs/moderation-model.md`` (``python -m bench.moderation``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as iban_check
from stdnum import luhn
from stdnum.us import ssn as us_ssn

from policies.moderation.categories import PII_TYPES, PiiType

__all__ = ["KEY_WORDS", "PRIORITY", "SECRET_PREFIXES", "PiiSpan", "find_pii", "iban_valid", "is_valid_phone", "luhn_valid", "ssn_valid"]


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """``text[start:end]`` is PII of ``type``."""

    type: PiiType
    start: int
    end: int


PRIORITY: tuple[PiiType, ...] = ("secret", "email", "iban", "credit_card", "us_ssn", "ip_address", "phone")
"""Which type keeps characters two detectors both claim: the earlier one."""

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])")
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){11,18}(?![\w-]|\.\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?(?![A-Za-z0-9])")
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|social security|ss#|ss no)\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+./:-])(?:\+|00)?\(?\d[\d().\- ]{4,22}\d(?:\s?(?:x|ext\.?|#)\s?\d{1,5})?(?![\w/]|[-.:]\d)")
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|desk|call|sms|whatsapp|dial|office|answering)\b")
_EXTENSION = re.compile(r"\s?(?:x|ext\.?|#)\s?\d{1,5}$")
_DIGITS = re.compile(r"\d+")
_HAS_DIGIT = re.compile(r"\d")
_SEPARATORS = re.compile(r"[ .-]")
_TRUNK = re.compile(r"00[1-9]")
_TOLL_FREE = re.compile(r"1?8(?:00|88|77|66|55|44|33)")
_PHONE_BAD_SEPARATORS = re.compile(r"[ .\-]{2,}|[.\-][ ]|[ ][.\-]|\(\)|\)\(")
_DATE = re.compile(r"^(?:\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./ ]\d{1,2}[-./ ]\d{2,4})$")
_YEARS = re.compile(r"^(?:1[89]|20)\d\d(?:[ -]+(?:1[89]|20)\d\d)+$")
_SECRETS = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"           # OpenAI, Anthropic
    r"|(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"                           # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"                                 # Slack tokens
    r"|AIza[0-9A-Za-z_-]{35}"                                         # Google API keys
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"                      # Stripe secret keys
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
    r")(?![\w-])"
    r"|-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_KEYED = re.compile(
    r"(?i:\b(?:(?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|client[_-]?secret|token"
    r"|auth(?:orization)?|password|passwd|pwd|private[_-]?key|sig(?:nature)?)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+|basic\s+|token\s+)?|(?:bearer|basic|token)\s+))([A-Za-z0-9_~+/=-](?:[A-Za-z0-9._~+/=-]*[A-Za-z0-9_~+/=-])?)")
_PLACEHOLDER = re.compile(r"(?i)your|xxxx|example|placeholder|redacted|\.\.\.|<|\*\*\*")
_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9_+/=-]{32,}(?![\w+/=-])")
# what every match of _SECRETS starts with ("gh" alone is in "through" and "high"); each of them holds
# "xox" or one of _SECRET_CHARS, a cheaper test that most prose fails
SECRET_PREFIXES = ("sk-", "sk_", "rk_", "AKIA", "ASIA", "ABIA", "ACCA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                   "github_pat_", "xox", "AIza", "eyJ", "-----BEGIN")
_SECRET_CHARS = re.compile(r"[-_AJ]")
KEY_WORDS = ("bearer", "basic", "token", "key", "secret", "auth", "passw", "pwd", "sig")
_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
"""IBAN length by country (ISO 13616 registry): a code not listed here is not an IBAN."""


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string, as every payment card number passes it
    (``python-stdnum``'s ``stdnum.luhn``)."""
    return bool(luhn.is_valid(digits))


def iban_valid(compact: str) -> bool:
    """An IBAN without spaces (any case): the country's length in our table, then
    ``python-stdnum``'s ISO 7064 mod 97-10 check. Its national (BBAN) checks are left out:
    with them, recall on ``bench/moderation/pii_heldout.py``'s IBANs was 0.838 (see the model
    card), and a value that passes mod-97 at the country's length is worth redacting anyway."""
    iban = compact.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    return bool(iban_check.is_valid(iban, check_country=False))


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules (``python-stdnum``'s ``stdnum.us.ssn``: area not 000, 666 or 900-999, group not
    00, serial not 0000, not a number known to be published); and not one repeated digit."""
    digits = area + group + serial
    return len(set(digits)) > 1 and digits != "123456789" and bool(us_ssn.is_valid(digits))


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        raw = m.group()
        seps = {c for c in raw if not c.isdigit()}
        digits = raw.replace(" ", "").replace("-", "")
        # one kind of separator at most; card numbers start 2-6 (1800 and 2131 are old JCB)
        if len(seps) <= 1 and (digits[0] in "23456" or digits[:4] in ("1800", "2131")) and luhn_valid(digits):
            yield m.span()


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        raw = m.group()
        length = IBAN_LENGTHS.get(raw[:2].upper())
        if length is None:
            continue
        # the match may run into the next word ("...9137 to"): cut it to the country's length
        end, kept = m.start(), 0
        for end in range(m.start(), m.end()):
            kept += text[end] != " "
            if kept == length:
                break
        end += 1
        if kept == length and (end == len(text) or not text[end].isalnum()) and \
                iban_valid(text[m.start():end].replace(" ", "")):
            yield m.start(), end


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _SSN.finditer(text):
        area, sep, group, serial = m.groups()
        # nine bare digits are an SSN only next to words that say so
        if not sep and not _SSN_CONTEXT.search(text, max(0, m.start() - 40), m.start()):
            continue
        if ssn_valid(area, group, serial):
            yield m.span()


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for m in _IPV4.finditer(text) if text.count(".") >= 3 else ():
        try:
            if _is_public(ipaddress.IPv4Address(m.group())):
                yield m.span()
        except ValueError:
            continue
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            candidate = m.group()
            groups = [g for g in candidate.split(":") if g]
            # "::1" and "a::b" (C++ scopes) are not addresses of anyone; eight decimal groups
            # are a ratio ("1:8:28:70:56:28:8:1")
            if len(groups) < 3 or ("::" not in candidate and all(g.isdigit() for g in groups)):
                continue
            try:
                if _is_public(ipaddress.IPv6Address(candidate)):
                    yield m.span()
            except ValueError:
                continue


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local and reserved addresses identify no one outside a network."""
    reserved = address.is_reserved and address.version == 4  # IPv6 outside 2000::/3 is "reserved" too
    return not (address.is_private or address.is_loopback or address.is_link_local or reserved
                or address.is_multicast or address.is_unspecified)


def _is_phone(raw: str, text: str, start: int, end: int) -> bool:
    number, extension = _split_extension(raw)
    core = number.lstrip("+")
    groups = _DIGITS.findall(core)
    n_digits = sum(len(g) for g in groups)
    separators = set(_SEPARATORS.findall(core))
    if not 7 <= n_digits <= 15 or _PHONE_BAD_SEPARATORS.search(number) or number.count("(") != number.count(")"):
        return False
    if _DATE.match(core) or _YEARS.match(core) or all(set(g) <= {"0", "1"} for g in groups):
        return False  # a date, a range of years, a binary number
    if "." in separators and (len(separators) > 1 or len(groups) < 3 or max(map(len, groups)) > 4):
        return False  # decimals and version numbers ("249 0.2075", "1.26.4")
    if sum(len(g) == 1 for g in groups[1:]) > 1:
        return False  # "1 2 3 4 5 6 7" is a list of numbers
    if separators == {"."} and (len(groups) == 4 and max(map(len, groups)) <= 3 or
                                {len(g) for g in groups[1:]} == {3}):
        return False  # an IPv4 address (the IP detector decides) or thousands ("31.000.000")
    if _TOLL_FREE.match("".join(groups)):
        return False  # businesses' toll-free lines (and helplines) identify no person
    prefixed = number[0] in "+(" or _TRUNK.match(number) is not None or bool(extension)
    # dashes or dots between 3+ groups look like a phone number by themselves; bare digits,
    # two groups ("451 5986") or space-separated groups ("203 166 136") are as often a house
    # number and a postcode, or a row of a table: those need a word around them that says phone
    national = core.startswith("0") and len(groups[0]) > 1  # "032 288 79 44": a trunk prefix
    if prefixed or (len(groups) >= 3 and (separators & {"-", "."} or national)):
        return True
    if len(groups) == 1 and (len(groups[0]) not in (10, 11) or groups[0][0] == "1"):
        return False
    if _PHONE_CONTEXT.search(text[max(0, start - 24):start] + " " + text[end:end + 12]) is not None:
        return True
    # no word says "phone": a number in groups that libphonenumber's tables (any country, with
    # its "+", or a US number without) call a valid phone number is one anyway
    return len(groups) > 1 and is_valid_phone(number)


def is_valid_phone(number: str, region: str = "US") -> bool:
    """Whether libphonenumber (``phonenumbers``) parses ``number`` as a valid number: with a
    ``+`` or ``00`` country prefix for any country, else as a number of ``region``."""
    candidate = "+" + number[2:] if number.startswith("00") else number
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)))
    except phonenumbers.NumberParseException:
        return False


def _split_extension(raw: str) -> tuple[str, str]:
    m = _EXTENSION.search(raw)
    return (raw[:m.start()], raw[m.start():]) if m else (raw, "")


def _in_number_list(text: str, start: int, end: int) -> bool:
    """Whether the number at ``[start, end)`` is one of a run of numbers (a table row, a list)."""
    before = text[max(0, start - 2):start]
    after = text[end:end + 2]
    return bool(re.search(r"\d[ ,]?\Z", before) or re.match(r"[ ,]?\d", after))


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for m in _PHONE.finditer(text):
        start, end = m.span()
        raw = m.group()
        # a trailing ")" or "(" the regex took from the prose around the number
        while raw and raw[-1] in "(. -":
            raw, end = raw[:-1], end - 1
        if raw.startswith("(") and raw.count("(") > raw.count(")"):
            raw, start = raw[1:], start + 1
        if _is_phone(raw, text, start, end) and not _in_number_list(text, start, end):
            yield start, end


def _entropy(token: str) -> float:
    n = len(token)
    return -sum(k / n * math.log2(k / n) for k in Counter(token).values())


def _looks_random(token: str) -> bool:
    """Mixed case with digits, high entropy, and not made of words: random base62/base64 of 32+
    characters passes ~95 % of the time; CamelCase names, file paths and hashtags do not."""
    digits = sum(c.isdigit() for c in token)
    upper = sum(c.isupper() for c in token)
    lower = sum(c.islower() for c in token)
    if digits < 2 or upper < 2 or lower < 2:
        return False
    in_words = sum(len(w) for w in _WORDISH.findall(token))
    return in_words / len(token) < 0.5 and _entropy(token) >= 4.0


def _keyed_value_ok(value: str) -> bool:
    """A value after ``token=``/``api_key:``/``Bearer``: 12+ characters with a digit, random
    enough, and not code (``os.environ``) or a placeholder (``YOUR_API_KEY``)."""
    if len(value) < 12 or not any(c.isdigit() for c in value) or _PLACEHOLDER.search(value):
        return False
    return _entropy(value) >= 3.0


def _secrets(text: str) -> Iterator[tuple[int, int]]:
    # substring checks first: most text holds none of the prefixes, keys or long runs, and
    # these three regexes are the slowest of the detectors
    if (_SECRET_CHARS.search(text) is not None or "xox" in text) and any(p in text for p in SECRET_PREFIXES):
        for m in _SECRETS.finditer(text):
            yield m.span()
    if _HAS_DIGIT.search(text) is None:
        return  # a keyed value and a random token both hold digits (_keyed_value_ok, _looks_random)
    lower = text.lower()
    if any(key in lower for key in KEY_WORDS):
        for m in _KEYED.finditer(text):
            if _keyed_value_ok(m.group(1)):
                yield m.span(1)
    if max(map(len, text.split()), default=0) >= 32:  # \S{32}: one pass, not a search from every index
        for m in _TOKEN.finditer(text):
            if _looks_random(m.group()):
                yield m.span()


def _emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if ".." not in m.group():
            yield m.span()


DETECTORS: dict[PiiType, Callable[[str], Iterator[tuple[int, int]]]] = {
    "secret": _secrets, "email": _emails, "iban": _ibans, "credit_card": _cards, "us_ssn": _ssns,
    "ip_address": _ips, "phone": _phones,
}
_NOT_DIGIT = re.compile(r"\D+")
_MIN_DIGITS: dict[PiiType, int] = {"iban": 2, "credit_card": 12, "us_ssn": 9, "ip_address": 1, "phone": 7}
"""Fewest digits a value of each type holds (by its pattern, or a phone number's check): a text
with fewer is not searched for it. Most text a stream checks has none or a few."""


def find_pii(text: str, types: Collection[PiiType] = PII_TYPES) -> list[PiiSpan]:
    """Every PII span of the given ``types`` in ``text``, sorted by start, never overlapping.

    Candidates of every type are found first; then, in ``PRIORITY`` order, a span is kept only
    if no kept span overlaps it, so a card number is not also reported as a phone number.
    """
    digits = len(_NOT_DIGIT.sub("", text))
    kept: list[PiiSpan] = []
    for kind in PRIORITY:
        if kind not in types or digits < _MIN_DIGITS.get(kind, 0):
            continue
        for start, end in DETECTORS[kind](text):
            if all(end <= k.start or start >= k.end for k in kept):
                kept.append(PiiSpan(kind, start, end))
    return sorted(kept, key=lambda s: s.start)
