"""Least load: the worker with the fewest requests in flight and queued."""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import LeastLoadConfig


class LeastLoad(BasePolicy):
    """Best balance for one gateway; several replicas may herd onto the same idle worker."""

    name = "least_load"

    def __init__(self, config: LeastLoadConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        pick = min(workers, key=lambda w: w.load)
        return Selection(pick, reason="least_load", scores={w.id: float(w.load) for w in workers})
