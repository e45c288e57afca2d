"""Rate limits and budgets that survive a Redis outage: fall back per process, or answer 503.

``ResilientRateLimiter`` and ``ResilientLedger`` wrap a Redis implementation and its memory
twin. A Redis error or a call slower than ``redis_timeout_s`` is an outage: each limit then does
what its ``on_redis_failure`` says (``fail_open``: the memory twin enforces it per process;
``fail_closed``: ``LimitStoreUnavailableError``, a 503). After a failure Redis is left alone for
``redis_retry_interval_s``, so requests do not each wait for a timeout. ``StoreHealth`` counts
failures, fallbacks and rejections and logs at most once per ``outage_log_interval_s``.

Charges that could not reach Redis are kept (bounded, and journalled to a local file when
``charge_journal_dir`` is set, so a stop or a crash during the outage does not lose them) and
replayed once it answers again, by one replayer at a time, in order, also from a background
loop and before a usage report; charges are idempotent by request id, so a charge whose reply
was lost is not counted twice. Rate-limit corrections that could not reach Redis are replayed
the same way while they still matter (a bucket refills within its burst window).
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

import redis.asyncio  # noqa: F401 - loaded here, so store_errors() includes redis-py's errors

from backends.errors import ServiceUnavailableError
from policies.charge_journal import ChargeJournal, Entry
from policies.limits_config import LimitsStoreConfig
from policies.rate_limit import RateDecision, RateLimiter, RateScope
from policies.redis_client import store_errors
from policies.reservation import Cost, Reservation
from policies.spend import (
    BudgetScope,
    BudgetStatus,
    Charge,
    ReserveOutcome,
    UsageLedger,
    UsageReport,
)

log = logging.getLogger("switchyard.policies.resilient")

T = TypeVar("T")
STORE_ERRORS: tuple[type[BaseException], ...] = store_errors()
"""What counts as the store failing (redis-py errors, sockets, our timeout)."""
_MAX_PENDING = 10_000
_REPLAY_BATCH = 50  # charges replayed per call, so no single request pays for the whole backlog
_ADJUST_WINDOW_S = 3_600.0  # longest burst window (60 minutes): older corrections no longer matter


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
        self._pending: deque[tuple[Sequence[RateScope], int, float]] = deque()
        self._replaying = asyncio.Lock()

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
            if len(self._pending) >= _MAX_PENDING:
                self._pending.popleft()
            self._pending.append((scopes, token_delta, time.time() if now is None else now))
            return
        await self.replay()

    async def replay(self) -> None:
        """Send corrections kept during an outage, oldest first, one replayer at a time.

        Each one is applied at Redis's present time (the debt or the refund still matters now,
        unless older than the longest burst window, after which the bucket is full anyway)."""
        if not self._pending or self._replaying.locked():
            return
        async with self._replaying:
            while self._pending:  # health.call refuses at once while Redis is left alone
                scopes, delta, at = self._pending[0]
                if time.time() - at < _ADJUST_WINDOW_S:
                    try:
                        await self.health.call(functools.partial(self._primary.adjust, scopes, delta))
                    except STORE_ERRORS:
                        return
                self._pending.popleft()


class ResilientLedger:
    """A ``UsageLedger`` over Redis that falls back to memory or 503s per budget.

    A reservation that cannot be made in Redis is made in the memory twin (``fail_open``). A
    settlement that cannot reach Redis goes to the memory twin (so per-process budgets see it)
    and into a queue (and the journal, if any) replayed, oldest first, once Redis answers again.

    Args:
        primary: The shared ledger (``RedisUsageLedger``).
        fallback: The per-process twin (``MemoryUsageLedger``).
        health: Shared outage bookkeeping.
        journal: Where waiting charges are also written, to survive a stop or a crash.
    """

    def __init__(self, primary: UsageLedger, fallback: UsageLedger, health: StoreHealth,
                 journal: ChargeJournal | None = None) -> None:
        self._primary, self._fallback, self.health = primary, fallback, health
        self._journal = journal
        self._pending: deque[Entry] = deque(journal.adopt() if journal else ())
        self._replaying = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Charges waiting to be replayed to Redis."""
        return len(self._pending)

    async def reserve(self, scopes: Sequence[BudgetScope], cost: Cost, request_id: str, model: str,
                      expires_at: float, now: float | None = None) -> ReserveOutcome:
        try:
            outcome = await self.health.call(
                lambda: self._primary.reserve(scopes, cost, request_id, model, expires_at, now))
        except STORE_ERRORS:
            closed = [s.id for s in scopes if s.budget is not None and s.budget.on_redis_failure == "fail_closed"]
            if closed:
                raise _unavailable(self.health, closed) from None
            self.health.counters.fallbacks += 1
            return await self._fallback.reserve(scopes, cost, request_id, model, expires_at, now)
        await self.replay()
        return outcome

    async def settle(self, reservation: Reservation, charge: Charge, now: float | None = None) -> bool:
        at = time.time() if now is None else now
        if not reservation.shared:  # made in the twin during an outage: release it there
            await self._fallback.settle(reservation, charge, at)
            return await self._send(list(reservation.scope_ids), charge, at, None)
        return await self._send(list(reservation.scope_ids), charge, at, reservation)

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        return await self._send(list(scope_ids), charge, time.time() if now is None else now, None)

    async def renew(self, reservations: Sequence[Reservation], expires_at: float) -> None:
        await self._fallback.renew([r for r in reservations if not r.shared], expires_at)
        shared = [r for r in reservations if r.shared]
        if shared:
            try:
                await self.health.call(lambda: self._primary.renew(shared, expires_at))
            except STORE_ERRORS:
                pass  # reservations last reservation_ttl_s: the next renewal has time to land

    async def sweep(self, now: float | None = None) -> list[tuple[tuple[str, ...], Charge]]:
        at = time.time() if now is None else now
        charges = await self._fallback.sweep(at)
        for scope_ids, charge in charges:  # leaked in this process during an outage: Redis too
            await self._send(list(scope_ids), charge, at, None, twin=False)
        try:
            charges += await self.health.call(lambda: self._primary.sweep(at))
        except STORE_ERRORS:
            pass
        await self.replay()
        return charges

    async def check(self, scopes: Sequence[BudgetScope], estimate_tokens: int = 0,
                    now: float | None = None) -> BudgetStatus:
        try:
            status = await self.health.call(lambda: self._primary.check(scopes, estimate_tokens, now))
        except STORE_ERRORS:
            closed = [s.id for s in scopes if s.budget is not None and s.budget.on_redis_failure == "fail_closed"]
            if closed:
                raise _unavailable(self.health, closed) from None
            self.health.counters.fallbacks += 1
            return await self._fallback.check(scopes, estimate_tokens, now)
        await self.replay()
        return status

    async def report(self, scope_id: str, days: int, now: float | None = None) -> UsageReport:
        await self.flush()  # what waits for Redis belongs in the report
        try:
            return await self.health.call(lambda: self._primary.report(scope_id, days, now))
        except STORE_ERRORS:
            raise _unavailable(self.health, [scope_id]) from None

    async def flush(self) -> int:
        """Replay every waiting charge now (call it before shutdown); returns how many are left."""
        before = -1
        while self._pending and len(self._pending) != before:
            before = len(self._pending)
            await self.replay()
        return len(self._pending)

    def take_over(self, previous: object) -> None:
        """Adopt the charges still waiting in the ledger this one replaces (a policy changed
        ``limits``), so they are replayed here and not lost with it."""
        if isinstance(previous, ResilientLedger) and previous is not self:
            while previous._pending:
                self._keep(previous._pending.popleft())
            if previous._journal is not None:
                previous._journal.clear()

    def close(self) -> None:
        """Release the journal file (kept while charges still wait, for the next start)."""
        if self._journal is not None:
            self._journal.close()

    async def _send(self, scope_ids: list[str], charge: Charge, at: float, reservation: Reservation | None,
                    twin: bool = True) -> bool:
        try:
            if reservation is None:
                charged = await self.health.call(lambda: self._primary.charge(scope_ids, charge, at))
            else:
                charged = await self.health.call(lambda: self._primary.settle(reservation, charge, at))
        except STORE_ERRORS:
            self._keep((scope_ids, charge, at, reservation))
            return await self._fallback.charge(scope_ids, charge, at) if twin else True
        await self.replay()
        return charged

    def _keep(self, entry: Entry) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self._pending.popleft()
            self.health.counters.dropped += 1
        self._pending.append(entry)
        if self._journal is not None:
            try:
                self._journal.append(entry)
            except OSError as exc:
                log.error("cannot journal a charge waiting for Redis (kept in memory): %s", exc)

    async def replay(self) -> None:
        """Send waiting charges to Redis, oldest first, one replayer at a time (a second caller
        returns at once: the running replayer takes what it queued too)."""
        if not self._pending or self._replaying.locked():
            return
        async with self._replaying:
            for _ in range(min(len(self._pending), _REPLAY_BATCH)):
                scope_ids, charge, at, reservation = self._pending[0]
                operation = (functools.partial(self._primary.charge, scope_ids, charge, at) if reservation is None
                             else functools.partial(self._primary.settle, reservation, charge, at))
                try:
                    await self.health.call(operation)
                except STORE_ERRORS:
                    return
                self._pending.popleft()
                self.health.counters.replayed += 1
            if not self._pending and self._journal is not None:
                self._journal.clear()
