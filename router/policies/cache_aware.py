"""Cache-aware selection: send a prompt where its prefix is cached, without overloading anyone.

The decision, in order:

1. **Load imbalance wins.** If the busiest worker carries ``balance_abs_threshold`` more
   requests than the idlest *and* ``balance_rel_threshold`` times as many, the idlest takes it.
2. **A conversation follows its own history.** A later turn goes to the worker with the
   longest match if that covers the prompt's head (system prompt + first user turn): the
   conversation ran there before.
3. **Otherwise its place on the line.** Conversations are laid on a line ordered by a stable
   hash of their first ``group_chars`` characters, so those sharing a long system prompt sit
   side by side, each prompt group taking a length proportional to its share of recent new
   conversations. The workers cut the line into slices, one each, in a stable order. A
   conversation goes to the worker whose slice holds its point, so a worker serves one or
   two system prompts instead of all of them. A worker that started more than its share of
   recent conversations gets a narrower slice (``balance_gain``), so requests stay even.
   Replicas compute the line from their own counts: the same hashes, nearly the same lengths.
4. A pick that is overloaded (``balance_abs_threshold`` above the idlest) hands the request
   to the least loaded of the workers holding the longest match.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.base import BasePolicy, RoutingRequest, Selection, WorkerView
from router.config import CacheAwareConfig
from router.hashing import stable_hash
from router.placement import MemoryPlacementStore, PlacementStore, placement_key
from router.prefix_index import PrefixIndex, block_keys
from router.prompt_text import render_answer

_BUCKETS = 1024
"""Positions of prompt groups on the line; two large groups rarely share one."""
_PRIOR = 1.0
"""New conversations assumed spread evenly over the buckets before any is counted."""
_PSEUDO = 5.0
"""Conversations every worker is assumed to have started, so the first few do not swing slices."""
_MIN_SLICE, _MAX_SLICE = 0.25, 4.0
"""Bounds of a slice relative to an even one."""
_FOLLOWED = frozenset({"conversation_match", "shared_placement"})
"""Reasons that keep a conversation where the shared table already has it: nothing to write."""


class ConversationLine:
    """Where new conversations go: prompt groups along a line, cut into one slice per worker.

    Counts fade: each new conversation multiplies older ones by ``1 - 1/window``, so the line
    follows the traffic of the last ``window`` conversations. Counts are kept scaled by a
    growing unit instead of decaying every entry.

    Args:
        window: New conversations the counts cover.
        gain: Exponent of the slice correction: a worker that started ``r`` times the mean
            gets ``r ** -gain`` of an even slice (bounded to 1/4 .. 4).
    """

    def __init__(self, window: int, gain: float) -> None:
        self._growth = 1 / (1 - 1 / window)
        self._gain = gain
        self._unit = 1.0
        self._buckets = [0.0] * _BUCKETS
        self._sums = _PrefixSums(_BUCKETS)  # the buckets again, summed in O(log n) per query
        self._total = 0.0
        self._started: dict[str, float] = {}
        self._ranks: dict[str, bytes] = {}

    def pick(self, group: bytes, point: float, workers: Sequence[WorkerView]) -> WorkerView:
        """The worker whose slice holds the conversation at ``point`` (in [0, 1)) of ``group``."""
        bucket = _bucket(group)
        buckets, unit = self._buckets, self._unit
        prior = _PRIOR / _BUCKETS
        before = self._sums.before(bucket) / unit + prior * bucket
        total = self._total / unit + _PRIOR
        at = (before + point * (buckets[bucket] / unit + prior)) / total
        ranked = sorted(workers, key=self._rank)
        loads = [self._started.get(w.id, 0.0) / unit + _PSEUDO for w in ranked]
        mean = sum(loads) / len(loads)
        widths = [min(_MAX_SLICE, max(_MIN_SLICE, (mean / load) ** self._gain)) for load in loads]
        edge, scale = 0.0, sum(widths)
        for worker, width in zip(ranked, widths, strict=True):
            edge += width / scale
            if at < edge:
                return worker
        return ranked[-1]

    def count(self, group: bytes, worker_id: str) -> None:
        """A new conversation of ``group`` started on ``worker_id``."""
        self._unit *= self._growth
        unit = self._unit
        bucket = _bucket(group)
        self._buckets[bucket] += unit
        self._sums.add(bucket, unit)
        self._total += unit
        self._started[worker_id] = self._started.get(worker_id, 0.0) + unit
        if unit > 1e12:  # rescale before the floats lose the small counts
            self._buckets = [b / unit for b in self._buckets]
            self._sums = _PrefixSums(_BUCKETS, self._buckets)
            self._total = sum(self._buckets)
            self._started = {w: s / unit for w, s in self._started.items()}
            self._unit = 1.0

    def forget(self, worker_id: str) -> None:
        self._started.pop(worker_id, None)

    def _rank(self, worker: WorkerView) -> bytes:
        rank = self._ranks.get(worker.address)
        if rank is None:
            if len(self._ranks) > 4096:  # addresses churned: keep the map bounded
                self._ranks.clear()
            rank = self._ranks[worker.address] = stable_hash(worker.address)
        return rank


def _bucket(group: bytes) -> int:
    return int.from_bytes(group[:4], "big") % _BUCKETS


class _PrefixSums:
    """Sums of the first ``i`` buckets in O(log n) (a Fenwick tree): a new conversation's
    point summed up to 1,024 buckets, ~10 µs of every request that starts one."""

    def __init__(self, size: int, values: list[float] | None = None) -> None:
        self._tree = [0.0] * (size + 1)
        for i, value in enumerate(values or ()):
            if value:
                self.add(i, value)

    def add(self, index: int, value: float) -> None:
        tree, i = self._tree, index + 1
        while i < len(tree):
            tree[i] += value
            i += i & -i

    def before(self, index: int) -> float:
        """Sum of the buckets before ``index``."""
        tree, i, total = self._tree, index, 0.0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total


class CacheAware(BasePolicy):
    """Prefix affinity with load balance; see the module docstring for the rules."""

    name = "cache_aware"

    def __init__(self, config: CacheAwareConfig, rng: random.Random | None = None) -> None:
        self.debug_header = config.debug_header
        self._config = config
        self._index = PrefixIndex(config.max_blocks_per_worker)
        self._line = ConversationLine(config.balance_window, config.balance_gain)
        # alone, the replica's own table: a turn whose history the tree cannot show (an answer
        # too short to fill the block past the head, a tree that evicted it) still finds it
        self._placements: PlacementStore = MemoryPlacementStore(config.balance_window * 100)

    def share_placements(self, store: PlacementStore) -> None:
        self._placements = store

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection:
        config = self._config
        keys = block_keys(request.prompt, config.block_chars)
        idlest = min(workers, key=lambda w: w.load)
        busiest = max(w.load for w in workers)
        if (busiest - idlest.load > config.balance_abs_threshold
                and busiest > idlest.load * config.balance_rel_threshold):
            return await self._place(idlest, request, keys, "load_imbalance", {}, None)
        matched = self._index.match(keys, (w.id for w in workers))
        total = max(len(keys), 1)
        scores = {w.id: matched[w.id] / total for w in workers if matched[w.id]}
        best = max(workers, key=lambda w: (matched[w.id], -w.load))
        # a later turn whose head a worker holds (with, usually, the turns since) ran there
        # before; a first turn's match is only a shared prompt, or an identical twin's head
        is_later_turn = len(request.prompt) > request.head_chars
        group = None
        shared = None
        if is_later_turn and matched[best.id] >= _head_blocks(request, config.block_chars, len(keys)):
            pick, reason = best, "conversation_match"
        elif is_later_turn and (shared := await self._shared(request, workers)) is not None:
            # placed by another replica: its history is there, whatever this replica's line says
            # (not counted on this replica's line: the replica that placed it counted it)
            pick, reason = shared, "shared_placement"
        else:
            group = self._group(request)
            await self._catch_up()
            pick = self._line.pick(group, _point(request), workers)
            reason = "home_hit" if matched[pick.id] else "home_miss"
        if pick.load - idlest.load > config.balance_abs_threshold:
            longest = matched[best.id]
            holders = [w for w in workers if matched[w.id] == longest]
            pick, reason = min(holders, key=lambda w: w.load), reason + "_overloaded"
        return await self._place(pick, request, keys, reason, scores, group)

    async def _catch_up(self) -> None:
        """Count the conversations the other replicas started since: their lines and ours alike."""
        for group, worker_id in await self._placements.starts_elsewhere():
            self._line.count(bytes.fromhex(group), worker_id)

    async def _shared(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> WorkerView | None:
        """The worker the shared table names for this conversation, if it is still selectable."""
        address = await self._placements.get(placement_key(request))
        return next((w for w in workers if w.address == address), None) if address else None

    def _group(self, request: RoutingRequest) -> bytes:
        """Stable hash of the shared prefix that groups conversations on the line."""
        chars = self._config.group_chars
        if chars and request.head_chars > chars:
            return stable_hash(request.prompt[:chars])
        # no prefix that long is shared: each conversation is its own group
        return stable_hash(_conversation(request))

    async def _place(self, worker: WorkerView, request: RoutingRequest, keys: list[int], reason: str,
                     scores: dict[str, float], group: bytes | None) -> Selection:
        """Record the pick. ``group``: set when the line placed the request (rule 3)."""
        config = self._config
        # a new conversation placed, or one moved: the other replicas must follow it
        placement = (placement_key(request), worker.address) if reason not in _FOLLOWED else None
        start: tuple[str, str] | None = None
        if worker.capacity_tokens:
            blocks = int(worker.capacity_tokens * config.chars_per_token) // config.block_chars
            self._index.set_limit(worker.id, blocks)
        if group is None and len(request.prompt) <= request.head_chars:
            group = self._group(request)  # a first turn placed by load alone still counts
        if group is not None and not request.retry:
            # a new conversation, or one new to this replica (another replica placed it, or
            # the tree forgot it): counting those too keeps replicas' lines alike. A retry's
            # start was counted by its first attempt (on the worker that failed it)
            self._line.count(group, worker.id)
            if len(request.prompt) <= request.head_chars:  # a start: the other replicas count it too
                start = (group.hex(), worker.id)
        if placement is not None or start is not None:  # a later turn where it was: nothing to tell
            await self._placements.record(placement, start)
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
        self._line.forget(worker_id)

    def tree_size(self, worker_id: str) -> int:
        """Blocks remembered for one worker (for tests and metrics)."""
        return self._index.size(worker_id)


def _head_blocks(request: RoutingRequest, block_chars: int, blocks: int) -> int:
    """Blocks a match must cover to show that this conversation ran on a worker.

    The block that runs past the head's end (its last characters and what came after: the
    first answer) is what only this conversation has. A match ending before it covers only
    the head's first blocks, which a shared system prompt fills when the opening user turn is
    short: that is any conversation of the group, not this one. (A turn too short to fill that
    block falls back to the head's full blocks.)
    """
    past_head = -(-request.head_chars // block_chars)
    if past_head > blocks:  # the turn is too short to fill that block: the head's full blocks
        past_head = request.head_chars // block_chars
    return max(1, past_head)


def _conversation(request: RoutingRequest) -> str:
    # the sticky key (session, user, else API key) keeps templated conversations whose heads
    # are identical apart; every replica still computes the same point
    return f"{request.sticky_key}\x00{request.head}"


def _point(request: RoutingRequest) -> float:
    """The conversation's stable position within its group, in [0, 1)."""
    return int.from_bytes(stable_hash(_conversation(request)), "big") / 2**64
