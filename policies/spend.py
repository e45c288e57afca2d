"""Token and money budgets per tenant and per key: usage ledgers, checks and reports.

Admission reserves the most a request can cost (``reserve``: check and hold in one atomic
step, see ``policies.reservation``); when it ends, ``settle`` releases the reservation and adds
the real usage, priced per model, to a per-day and a per-month record of every scope it counts
against (its key, its tenant): totals plus a breakdown by model. Settling is idempotent by
request id, so a charge retried after a lost reply (or replayed after a Redis outage) is never
counted twice. A reservation nobody renews (its gateway died) expires, and ``sweep`` charges it
in full. Days and months are UTC.

``MemoryUsageLedger`` serves one process and remembers charged ids for minutes;
``policies.spend_redis.RedisUsageLedger`` is shared by every replica.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from backends.errors import RateLimitedError
from backends.types import Usage
from policies.limits_config import BudgetConfig, PriceConfig
from policies.reservation import Cost, Held, Reservation, fits

Period = Literal["day", "month"]
Unit = Literal["tokens", "usd"]
DAY_S = 86_400
_MODEL_FIELDS = ("in", "cached", "out", "usd", "req")


class BudgetExceededError(RateLimitedError):
    """A tenant or key has used up a daily or monthly budget; retry when it resets."""

    status_code, error_type, code = 429, "insufficient_quota", "insufficient_quota"


@dataclass(frozen=True, slots=True)
class Charge:
    """One request's usage and its price, as charged to the ledger."""

    request_id: str
    model: str
    input_tokens: int
    """Prompt tokens not read from a cache."""
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def total_tokens(self) -> int:
        """What token budgets count: prompt plus completion."""
        return self.input_tokens + self.cached_input_tokens + self.output_tokens

    @classmethod
    def from_usage(cls, request_id: str, model: str, usage: Usage,
                   prices: PriceConfig | None) -> Charge:
        """Price ``usage`` (backend-reported, or counted for a cut stream) for ``model``."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        uncached = usage.prompt_tokens - cached
        cost = 0.0
        if prices is not None:
            cached_price = prices.input if prices.cached_input is None else prices.cached_input
            cost = (uncached * prices.input + cached * cached_price
                    + usage.completion_tokens * prices.output) / 1_000_000
        return cls(request_id, model, uncached, cached, usage.completion_tokens, cost)


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """One set of caps a request counts against, e.g. ``BudgetScope("tenant:acme", config)``;
    without caps (``budget`` None) it is only charged: its usage is still reported."""

    id: str
    budget: BudgetConfig | None


@dataclass(frozen=True, slots=True)
class PeriodTotals:
    """What one scope used in the current UTC day and month."""

    day_tokens: int = 0
    day_usd: float = 0.0
    month_tokens: int = 0
    month_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One cap of one scope, as checked."""

    scope: str
    period: Period
    unit: Unit
    limit: float
    used: float
    resets_in_s: float
    exceeded: bool
    held: float = 0.0
    """Reserved by the scope's requests in flight."""


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """The outcome of a budget check: allowed, and every cap looked at."""

    allowed: bool
    states: tuple[BudgetState, ...] = ()
    cost: Cost | None = None
    """What the request could cost, when it was a reservation that was refused."""

    def error(self) -> BudgetExceededError:
        """The 429 telling the client which budget is used up or too small, and when it resets."""
        over = [s for s in self.states if s.exceeded]
        wait = max((s.resets_in_s for s in over), default=1.0)
        parts = [f"{s.scope} has used {_amount(s.used, s.unit)} of its {_amount(s.limit, s.unit)}"
                 f" {'daily' if s.period == 'day' else 'monthly'} budget"
                 + (f" and holds {_amount(s.held, s.unit)} for requests in flight" if s.held else "")
                 + f" (resets in {_duration(s.resets_in_s)}, UTC)" for s in over]
        message = "Budget exceeded: " + "; ".join(parts) + "."
        if self.cost is not None:
            tokens, usd = self.cost.at(self.cost.output)
            message += (f" This request could use up to {tokens:,} tokens (${usd:,.6f}): its prompt"
                        f" and {self.cost.output:,} output tokens x {self.cost.choices} choice(s)."
                        " Lower max_tokens or n, or wait for the budget to reset.")
        return BudgetExceededError(message, retry_after_s=wait)


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """A reservation, or None and the status saying which cap refused it."""

    reservation: Reservation | None
    status: BudgetStatus


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage of one model on one UTC day."""

    day: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage of one scope over the last days, by model and day (newest day first)."""

    scope: str
    rows: list[UsageRow] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        """Every token in the report."""
        return sum(r.input_tokens + r.cached_input_tokens + r.output_tokens for r in self.rows)

    @property
    def total_usd(self) -> float:
        """Every dollar in the report."""
        return sum(r.cost_usd for r in self.rows)


