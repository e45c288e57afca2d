"""Rate limits and budgets that survive a Redis outage: fall back per process, or answer 503.

``ResilientRateLimiter`` and ``ResilientLedger`` wrap a Redis implementation and its memory
twin. A Redis error or a call slower than ``redis_timeout_s`` is an outage: each limit then does
what its ``on_redis_failure`` says (``fail_open``: the memory twin enforces it per process;
``fail_closed``: ``LimitStoreUnavailableError``, a 503). After a failure Redis is left alone for
``redis_retry_interval_s``, so requests do not each wait for a timeout. ``StoreHealth`` counts
failures, fallbacks and rejections and logs at most once per ``outage_log_interval_s``.

Charges that could not reach Redis are kept (bounded) and replayed once it answers again; charges
are idempotent by request id, so a charge whose reply was lost is not counted twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as redis

from backends.errors import ServiceUnavailableError
from policies.limits_config import LimitsStoreConfig
from policies.rate_limit import RateDecision, RateLimiter, RateScope
from policies.spend import BudgetScope, BudgetStatus, Charge, UsageLedger, UsageReport

log = logging.getLogger("switchyard.policies.resilient")

T = TypeVar("T")
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
"""What counts as the store failing (redis-py errors, sockets, our timeout)."""
_MAX_PENDING = 10_000
_REPLAY_BATCH = 50  # charges replayed per call, so no single request pays for the whole backlog


class LimitStoreUnavailableError(ServiceUnavailableError):
    """Redis is unreachable and a limit of this request is ``fail_closed``."""

    code = "limit_store_unavailable"


@dataclass(slots=True)
class OutageCounters:
    """What ``StoreHealth`` has counted since the process started."""

    failures: int = 0
    """Calls to Redis that failed or timed out."""
    outages: int = 0
    """Times Redis went from answering to failing."""
    fallbacks: int = 0
    """Decisions taken by the per-process twin instead (``fail_open``)."""
    rejections: int = 0
    """Requests answered 503 (``fail_closed``)."""
    replayed: int = 0
    """Charges replayed to Redis after an outage."""
    dropped: int = 0
    """Charges lost because too many were waiting for Redis."""


class StoreHealth:
    """Whether to try Redis now; counts and logs its failures.

    Args:
        name: What the store serves, for logs (``rate limits``, ``budgets``).
        config: Timeouts and intervals.
        clock: Monotonic seconds.
    """

    def __init__(self, name: str, config: LimitsStoreConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config or LimitsStoreConfig()
        self.counters = OutageCounters()
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._logged_at = -float("inf")
        self._unlogged = 0

    @property
    def is_down(self) -> bool:
        """Whether the last call to Redis failed."""
        return self._down_since is not None

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation with the timeout; record the outcome; re-raise a failure.

        Raises one of ``STORE_ERRORS`` without calling Redis during the retry interval.
        """
        if self.is_down and self._clock() < self._retry_at:
            raise ConnectionError(f"Redis for {self.name} is down; not retried yet")
        try:
            result = await asyncio.wait_for(operation(), self.config.redis_timeout_s)
        except STORE_ERRORS as exc:
            self._on_failure(exc)
            raise
        self._on_success()
        return result

    def _on_failure(self, exc: BaseException) -> None:
        now = self._clock()
        self.counters.failures += 1
        self._unlogged += 1
        self._retry_at = now + self.config.redis_retry_interval_s
        if self._down_since is None:
            self._down_since = now
            self.counters.outages += 1
        if now - self._logged_at >= self.config.outage_log_interval_s:
            log.warning("Redis for %s is failing (%d failures since last report, down %.1fs): %r",
                        self.name, self._unlogged, now - self._down_since, exc)
            self._logged_at, self._unlogged = now, 0

    def _on_success(self) -> None:
        if self._down_since is not None:
            log.warning("Redis for %s answers again after %.1fs", self.name,
                        self._clock() - self._down_since)
            self._down_since = None
            self._logged_at, self._unlogged = -float("inf"), 0


def _unavailable(health: StoreHealth, scope_ids: Sequence[str]) -> LimitStoreUnavailableError:
    health.counters.rejections += 1
    return LimitStoreUnavailableError(
        f"The {health.name} store is unavailable, and the limits of {', '.join(scope_ids)} do not"
        " allow serving without it. Please try again shortly.", headers={"retry-after": "1"})


