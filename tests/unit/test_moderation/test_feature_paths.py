"""The moderation features' fast paths give the values of the general ones (spec unchanged)."""

from __future__ import annotations

import string

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.moderation.features import FeatureExtractor, _ascii_case_counts, _case_counts, _char_keys_many
from router.sparse_linear import mix


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable, max_size=400))
def test_ascii_counts_match_the_code_point_counts(text: str) -> None:
    assert _ascii_case_counts(text) == _case_counts(text, text.lower())


def _reference_mix(keys: np.ndarray, bits: int) -> np.ndarray:  # type: ignore[type-arg]
    """splitmix64 as the feature spec defines it, written out with Python integers."""
    out = []
    for key in keys.tolist():
        x = (key + 0x9E3779B97F4A7C15) % 2**64
        x ^= x >> 30
        x = x * 0xBF58476D1CE4E5B9 % 2**64
        x ^= x >> 27
        x = x * 0x94D049BB133111EB % 2**64
        x ^= x >> 31
        out.append(x >> (64 - bits))
    return np.array(out, dtype=np.int64)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=64), st.sampled_from([17, 18, 20]))
def test_mix_is_splitmix64_folded(keys: list[int], bits: int) -> None:
    array = np.array(keys, dtype=np.uint64)
    got = mix(array, bits)
    assert got.dtype == np.int64
    assert np.array_equal(got, _reference_mix(array, bits))


_EXTRACTOR = FeatureExtractor.create()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=string.printable + "éİßΣ€ﬁ😀$@", max_size=300), min_size=2, max_size=12))
def test_extract_many_gives_each_text_its_own_vector(texts: list[str]) -> None:
    texts = [*texts, "x" * 4_100, "", "abc"]  # longer than MAX_CHARS, empty, shorter than a gram
    for one, batched in zip((_EXTRACTOR.extract(t) for t in texts), _EXTRACTOR.extract_many(texts), strict=True):
        assert one.indices.tobytes() == batched.indices.tobytes()
        assert one.values.tobytes() == batched.values.tobytes()


def _reference_char_keys(text: str, family: int) -> list[int]:
    """The spec's character 4-gram keys, written out with Python integers: the code points of
    `` text `` mixed with the FNV prime, one key per 4-gram, xor the family."""
    cps = [ord(c) for c in f" {text} "]
    keys = []
    for i in range(len(cps) - 3):
        key = cps[i]
        for c in cps[i + 1:i + 4]:
            key = (key * 0x100000001B3 + c) % 2**64
        keys.append(key ^ family)
    return keys


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(alphabet=string.printable + "éİßΣ€ﬁ😀$@", max_size=120), max_size=6))
def test_char_keys_are_the_spec_s_rolling_grams(texts: list[str]) -> None:
    """One rolling pass over several texts (both families of one text, or a batch's) gives each
    text exactly the keys the spec defines for it alone."""
    families = [1 << 62 if i % 2 else 1 << 63 for i in range(len(texts))]
    got = _char_keys_many(texts, [np.uint64(f) for f in families])
    assert [g.tolist() for g in got] == [_reference_char_keys(t, f) for t, f in zip(texts, families, strict=True)]
