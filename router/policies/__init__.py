"""Worker-selection policies, one class each, and the table that builds them from config."""

from __future__ import annotations

import random
from typing import Any

from router.base import SelectionPolicy
from router.config import SelectionConfig
from router.placement import PlacementStore
from router.policies.cache_aware import CacheAware
from router.policies.consistent_hash import ConsistentHash
from router.policies.least_load import LeastLoad
from router.policies.power_of_two import PowerOfTwo
from router.policies.random_choice import RandomChoice
from router.policies.round_robin import RoundRobin

POLICIES: dict[str, Any] = {
    "round_robin": RoundRobin,
    "random": RandomChoice,
    "least_load": LeastLoad,
    "power_of_two": PowerOfTwo,
    "consistent_hash": ConsistentHash,
    "cache_aware": CacheAware,
}


def build_policy(config: SelectionConfig, rng: random.Random | None = None,
                 placements: PlacementStore | None = None) -> SelectionPolicy:
    """A fresh policy instance for one pool; ``placements``: the replicas' shared table."""
    policy: SelectionPolicy = POLICIES[config.type](config, rng)
    if placements is not None:
        policy.share_placements(placements)
    return policy


__all__ = ["POLICIES", "CacheAware", "ConsistentHash", "LeastLoad", "PowerOfTwo", "RandomChoice",
           "RoundRobin", "build_policy"]
