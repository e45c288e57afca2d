"""Which version serves a request: a pure function of the model, a sticky key and a weight.

The key is hashed into [0, 1) with a stable hash (the same in every process, unlike
``hash()``), and the request goes to the canary iff that point is below the canary's
weight. So every replica assigns alike with nothing shared, a user keeps one version for
as long as the weight does not fall below their point, and raising the weight moves only
users from stable to the canary, never back. Requests without a sticky key are split per
request, at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from router.hashing import stable_hash

Role = Literal["stable", "canary"]


@dataclass(frozen=True, slots=True)
class VersionChoice:
    """The version that answers one request, and the one that gets its mirror, if any."""

    model: str
    """The public model (after difficulty routing)."""
    version: str
    """The version that serves the user: a key of the model's versions (``default``
    for a model without versions)."""
    role: Role
    """``canary`` while the version is under test; ``stable`` otherwise, including a
    promoted canary (which then serves everyone)."""
    shadow_version: str | None = None
    """A version to send a copy of the request to and discard its answer (shadow mode)."""
    rollout: str = ""
    """Identifies the rollout this choice belongs to, so outcomes land in its statistics
    (empty for models without a canary)."""


def bucket(model: str, sticky_key: str) -> float:
    """``sticky_key``'s point in [0, 1) for ``model``: the same in every process."""
    digest = stable_hash(f"{model}\x00{sticky_key}")
    return int.from_bytes(digest, "big") / 2**64


def is_canary(model: str, sticky_key: str | None, weight: float, rng: random.Random) -> bool:
    """Whether this request goes to the canary at ``weight``.

    With a sticky key the answer only depends on (model, key, weight) and is monotone in the
    weight; without one, each request draws from ``rng``.
    """
    if weight <= 0.0:
        return False
    if weight >= 1.0:
        return True
    point = bucket(model, sticky_key) if sticky_key else rng.random()
    return point < weight
