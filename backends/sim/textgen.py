"""Deterministic generated text for simulators: same seed and prompt, same words."""

from __future__ import annotations

import hashlib
import random

_WORDS = (
    "the of and to in is that it for on with as was at by this be from or are an have not "
    "which one you all were can there their we will would more if about when so what some "
    "model token cache prefix router worker stream gateway latency request answer batch "
    "graph vector kernel tensor memory throughput decode prefill radix tree queue canary"
).split()


def generate_words(seed: int, prompt: str, count: int) -> list[str]:
    """``count`` pieces, each a word with its leading space, chosen by (seed, prompt)."""
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest()
    rng = random.Random(seed ^ int.from_bytes(digest, "big"))
    pieces = [" " + rng.choice(_WORDS) for _ in range(count)]
    if pieces:
        pieces[0] = pieces[0].lstrip().capitalize()
    return pieces
