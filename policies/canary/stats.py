"""Per-version statistics of a rollout over one window (its current step), bounded in size.

A window counts requests, errors and moderation blocks, and keeps TTFT and end-to-end
latencies in log-spaced histograms (8 buckets per doubling from 1 ms to ~17 min, so a
quantile is within ~4.5% of the true value whatever the traffic). Histograms merge by
adding counts, which is what makes them shareable: each replica adds its counts to one
Redis hash per (window, version) with ``HINCRBY``, and any replica reads the sum.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from policies.redis_client import RedisClient

_PER_DOUBLING = 8
_BUCKETS = 160  # 1 ms * 2**(160/8) = 2**20 ms, ~17.5 minutes
_BASE_S = 0.001


def _bound(index: int) -> float:
    """Lower edge of bucket ``index``, in seconds."""
    return _BASE_S * 2 ** (index / _PER_DOUBLING)


_EDGES = tuple(_bound(i) for i in range(_BUCKETS))


def bucket_of(seconds: float) -> int:
    """The histogram bucket holding ``seconds`` (under 1 ms: bucket 0; over the top: the last)."""
    # a binary search over the edges: half the cost of a log2, and the same edges as _bound
    index = bisect_right(_EDGES, seconds) - 1
    return max(0, index)


@dataclass(slots=True)
class Histogram:
    """Counts of latencies per log-spaced bucket; sparse (only buckets seen are stored)."""

    counts: dict[int, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.counts.values())

    def add(self, seconds: float, count: float = 1) -> None:
        index = bucket_of(seconds)
        self.counts[index] = self.counts.get(index, 0) + count

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated geometrically inside its bucket; None if empty."""
        total = self.total
        if total <= 0:
            return None
        rank, seen = q * total, 0.0
        for index in sorted(self.counts):
            count = self.counts[index]
            if seen + count >= rank:
                inside = (rank - seen) / count if count else 0.0
                return _bound(index) * 2 ** (inside / _PER_DOUBLING)
            seen += count
        return _bound(max(self.counts) + 1)

    def count_above(self, threshold: float) -> float:
        """How many samples exceed ``threshold`` (a share of the bucket holding it, interpolated)."""
        edge = bucket_of(threshold)
        above = 0.0
        for index, count in self.counts.items():
            if index > edge:
                above += count
            elif index == edge:
                low, high = _bound(index), _bound(index + 1)
                inside = math.log2(max(threshold, low) / low) / math.log2(high / low)
                above += count * (1.0 - min(1.0, inside))
        return above


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request to one version came to, as the gateway saw it."""

    ok: bool
    """The version answered (a complete response, or a stream that ended normally)."""
    status: int | None = None
    """The HTTP status answered for the version (None: no answer at all, e.g. a timeout)."""
    ttft_s: float | None = None
    """Seconds to the first byte of the answer: the first chunk of a stream, the whole
    response otherwise. None when nothing arrived."""
    e2e_s: float | None = None
    """Seconds from sending the request to the end of the answer."""
    moderation_blocked: bool = False
    """Output moderation stopped or blocked the answer."""

    @property
    def is_error(self) -> bool:
        """A failure of the version: no answer, a 5xx or a 429. A 4xx is the client's doing."""
        return not self.ok and (self.status is None or self.status >= 500 or self.status == 429)


