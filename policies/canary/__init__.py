"""Canary rollouts of model versions: assignment, statistics, guards, the rollout state machine.

The request path uses ``CanaryController`` (``bind``/``activate`` per policy revision,
``assign``, ``record``, ``try_shadow``); docs/canary.md is the operators' runbook.
"""

from __future__ import annotations

from policies.canary.assign import VersionChoice, bucket, is_canary
from policies.canary.config import CanaryConfig, GuardsConfig, PlanConfig
from policies.canary.controller import CanaryController
from policies.canary.guards import GuardCheck, Verdict, judge
from policies.canary.rollout import (
    CanaryStateError,
    RolloutSpec,
    RolloutState,
    Transition,
)
from policies.canary.routes import CanaryRoutes, ShadowPermit
from policies.canary.stats import (
    MemoryStatsStore,
    Outcome,
    RedisStatsStore,
    VersionStats,
    Window,
)
from policies.canary.store import MemoryRolloutStore, RedisRolloutStore

__all__ = [
    "CanaryConfig", "CanaryController", "CanaryRoutes", "CanaryStateError", "GuardCheck", "GuardsConfig",
    "MemoryRolloutStore", "MemoryStatsStore", "Outcome", "PlanConfig", "RedisRolloutStore", "RedisStatsStore",
    "RolloutSpec", "RolloutState", "ShadowPermit", "Transition", "Verdict", "VersionChoice", "VersionStats",
    "Window", "bucket", "is_canary", "judge",
]