class UsageLedger(Protocol):
    """Where reservations are held and charges accumulate; shared by replicas in Redis."""

    async def reserve(self, scopes: Sequence[BudgetScope], cost: Cost, request_id: str, model: str,
                      expires_at: float, now: float | None = None) -> ReserveOutcome:
        """Check every cap and hold what ``cost`` grants, atomically with other reservations."""
        ...

    async def settle(self, reservation: Reservation, charge: Charge, now: float | None = None) -> bool:
        """Release ``reservation`` and add ``charge``; False (nothing added) if already settled."""
        ...

    async def renew(self, reservations: Sequence[Reservation], expires_at: float) -> None:
        """Push the expiry of live reservations (their gateway is still serving them)."""
        ...

    async def sweep(self, now: float | None = None) -> list[tuple[tuple[str, ...], Charge]]:
        """Charge every expired reservation in full; the charges made, by scope ids."""
        ...

    async def check(self, scopes: Sequence[BudgetScope], estimate_tokens: int = 0,
                    now: float | None = None) -> BudgetStatus:
        """Whether every scope has budget left for a request estimated at ``estimate_tokens``."""
        ...

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        """Add ``charge`` to every scope; False (and nothing added) if its id was charged before."""
        ...

    async def report(self, scope_id: str, days: int, now: float | None = None) -> UsageReport:
        """Usage by model and day over the last ``days`` UTC days, today included."""
        ...


def grant(scopes: Sequence[BudgetScope], totals: Mapping[str, PeriodTotals], held: Mapping[str, Held],
          cost: Cost, now: float) -> tuple[int, BudgetStatus]:
    """Output tokens per choice granted (0: refused) and every cap looked at.

    A cap already used up refuses; a cap that cannot cover ``cost.output`` refuses when its
    budget rejects, and lowers the grant when it clamps (refusing below one token per choice).
    The Redis ledger's reserve script mirrors this.
    """
    day_reset, month_reset = resets_in(now)
    granted: float = cost.output
    states: list[BudgetState] = []
    for scope in scopes:
        budget = scope.budget
        used, hold = totals.get(scope.id, PeriodTotals()), held.get(scope.id, Held())
        need = cost.output if budget is not None and budget.max_tokens_overflow == "reject" else 1
        for period, unit, limit, spent, reset in _caps(budget, used, day_reset, month_reset):
            in_flight = hold.tokens if unit == "tokens" else hold.usd
            fixed, per = ((cost.prompt_tokens, cost.choices) if unit == "tokens"
                          else (cost.prompt_usd, cost.choices * cost.output_usd))
            room = -1 if spent >= limit else fits(limit - spent - in_flight, fixed, per)
            granted = min(granted, room)
            states.append(BudgetState(scope.id, period, unit, limit, spent, reset, room < need, in_flight))
    refused = any(s.exceeded for s in states) or granted < 1
    return (0 if refused else int(granted)), BudgetStatus(not refused, tuple(states), None if not refused else cost)


def _caps(budget: BudgetConfig | None, used: PeriodTotals, day_reset: float,
          month_reset: float) -> list[tuple[Period, Unit, float, float, float]]:
    if budget is None:
        return []
    caps: tuple[tuple[Period, Unit, float | None, float, float], ...] = (
        ("day", "tokens", budget.daily_tokens, used.day_tokens, day_reset),
        ("month", "tokens", budget.monthly_tokens, used.month_tokens, month_reset),
        ("day", "usd", budget.daily_usd, used.day_usd, day_reset),
        ("month", "usd", budget.monthly_usd, used.month_usd, month_reset))
    return [(p, u, limit, spent, r) for p, u, limit, spent, r in caps if limit is not None]


def evaluate(scopes: Sequence[BudgetScope], totals: Mapping[str, PeriodTotals], now: float,
             estimate_tokens: int = 0) -> BudgetStatus:
    """Check totals against caps: a cap is exceeded once used up, or when a token cap would
    be passed by the estimate."""
    day_reset, month_reset = resets_in(now)
    states: list[BudgetState] = []
    for scope in scopes:
        used = totals.get(scope.id, PeriodTotals())
        for period, unit, limit, spent, reset in _caps(scope.budget, used, day_reset, month_reset):
            extra = estimate_tokens if unit == "tokens" else 0
            exceeded = spent >= limit or spent + extra > limit
            states.append(BudgetState(scope.id, period, unit, limit, spent, reset, exceeded))
    return BudgetStatus(not any(s.exceeded for s in states), tuple(states))


