"""Cache-aware selection: send a prompt where its prefix is cached, without overloading anyone.

The decision, in order:

1. **Load imbalance wins.** If the busiest worker carries ``balance_abs_threshold`` more
   requests than the idlest *and* ``balance_rel_threshold`` times as many, the idlest takes it.
2. **A conversation follows its own history.** If some worker holds more than the prompt's
   head (system prompt + first user turn) and at least ``cache_threshold`` of the prompt, the
   conversation ran there before: the worker with the longest match takes it.
3. **Otherwise the prefix's home.** Every conversation has a *home* worker: the rendezvous
   hash of its head. Every replica computes the same home without talking, so the next turn
   returns to it whichever replica routes it, and new conversations spread evenly. A shared
   system prompt cached on one worker does not pull new conversations there (SGLang's router
   herds them onto one worker this way, and sends every miss to the smallest tree): copying
   a shared prefix to each worker once is cheaper than unbalancing the pool for good.
4. A pick that is overloaded (``balance_abs_threshold`` above the idlest) hands the request
   to the least loaded of the workers holding the longest match.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import CacheAwareConfig
from router.hashing import rendezvous_pick
from router.prefix_index import PrefixIndex, block_keys
from router.prompt_text import render_answer

_CHARS_PER_TOKEN = 4  # to turn a worker's KV capacity in tokens into a block budget


class CacheAware(BasePolicy):
    """Prefix affinity with load balance; see the module docstring for the rules."""

    name = "cache_aware"

    def __init__(self, config: CacheAwareConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header
        self._config = config
        self._index = PrefixIndex(config.max_blocks_per_worker)

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        config = self._config
        keys = block_keys(request.prompt, config.block_chars)
        idlest = min(workers, key=lambda w: w.load)
        busiest = max(w.load for w in workers)
        if (busiest - idlest.load > config.balance_abs_threshold
                and busiest > idlest.load * config.balance_rel_threshold):
            return self._place(idlest, keys, "load_imbalance", {})
        matched = self._index.match(keys, (w.id for w in workers))
        total = max(len(keys), 1)
        scores = {w.id: matched[w.id] / total for w in workers if matched[w.id]}
        # the sticky key (session, user, else API key) keeps templated conversations whose heads
        # are identical from all sharing one home; every replica still computes the same one
        home = rendezvous_pick(f"{request.sticky_key}\x00{request.head}", workers)
        best = max(workers, key=lambda w: (matched[w.id], w is home, -w.load))
        past_head = matched[best.id] * config.block_chars > request.head_chars
        if best is not home and past_head and matched[best.id] / total >= config.cache_threshold:
            pick, reason = best, "conversation_match"
        else:
            pick, reason = home, ("home_hit" if matched[home.id] else "home_miss")
        if pick.load - idlest.load > config.balance_abs_threshold:
            longest = matched[best.id]
            holders = [w for w in workers if matched[w.id] == longest]
            pick, reason = min(holders, key=lambda w: w.load), reason + "_overloaded"
        return self._place(pick, keys, reason, scores)

    def _place(self, worker: WorkerView, keys: list[int], reason: str,
               scores: dict[str, float]) -> Selection:
        if worker.capacity_tokens:
            blocks = worker.capacity_tokens * _CHARS_PER_TOKEN // self._config.block_chars
            self._index.set_limit(worker.id, blocks)
        # optimistic: the worker will hold the prompt once it has prefilled it
        self._index.insert(worker.id, keys)
        return Selection(worker, reason=reason, scores=scores)

    def on_outcome(self, worker_id: str, request: RoutingRequest, completion: str) -> None:
        """SGLang caches the generated tokens too: the next turn's prompt starts with them."""
        if completion:
            keys = block_keys(request.prompt + render_answer(completion), self._config.block_chars)
            self._index.insert(worker_id, keys)

    def on_worker_removed(self, worker_id: str) -> None:
        self._index.remove_worker(worker_id)

    def tree_size(self, worker_id: str) -> int:
        """Blocks remembered for one worker (for tests and metrics)."""
        return self._index.size(worker_id)
