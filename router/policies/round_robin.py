"""Round robin: each request to the next healthy worker in turn."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import RoundRobinConfig


class RoundRobin(BasePolicy):
    """Spreads requests evenly and ignores cache affinity; the baseline the others must beat."""

    name = "round_robin"

    def __init__(self, config: RoundRobinConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header
        self._counter = itertools.count()

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        pick = workers[next(self._counter) % len(workers)]
        return Selection(pick, reason="round_robin")