class ResilientRateLimiter:
    """A ``RateLimiter`` over Redis that falls back to memory or 503s per limit.

    Args:
        primary: The shared limiter (``RedisRateLimiter``).
        fallback: The per-process twin (``MemoryRateLimiter``).
        health: Shared outage bookkeeping.
    """

    def __init__(self, primary: RateLimiter, fallback: RateLimiter, health: StoreHealth) -> None:
        self._primary, self._fallback, self.health = primary, fallback, health

    async def admit(self, scopes: Sequence[RateScope], requests: int = 1, tokens: int = 0,
                    now: float | None = None) -> RateDecision:
        try:
            return await self.health.call(lambda: self._primary.admit(scopes, requests, tokens, now))
        except STORE_ERRORS:
            pass
        closed = [s.id for s in scopes if s.limits.on_redis_failure == "fail_closed"]
        if closed:
            raise _unavailable(self.health, closed)
        self.health.counters.fallbacks += 1
        return await self._fallback.admit(scopes, requests, tokens, now)

    async def adjust(self, scopes: Sequence[RateScope], token_delta: int,
                     now: float | None = None) -> None:
        try:
            await self.health.call(lambda: self._primary.adjust(scopes, token_delta, now))
        except STORE_ERRORS:
            await self._fallback.adjust(scopes, token_delta, now)


class ResilientLedger:
    """A ``UsageLedger`` over Redis that falls back to memory or 503s per budget.

    A charge that cannot reach Redis goes to the memory twin (so per-process budgets see it) and
    into a queue replayed, oldest first, as soon as Redis answers again.

    Args:
        primary: The shared ledger (``RedisUsageLedger``).
        fallback: The per-process twin (``MemoryUsageLedger``).
        health: Shared outage bookkeeping.
    """

    def __init__(self, primary: UsageLedger, fallback: UsageLedger, health: StoreHealth) -> None:
        self._primary, self._fallback, self.health = primary, fallback, health
        self._pending: deque[tuple[list[str], Charge, float]] = deque()

    @property
    def pending(self) -> int:
        """Charges waiting to be replayed to Redis."""
        return len(self._pending)

    async def check(self, scopes: Sequence[BudgetScope], estimate_tokens: int = 0,
                    now: float | None = None) -> BudgetStatus:
        try:
            status = await self.health.call(lambda: self._primary.check(scopes, estimate_tokens, now))
        except STORE_ERRORS:
            closed = [s.id for s in scopes if s.budget.on_redis_failure == "fail_closed"]
            if closed:
                raise _unavailable(self.health, closed) from None
            self.health.counters.fallbacks += 1
            return await self._fallback.check(scopes, estimate_tokens, now)
        await self._replay()
        return status

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        at = time.time() if now is None else now
        try:
            charged = await self.health.call(lambda: self._primary.charge(scope_ids, charge, at))
        except STORE_ERRORS:
            self._keep(list(scope_ids), charge, at)
            return await self._fallback.charge(scope_ids, charge, at)
        await self._replay()
        return charged

    async def report(self, scope_id: str, days: int, now: float | None = None) -> UsageReport:
        try:
            return await self.health.call(lambda: self._primary.report(scope_id, days, now))
        except STORE_ERRORS:
            raise _unavailable(self.health, [scope_id]) from None

    async def flush(self) -> int:
        """Replay every waiting charge now (call it before shutdown); returns how many are left."""
        before = -1
        while self._pending and len(self._pending) != before:
            before = len(self._pending)
            await self._replay()
        return len(self._pending)

    def _keep(self, scope_ids: list[str], charge: Charge, at: float) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self._pending.popleft()
            self.health.counters.dropped += 1
        self._pending.append((scope_ids, charge, at))

    async def _replay(self) -> None:
        for _ in range(min(len(self._pending), _REPLAY_BATCH)):
            if self.health.is_down:
                return
            scope_ids, charge, at = self._pending[0]
            try:
                await self.health.call(functools.partial(self._primary.charge, scope_ids, charge, at))
            except STORE_ERRORS:
                return
            self._pending.popleft()
            self.health.counters.replayed += 1
