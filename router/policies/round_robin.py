"""Round robin: each request to the next healthy worker in turn."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import RoundRobinConfig


class RoundRobin(BasePolicy):
    """Spreads requests evenly and ignores cache affinity; the baseline the others must beat."""

    name = "round_robin"

    def __init__(self, config: RoundRobinConfig) -> None:
        self._counter = itertools.count()

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        pick = workers[next(self._counter) % len(workers)]
        return Selection(pick, reason="round_robin")
