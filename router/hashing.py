"""Stable hashes: the same answer in every process, so replicas agree without talking.

Python's ``hash()`` is salted per process; anything that must agree across gateway replicas
(placement of a new prefix, a sticky key's worker) uses these instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Addressed(Protocol):
    @property
    def address(self) -> str: ...


W = TypeVar("W", bound=Addressed)


def stable_hash(text: str) -> bytes:
    """8-byte BLAKE2b digest of ``text``."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def rendezvous_pick(key: str, workers: Sequence[W]) -> W:
    """Highest-random-weight hashing: ``key``'s home among ``workers``.

    Removing a worker moves only the keys whose home it was; adding one takes a fair share.
    Workers are identified by their address, not their position in a list.
    """
    digest = stable_hash(key)
    best, best_weight = workers[0], b""
    for worker in workers:
        weight = hashlib.blake2b(digest + worker.address.encode(), digest_size=8).digest()
        if weight > best_weight:
            best, best_weight = worker, weight
    return best
