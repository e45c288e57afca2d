"""Canary rollouts of model versions: assignment, statistics, guards, the rollout state machine.

The request path uses ``CanaryController`` (``bind``/``activate`` per policy revision,
``assign``, ``record``, ``try_shadow``); docs/canary.md is the operators' runbook.

Names load on first use (PEP 562): the policy document imports only this package's config
module, so ``switchyard policy check`` does not load what the request path needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from policies.canary.assign import VersionChoice, bucket, is_canary
    from policies.canary.config import CanaryConfig, GuardsConfig, PlanConfig
    from policies.canary.controller import CanaryController
    from policies.canary.guards import GuardCheck, Verdict, judge
    from policies.canary.rollout import CanaryStateError, RolloutSpec, RolloutState, Transition
    from policies.canary.routes import CanaryRoutes, ShadowPermit
    from policies.canary.stats import MemoryStatsStore, Outcome, RedisStatsStore, VersionStats, Window
    from policies.canary.store import MemoryRolloutStore, RedisRolloutStore

__all__ = [
    "CanaryConfig",
    "CanaryController",
    "CanaryRoutes",
    "CanaryStateError",
    "GuardCheck",
    "GuardsConfig",
    "MemoryRolloutStore",
    "MemoryStatsStore",
    "Outcome",
    "PlanConfig",
    "RedisRolloutStore",
    "RedisStatsStore",
    "RolloutSpec",
    "RolloutState",
    "ShadowPermit",
    "Transition",
    "Verdict",
    "VersionChoice",
    "VersionStats",
    "Window",
    "bucket",
    "is_canary",
    "judge",
]

_HOME = {
    "CanaryConfig": "config",
    "CanaryController": "controller",
    "CanaryRoutes": "routes",
    "CanaryStateError": "rollout",
    "GuardCheck": "guards",
    "GuardsConfig": "config",
    "MemoryRolloutStore": "store",
    "MemoryStatsStore": "stats",
    "Outcome": "stats",
    "PlanConfig": "config",
    "RedisRolloutStore": "store",
    "RedisStatsStore": "stats",
    "RolloutSpec": "rollout",
    "RolloutState": "rollout",
    "ShadowPermit": "routes",
    "Transition": "rollout",
    "Verdict": "guards",
    "VersionChoice": "assign",
    "VersionStats": "stats",
    "Window": "stats",
    "bucket": "assign",
    "is_canary": "assign",
    "judge": "guards",
}


__getattr__ = lazy_exports(__name__, _HOME)