@dataclass(slots=True)
class VersionStats:
    """One version's counts over one window."""

    requests: float = 0
    errors: float = 0
    blocks: float = 0
    ttft: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)

    def add(self, outcome: Outcome) -> None:
        """Count one outcome; latencies of failed requests only count towards TTFT."""
        self.requests += 1
        if outcome.is_error:
            self.errors += 1
        if outcome.moderation_blocked:
            self.blocks += 1
        if outcome.ttft_s is not None:
            self.ttft.add(outcome.ttft_s)
        if outcome.ok and outcome.e2e_s is not None:
            self.e2e.add(outcome.e2e_s)

    def merge(self, other: VersionStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.blocks += other.blocks
        self.ttft.merge(other.ttft)
        self.e2e.merge(other.e2e)

    def fields(self) -> dict[str, float]:
        """The counts as Redis hash fields (``n``, ``err``, ``blk``, ``t:<bucket>``, ``e:<bucket>``)."""
        out = {"n": self.requests, "err": self.errors, "blk": self.blocks}
        out.update({f"t:{i}": c for i, c in self.ttft.counts.items()})
        out.update({f"e:{i}": c for i, c in self.e2e.counts.items()})
        return {k: v for k, v in out.items() if v}

    @classmethod
    def from_fields(cls, fields: Mapping[str, float]) -> VersionStats:
        stats = cls(fields.get("n", 0), fields.get("err", 0), fields.get("blk", 0))
        for name, value in fields.items():
            kind, _, index = name.partition(":")
            if kind == "t":
                stats.ttft.counts[int(index)] = value
            elif kind == "e":
                stats.e2e.counts[int(index)] = value
        return stats

    def summary(self) -> dict[str, float | None]:
        """Requests, rates and p95s, for the admin API."""
        n = self.requests
        return {"requests": n, "error_rate": self.errors / n if n else None,
                "moderation_block_rate": self.blocks / n if n else None,
                "ttft_p95_s": self.ttft.quantile(0.95), "e2e_p95_s": self.e2e.quantile(0.95)}


@dataclass(frozen=True, slots=True)
class Window:
    """The statistics window of one step of one rollout."""

    model: str
    rollout: str
    epoch: int
    """Bumped by every transition, so each step is judged on its own traffic."""


Batch = dict[tuple[Window, str], VersionStats]
"""Counts to add, per (window, version)."""


class StatsStore(Protocol):
    """Where windows accumulate: this process only, or every replica through Redis."""

    async def add(self, batch: Batch) -> None: ...

    async def read(self, window: Window, versions: Iterable[str]) -> dict[str, VersionStats]: ...


class MemoryStatsStore:
    """Windows in a dict; windows not written for ``ttl_s`` are dropped, so it stays bounded."""

    def __init__(self, ttl_s: float = 86_400.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._windows: dict[tuple[Window, str], tuple[float, VersionStats]] = {}
        self._ttl_s = ttl_s
        self._clock = clock

    async def add(self, batch: Batch) -> None:
        now = self._clock()
        for key, delta in batch.items():
            _, stats = self._windows.get(key) or (now, VersionStats())
            stats.merge(delta)
            self._windows[key] = (now, stats)
        for key in [k for k, (at, _) in self._windows.items() if now - at > self._ttl_s]:
            del self._windows[key]

    async def read(self, window: Window, versions: Iterable[str]) -> dict[str, VersionStats]:
        out = {}
        for version in versions:
            _, found = self._windows.get((window, version)) or (0.0, VersionStats())
            copy = VersionStats()
            copy.merge(found)
            out[version] = copy
        return out


class RedisStatsStore:
    """One hash per (window, version) at ``<prefix>:stats:<model>:<rollout>:<epoch>:<version>``.

    Counts are whole numbers added with ``HINCRBY``, in one pipeline per batch; each hash
    expires ``ttl_s`` after its last write. A hash holds at most 3 + 2 x 160 fields.
    """

    def __init__(self, client: RedisClient, prefix: str, ttl_s: float = 86_400.0) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)

    def key(self, window: Window, version: str) -> str:
        return f"{self._prefix}:stats:{window.model}:{window.rollout}:{window.epoch}:{version}"

    async def add(self, batch: Batch) -> None:
        if not batch:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for (window, version), delta in batch.items():
                key = self.key(window, version)
                for name, value in delta.fields().items():
                    pipe.hincrby(key, name, int(value))
                pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def read(self, window: Window, versions: Iterable[str]) -> dict[str, VersionStats]:
        names = list(versions)
        async with self._client.pipeline(transaction=False) as pipe:
            for version in names:
                pipe.hgetall(self.key(window, version))
            raw = await pipe.execute()
        return {version: VersionStats.from_fields({_text(k): float(v) for k, v in fields.items()})
                for version, fields in zip(names, raw, strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
