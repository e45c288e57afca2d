"""``HoldBack.start`` reads only the run at the end of the text (for speed); it must hold exactly
what the end-anchored patterns of its definition (module docstring) say, on any text."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.moderation.holdback import TOKEN_LEAD, HoldBack
from policies.moderation.pii import KEY_WORDS, SECRET_PREFIXES

# the definition, written as plain searches (the code was made fast): the run is read within
# the last `limit` characters, as nothing before them is ever held
_RUN = re.compile(r"[\w.%+\-@:/=~#()]+\Z")
_SPACED_NUMBER = re.compile(r"(?:\+|00)?\(?\d[\d ().\-]*\Z")
_SPACED_IBAN = re.compile(r"[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4})*(?: [A-Za-z0-9]{0,4})?\Z")
_NUMBERS = {"phone", "credit_card", "us_ssn"}


def _secret_start(text: str, floor: int, run_start: int) -> int:
    end = len(text)
    if any(k in text[max(0, run_start - 48):].lower() for k in KEY_WORDS):
        return run_start
    token = re.compile(r"[A-Za-z0-9_+/=-]*\Z").search(text, floor)
    word = re.compile(r"[\w-]*\Z").search(text, floor)
    assert token is not None and word is not None
    if word.group() and any(word.group().startswith(p) or p.startswith(word.group()) for p in SECRET_PREFIXES):
        return min(token.start(), word.start())
    plain_word = re.fullmatch(r"[A-Z]?[a-z]+(-[a-z]+)*", token.group()) is not None
    return token.start() if len(token.group()) > TOKEN_LEAD and not plain_word else end


def defined_start(text: str, limit: int, types: set[str]) -> int:
    end = len(text)
    floor = max(0, end - limit)
    start = end
    if (run := _RUN.search(text, floor)) is not None:
        value = run.group()
        alnum = re.compile(r"[A-Za-z0-9]*\Z").search(text, floor)
        assert alnum is not None
        if "email" in types or (_NUMBERS & types and re.search(r"[\d+(]", value)) or ("ip_address" in types and (
                re.search(r"[\d:]", value) or re.fullmatch(r"[0-9A-Fa-f]{1,4}", alnum.group()))):
            start = run.start()
        else:
            if "secret" in types:
                start = _secret_start(text, floor, run.start())
            if "iban" in types and re.match(r"[A-Za-z]{2}\d", alnum.group()):
                start = min(start, alnum.start())
    if _NUMBERS & types and (m := _SPACED_NUMBER.search(text, floor)) is not None:
        start = min(start, m.start())
    if "iban" in types and (m := _SPACED_IBAN.search(text, floor)) is not None:
        start = min(start, m.start())
    return max(start, floor)


# the characters the patterns care about, and a few they do not
TEXT = st.text(alphabet="aDE0189 +-().@_:/ x,!\nskAKIeyJ=tokn", max_size=120)
TYPES = st.sets(st.sampled_from(["email", "phone", "iban", "secret", "ip_address", "credit_card"]))


@settings(max_examples=3000, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=130), TYPES)
def test_the_fast_hold_is_the_defined_hold(text: str, limit: int, types: set[str]) -> None:
    hold = HoldBack(types, [], limit)  # type: ignore[arg-type]
    assert hold.start(text) == defined_start(text, limit, types)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["DE89", "3704", "0044", "+1", "(415)", "555-0132", "jane.doe@ex", "word", " ", "  "]),
                max_size=12),
       st.integers(min_value=1, max_value=60))
def test_the_fast_hold_is_the_defined_hold_on_pii_shapes(words: list[str], limit: int) -> None:
    text = "".join(words)
    hold = HoldBack(["email", "phone", "iban"], [], limit)
    assert hold.start(text) == defined_start(text, limit, {"email", "phone", "iban"})
