"""Consistent hashing by sticky key: one session, one worker."""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import ConsistentHashConfig
from router.hashing import rendezvous_pick


class ConsistentHash(BasePolicy):
    """Pins each sticky key (``x-switchyard-session``, ``user``, else the API key) to a worker.

    Every replica computes the same pick; a worker leaving moves only its own keys.
    """

    name = "consistent_hash"

    def __init__(self, config: ConsistentHashConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        return Selection(rendezvous_pick(request.sticky_key, workers), reason="sticky_key")