def day_label(now: float) -> str:
    """The UTC day of ``now``, ``YYYY-MM-DD``."""
    return _day(int(now // DAY_S))[0]


def month_label(now: float) -> str:
    """The UTC month of ``now``, ``YYYY-MM``."""
    return _day(int(now // DAY_S))[1]


def resets_in(now: float) -> tuple[float, float]:
    """Seconds until the UTC day and the UTC month end."""
    day = int(now // DAY_S)
    return (day + 1) * DAY_S - now, _day(day)[2] - now


@functools.lru_cache(maxsize=8)
def _day(day: int) -> tuple[str, str, int]:
    """Day label, month label and the next month's first second (Unix time) of UTC day ``day``.

    Every request's ledger and budget check asks for these; a day's answers are computed once
    (``strftime`` and ``datetime`` on each call were ~3 % of a request's CPU, docs/performance.md).
    UTC days are exactly ``DAY_S`` long in Unix time (leap seconds are not counted).
    """
    today = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    first = today.replace(day=1)
    next_month = (first.replace(year=first.year + 1, month=1) if first.month == 12
                  else first.replace(month=first.month + 1))
    month_start = (next_month - dt.date(1970, 1, 1)).days * DAY_S
    return today.strftime("%Y-%m-%d"), today.strftime("%Y-%m"), month_start


def _amount(value: float, unit: str) -> str:
    if unit == "usd":  # small budgets need the cents' fractions
        return f"${value:,.2f}" if value >= 100 else f"${value:,.6f}".rstrip("0").rstrip(".")
    return f"{int(value):,} tokens"


def _duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def increments(charge: Charge) -> dict[str, float]:
    """The fields one charge adds to a day or month record (totals and the model's breakdown)."""
    model = charge.model
    return {f"{model}|in": charge.input_tokens, f"{model}|cached": charge.cached_input_tokens,
            f"{model}|out": charge.output_tokens, f"{model}|usd": charge.cost_usd,
            f"{model}|req": 1, "tokens": charge.total_tokens, "usd": charge.cost_usd,
            "requests": 1}


def usage_rows(day: str, fields: Mapping[str, float]) -> list[UsageRow]:
    """A day record's fields as one row per model."""
    models: dict[str, dict[str, float]] = {}
    for name, value in fields.items():
        model, sep, kind = name.rpartition("|")
        if sep and kind in _MODEL_FIELDS:
            models.setdefault(model, {})[kind] = value
    return [UsageRow(day, model, int(v.get("req", 0)), int(v.get("in", 0)), int(v.get("cached", 0)),
                     int(v.get("out", 0)), float(v.get("usd", 0.0)))
            for model, v in sorted(models.items())]


def _totals(day: Mapping[str, float], month: Mapping[str, float]) -> PeriodTotals:
    return PeriodTotals(int(day.get("tokens", 0)), float(day.get("usd", 0.0)),
                        int(month.get("tokens", 0)), float(month.get("usd", 0.0)))


def reservation_charge(reservation: Reservation) -> Charge:
    """The charge of an expired reservation: all of it (its gateway is gone and cannot say
    what was used; charging less could lose spend, charging this never passes a cap)."""
    return Charge(reservation.request_id, reservation.model, reservation.prompt_tokens, 0,
                  reservation.tokens - reservation.prompt_tokens, reservation.usd)


MEMORY_DEDUP_S = 600
"""Longest a process remembers a charged request id. Nothing retries a charge later than
seconds after it: ``settle`` charges once, the Redis fallback charges the twin once, and a
replay after an outage goes to Redis, whose own marker (``charge_dedup_s``) catches it."""
_MAX_REMEMBERED_IDS = 20_000
"""Charged request ids one process remembers (oldest forgotten first): ~4 MB at most, 200 s
of traffic at 100 req/s, still far longer than a retried charge takes to arrive."""


class MemoryUsageLedger:
    """The ledger in dicts: exact for one process, and the fail-open fallback for Redis.

    Args:
        retention_days: Days a day record is kept.
        dedup_s: Seconds a charged request id is remembered (at most ``_MAX_REMEMBERED_IDS``
            ids are: the oldest are forgotten first).
        clock: Unix time in seconds, used when a call passes no ``now``.
    """

    def __init__(self, retention_days: int = 93, dedup_s: float = MEMORY_DEDUP_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._records: dict[str, dict[str, float]] = {}
        # charged ids in charge order: expiries only grow, so expired ids sit at the front and
        # forgetting them is O(1) per charge, not a sweep of every id (which made each request
        # cost in proportion to all requests served)
        self._charged: OrderedDict[str, float] = OrderedDict()
        self._retention_days = retention_days
        self._dedup_s = dedup_s
        self._clock = clock
        self._swept_day = ""
        self._held: dict[str, Held] = {}
        self._reservations: dict[str, tuple[Reservation, float]] = {}
        """Live reservations by request id, with their expiry."""

    def _totals(self, scope_id: str, at: float) -> PeriodTotals:
        return _totals(self._records.get(f"{scope_id}|d|{day_label(at)}", {}),
                       self._records.get(f"{scope_id}|m|{month_label(at)}", {}))

    async def reserve(self, scopes: Sequence[BudgetScope], cost: Cost, request_id: str, model: str,
                      expires_at: float, now: float | None = None) -> ReserveOutcome:
        at = self._clock() if now is None else now
        totals = {s.id: self._totals(s.id, at) for s in scopes}
        output, status = grant(scopes, totals, self._held, cost, at)
        if not output:
            return ReserveOutcome(None, status)
        tokens, usd = cost.at(output)
        reservation = Reservation(request_id, tuple(s.id for s in scopes), model, cost.prompt_tokens,
                                  tokens, usd, output, shared=False)
        self._hold(reservation, 1)
        self._reservations[request_id] = (reservation, expires_at)
        return ReserveOutcome(reservation, status)

    async def settle(self, reservation: Reservation, charge: Charge, now: float | None = None) -> bool:
        if self._reservations.pop(reservation.request_id, None) is not None:
            self._hold(reservation, -1)
        return await self.charge(reservation.scope_ids, charge, now)

    async def renew(self, reservations: Sequence[Reservation], expires_at: float) -> None:
        for reservation in reservations:
            if reservation.request_id in self._reservations:
                self._reservations[reservation.request_id] = (reservation, expires_at)

    async def sweep(self, now: float | None = None) -> list[tuple[tuple[str, ...], Charge]]:
        at = self._clock() if now is None else now
        expired = [r for r, until in self._reservations.values() if until <= at]
        charges = []
        for reservation in expired:
            charge = reservation_charge(reservation)
            if await self.settle(reservation, charge, at):
                charges.append((reservation.scope_ids, charge))
        return charges

    def _hold(self, reservation: Reservation, sign: int) -> None:
        for scope_id in reservation.scope_ids:
            held = self._held.get(scope_id, Held())
            tokens = held.tokens + sign * reservation.tokens
            if tokens <= 0:  # the last one out: no float residue left behind
                self._held.pop(scope_id, None)
            else:
                self._held[scope_id] = Held(tokens, held.usd + sign * reservation.usd)

    async def check(self, scopes: Sequence[BudgetScope], estimate_tokens: int = 0,
                    now: float | None = None) -> BudgetStatus:
        at = self._clock() if now is None else now
        return evaluate(scopes, {s.id: self._totals(s.id, at) for s in scopes}, at, estimate_tokens)

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        at = self._clock() if now is None else now
        self._forget_before(at)
        if self._charged.get(charge.request_id, -math.inf) > at:
            return False
        self._charged[charge.request_id] = at + self._dedup_s
        self._charged.move_to_end(charge.request_id)
        adds, day, month = increments(charge).items(), day_label(at), month_label(at)
        for scope_id in scope_ids:
            for key in (f"{scope_id}|d|{day}", f"{scope_id}|m|{month}"):
                record = self._records.setdefault(key, {})
                for name, value in adds:
                    record[name] = record.get(name, 0) + value
        return True

    async def report(self, scope_id: str, days: int, now: float | None = None) -> UsageReport:
        at = self._clock() if now is None else now
        rows: list[UsageRow] = []
        for back in range(days):
            day = day_label(at - back * DAY_S)
            rows += usage_rows(day, self._records.get(f"{scope_id}|d|{day}", {}))
        return UsageReport(scope_id, rows)

    def _forget_before(self, now: float) -> None:
        charged = self._charged
        while charged and (next(iter(charged.values())) <= now or len(charged) >= _MAX_REMEMBERED_IDS):
            charged.popitem(last=False)
        today = day_label(now)
        if today != self._swept_day:  # day records expire by the day: look once a day
            self._swept_day = today
            oldest = day_label(now - self._retention_days * DAY_S)
            for key in [k for k in self._records if "|d|" in k and k.rsplit("|", 1)[1] < oldest]:
                del self._records[key]
