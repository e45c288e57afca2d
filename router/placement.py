"""Where each conversation runs, shared by the gateway replicas so they all send it there.

A replica that meets a conversation for the first time on a later turn (another replica routed
the earlier ones) has no tree entry for it. Its own line would place it where *its* counts
put it, which differs from the first replica's near the slices' cuts. Instead it asks this
table, written when a conversation is placed (or moved), and sends the turn to the worker
holding the history. Keys are a stable hash of the conversation's identity (sticky key and
head), values the worker's address, so every replica (and one started mid-traffic) reads the
same answer. In Redis with ``REDIS_URL`` (``gateway.stores.placement_store``); a replica alone
needs none.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import islice
from typing import Protocol

from router.base import RoutingRequest
from router.hashing import stable_hash


class PlacementStore(Protocol):
    """A shared map of conversation keys to worker addresses, with expiry."""

    async def get(self, key: str) -> str | None:
        """The address of the worker that holds the conversation, if known (errors: None)."""
        ...

    async def put(self, key: str, address: str) -> None:
        """Record that the conversation now runs on ``address`` (errors are swallowed)."""
        ...

    async def publish_start(self, group: str, worker_id: str) -> None:
        """Tell the other replicas that a new conversation of ``group`` started on ``worker_id``."""
        ...

    async def starts_elsewhere(self) -> list[tuple[str, str]]:
        """The ``(group, worker_id)`` starts other replicas published since the last call;
        calls that overlap return each start once, to one of them."""
        ...

    async def record(self, placement: tuple[str, str] | None, start: tuple[str, str] | None) -> None:
        """What one routing decision writes: ``put(*placement)`` and ``publish_start(*start)``,
        each if given, in one round trip where the store has round trips."""
        ...


def placement_key(request: RoutingRequest) -> str:
    """The conversation's identity, the same on every replica: its sticky key and head."""
    return stable_hash(f"{request.sticky_key}\x00{request.head}").hex()


class _StartLog:
    """The starts the views of one table published, numbered; only the last ``limit`` are
    kept (a serving replica publishes one per new conversation for as long as it runs), and
    none while the table has one view (nobody else could read them)."""

    def __init__(self, limit: int) -> None:
        self.entries: deque[tuple[int, str, str]] = deque(maxlen=limit)
        self.first = 0  # number of the oldest entry kept
        self.views = 1

    @property
    def end(self) -> int:
        return self.first + len(self.entries)

    def append(self, entry: tuple[int, str, str]) -> None:
        if self.views == 1:
            return
        if len(self.entries) == self.entries.maxlen:
            self.first += 1
        self.entries.append(entry)

    def since(self, number: int) -> list[tuple[int, str, str]]:
        """The entries from ``number`` on (those already dropped are missed)."""
        return list(islice(self.entries, max(0, number - self.first), None))


class MemoryPlacementStore:
    """A bounded in-process table: one replica's own, or replicas modelled in one process
    (the benchmark's model: each replica takes a ``view()``, sharing the table and the starts).
    The starts log keeps as many entries as the table; a view further behind misses the oldest."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._max = max_entries
        self._starts = _StartLog(max_entries)
        self._origin = 0
        self._cursor = 0

    def view(self) -> MemoryPlacementStore:
        """Another replica's handle on the same table and starts."""
        self._starts.views += 1
        other = MemoryPlacementStore.__new__(MemoryPlacementStore)
        other._entries, other._max, other._starts = self._entries, self._max, self._starts
        other._origin, other._cursor = self._starts.views - 1, self._starts.end  # the table's own: 0
        return other

    async def publish_start(self, group: str, worker_id: str) -> None:
        self._starts.append((self._origin, group, worker_id))

    async def starts_elsewhere(self) -> list[tuple[str, str]]:
        new = self._starts.since(self._cursor)
        self._cursor = self._starts.end
        return [(group, worker) for origin, group, worker in new if origin != self._origin]

    async def get(self, key: str) -> str | None:
        return self._entries.get(key)

    async def record(self, placement: tuple[str, str] | None, start: tuple[str, str] | None) -> None:
        if placement is not None:
            await self.put(*placement)
        if start is not None:
            await self.publish_start(*start)

    async def put(self, key: str, address: str) -> None:
        self._entries[key] = address
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
