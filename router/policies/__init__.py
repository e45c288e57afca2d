"""Worker-selection policies, one class each, and the table that builds them from config."""

from __future__ import annotations

from router.base import SelectionPolicy
from router.config import SelectionConfig
from router.policies.round_robin import RoundRobin

POLICIES: dict[str, type[RoundRobin]] = {"round_robin": RoundRobin}


def build_policy(config: SelectionConfig) -> SelectionPolicy:
    """A fresh policy instance for one pool."""
    return POLICIES[config.type](config)


__all__ = ["POLICIES", "RoundRobin", "build_policy"]
