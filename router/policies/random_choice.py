"""Random: a healthy worker chosen uniformly."""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import RandomConfig


class RandomChoice(BasePolicy):
    """Uniform spread with no shared state; replicas need not coordinate."""

    name = "random"

    def __init__(self, config: RandomConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header
        self._rng = rng or random.Random()

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        return Selection(self._rng.choice(workers), reason="random")
