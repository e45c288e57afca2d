"""``HoldBack.start`` reads only the run at the end of the text (for speed); it must hold exactly
what the end-anchored patterns of its definition (module docstring) say, on any text."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.moderation.holdback import HoldBack

# the definition, written as plain searches over the whole text (the code before it was made fast)
_RUN = re.compile(r"[\w.%+\-@:/=~#()]+\Z")
_SPACED_NUMBER = re.compile(r"(?:\+|00)?\(?\d[\d ().\-]*\Z")
_SPACED_IBAN = re.compile(r"[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4})*(?: [A-Za-z0-9]{0,4})?\Z")


def defined_start(text: str, limit: int, *, runs: bool, numbers: bool, ibans: bool) -> int:
    end = len(text)
    start = end
    if runs and (m := _RUN.search(text)) is not None:
        start = m.start()
    if numbers and (m := _SPACED_NUMBER.search(text, max(0, end - limit))) is not None:
        start = min(start, m.start())
    if ibans and (m := _SPACED_IBAN.search(text, max(0, end - limit))) is not None:
        start = min(start, m.start())
    return max(start, end - limit)


# the characters the patterns care about, and a few they do not
TEXT = st.text(alphabet="aDE0189 +-().@_:/ x,!\n", max_size=120)


@settings(max_examples=2000, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=130), st.sets(st.sampled_from(["email", "phone", "iban"])))
def test_the_fast_hold_is_the_defined_hold(text: str, limit: int, types: set[str]) -> None:
    hold = HoldBack(types, [], limit)  # type: ignore[arg-type]
    expected = defined_start(text, limit, runs=bool(types), numbers="phone" in types, ibans="iban" in types)
    assert hold.start(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["DE89", "3704", "0044", "+1", "(415)", "555-0132", "jane.doe@ex", "word", " ", "  "]),
                max_size=12),
       st.integers(min_value=1, max_value=60))
def test_the_fast_hold_is_the_defined_hold_on_pii_shapes(words: list[str], limit: int) -> None:
    text = "".join(words)
    hold = HoldBack(["email", "phone", "iban"], [], limit)
    assert hold.start(text) == defined_start(text, limit, runs=True, numbers=True, ibans=True)
