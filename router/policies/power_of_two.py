"""Power of two choices: sample two workers, send to the less loaded."""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import PowerOfTwoConfig


class PowerOfTwo(BasePolicy):
    """Sample two workers and send the request to the less loaded one."""

    name = "power_of_two"

    def __init__(self, config: PowerOfTwoConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header
        self._rng = rng or random.Random()

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        a, b = self._rng.sample(workers, 2) if len(workers) > 1 else (workers[0], workers[0])
        pick = a if a.load <= b.load else b
        return Selection(pick, reason="power_of_two", scores={a.id: float(a.load), b.id: float(b.load)})
