"""Token and money budgets per tenant and per key: usage ledgers, checks and reports.

Each charge adds a request's real usage, priced per model, to a per-day and a per-month record
of every scope it counts against (its key, its tenant): totals plus a breakdown by model.
Charging is idempotent by request id, so a charge retried after a lost reply (or replayed after
a Redis outage) is never counted twice. Days and months are UTC.

``MemoryUsageLedger`` serves one process and remembers charged ids for minutes;
``RedisUsageLedger`` is shared by every replica, remembers them for ``charge_dedup_s`` (two
days) and charges in one Lua script (HINCRBY / HINCRBYFLOAT, and SET NX on the request id).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import redis.asyncio as redis

from backends.errors import RateLimitedError
from backends.types import Usage
from policies.limits_config import BudgetConfig, PriceConfig

Period = Literal["day", "month"]
Unit = Literal["tokens", "usd"]
_DAY_S = 86_400
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
    """One set of caps a request counts against, e.g. ``BudgetScope("tenant:acme", config)``."""

    id: str
    budget: BudgetConfig


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


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """The outcome of a budget check: allowed, and every cap looked at."""

    allowed: bool
    states: tuple[BudgetState, ...] = ()

    def error(self) -> BudgetExceededError:
        """The 429 telling the client which budget is used up and when it resets."""
        over = [s for s in self.states if s.exceeded]
        wait = max((s.resets_in_s for s in over), default=1.0)
        parts = [f"{s.scope} has used {_amount(s.used, s.unit)} of its {_amount(s.limit, s.unit)}"
                 f" {'daily' if s.period == 'day' else 'monthly'} budget (resets in"
                 f" {_duration(s.resets_in_s)}, UTC)" for s in over]
        return BudgetExceededError("Budget exceeded: " + "; ".join(parts) + ".", retry_after_s=wait)


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
    """Where charges accumulate; shared by replicas when it is in Redis."""

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


def evaluate(scopes: Sequence[BudgetScope], totals: Mapping[str, PeriodTotals], now: float,
             estimate_tokens: int = 0) -> BudgetStatus:
    """Check totals against caps: a cap is exceeded once used up, or when a token cap would
    be passed by the estimate."""
    day_reset, month_reset = _resets_in(now)
    states: list[BudgetState] = []
    for scope in scopes:
        budget, used = scope.budget, totals.get(scope.id, PeriodTotals())
        caps: tuple[tuple[Period, Unit, float | None, float, float], ...] = (
            ("day", "tokens", budget.daily_tokens, used.day_tokens, day_reset),
            ("month", "tokens", budget.monthly_tokens, used.month_tokens, month_reset),
            ("day", "usd", budget.daily_usd, used.day_usd, day_reset),
            ("month", "usd", budget.monthly_usd, used.month_usd, month_reset))
        for period, unit, limit, spent, reset in caps:
            if limit is None:
                continue
            extra = estimate_tokens if unit == "tokens" else 0
            exceeded = spent >= limit or spent + extra > limit
            states.append(BudgetState(scope.id, period, unit, limit, spent, reset, exceeded))
    return BudgetStatus(not any(s.exceeded for s in states), tuple(states))


def day_label(now: float) -> str:
    """The UTC day of ``now``, ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def month_label(now: float) -> str:
    """The UTC month of ``now``, ``YYYY-MM``."""
    return time.strftime("%Y-%m", time.gmtime(now))


def _resets_in(now: float) -> tuple[float, float]:
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    first = today.replace(day=1)
    next_month = (first.replace(year=first.year + 1, month=1) if first.month == 12
                  else first.replace(month=first.month + 1))
    month_start = dt.datetime.combine(next_month, dt.time(), dt.UTC)
    return tomorrow.timestamp() - now, month_start.timestamp() - now


def _amount(value: float, unit: str) -> str:
    return f"${value:,.2f}" if unit == "usd" else f"{int(value):,} tokens"


def _duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _increments(charge: Charge) -> dict[str, float]:
    model = charge.model
    return {f"{model}|in": charge.input_tokens, f"{model}|cached": charge.cached_input_tokens,
            f"{model}|out": charge.output_tokens, f"{model}|usd": charge.cost_usd,
            f"{model}|req": 1, "tokens": charge.total_tokens, "usd": charge.cost_usd,
            "requests": 1}


def _rows(day: str, fields: Mapping[str, float]) -> list[UsageRow]:
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

    async def check(self, scopes: Sequence[BudgetScope], estimate_tokens: int = 0,
                    now: float | None = None) -> BudgetStatus:
        at = self._clock() if now is None else now
        totals = {s.id: _totals(self._records.get(f"{s.id}|d|{day_label(at)}", {}),
                                self._records.get(f"{s.id}|m|{month_label(at)}", {}))
                  for s in scopes}
        return evaluate(scopes, totals, at, estimate_tokens)

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        at = self._clock() if now is None else now
        self._forget_before(at)
        if self._charged.get(charge.request_id, -math.inf) > at:
            return False
        self._charged[charge.request_id] = at + self._dedup_s
        self._charged.move_to_end(charge.request_id)
        for scope_id in scope_ids:
            for key in (f"{scope_id}|d|{day_label(at)}", f"{scope_id}|m|{month_label(at)}"):
                record = self._records.setdefault(key, {})
                for name, value in _increments(charge).items():
                    record[name] = record.get(name, 0) + value
        return True

    async def report(self, scope_id: str, days: int, now: float | None = None) -> UsageReport:
        at = self._clock() if now is None else now
        rows: list[UsageRow] = []
        for back in range(days):
            day = day_label(at - back * _DAY_S)
            rows += _rows(day, self._records.get(f"{scope_id}|d|{day}", {}))
        return UsageReport(scope_id, rows)

    def _forget_before(self, now: float) -> None:
        charged = self._charged
        while charged and (next(iter(charged.values())) <= now or len(charged) >= _MAX_REMEMBERED_IDS):
            charged.popitem(last=False)
        today = day_label(now)
        if today != self._swept_day:  # day records expire by the day: look once a day
            self._swept_day = today
            oldest = day_label(now - self._retention_days * _DAY_S)
            for key in [k for k in self._records if "|d|" in k and k.rsplit("|", 1)[1] < oldest]:
                del self._records[key]


# KEYS[1]: the request id's marker; then per scope its day and month hashes.
# ARGV: marker TTL, day TTL, month TTL, then field/increment pairs (float ones marked by 'f:').
_CHARGE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  for j = 4, #ARGV, 2 do
    local name = ARGV[j]
    if string.sub(name, 1, 2) == 'f:' then
      redis.call('HINCRBYFLOAT', KEYS[i], string.sub(name, 3), ARGV[j + 1])
    else
      redis.call('HINCRBY', KEYS[i], name, ARGV[j + 1])
    end
  end
  redis.call('EXPIRE', KEYS[i], (i % 2 == 0) and ARGV[2] or ARGV[3])
end
return 1
"""


class RedisUsageLedger:
    """The ledger in Redis hashes, shared by every replica.

    Keys: ``<ns>:u:<scope>:d:<YYYY-MM-DD>`` and ``<ns>:u:<scope>:m:<YYYY-MM>`` (fields ``tokens``,
    ``usd``, ``requests`` and ``<model>|in|cached|out|usd|req``), ``<ns>:charged:<request id>``.

    Args:
        client: The shared ``redis.asyncio.Redis``.
        namespace: Key prefix, e.g. ``switchyard:usage``.
        retention_days: Days a day record is kept; month records are kept 400 days.
        dedup_s: Seconds a charged request id is remembered.
    """

    def __init__(self, client: redis.Redis, namespace: str, retention_days: int = 93,
                 dedup_s: int = 172_800) -> None:
        self._client = client
        self._namespace = namespace
        self._retention_s = retention_days * _DAY_S
        self._dedup_s = dedup_s
        self._charge = client.register_script(_CHARGE)

    def _day_key(self, scope_id: str, day: str) -> str:
        return f"{self._namespace}:u:{scope_id}:d:{day}"

    def _month_key(self, scope_id: str, month: str) -> str:
        return f"{self._namespace}:u:{scope_id}:m:{month}"

    async def check(self, scopes: Sequence[BudgetScope], estimate_tokens: int = 0,
                    now: float | None = None) -> BudgetStatus:
        at = time.time() if now is None else now
        async with self._client.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hmget(self._day_key(scope.id, day_label(at)), "tokens", "usd")
                pipe.hmget(self._month_key(scope.id, month_label(at)), "tokens", "usd")
            replies = await pipe.execute()
        totals: dict[str, PeriodTotals] = {}
        for index, scope in enumerate(scopes):
            (d_tok, d_usd), (m_tok, m_usd) = replies[2 * index], replies[2 * index + 1]
            totals[scope.id] = PeriodTotals(int(d_tok or 0), float(d_usd or 0),
                                            int(m_tok or 0), float(m_usd or 0))
        return evaluate(scopes, totals, at, estimate_tokens)

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        at = time.time() if now is None else now
        keys = [f"{self._namespace}:charged:{charge.request_id}"]
        for scope_id in scope_ids:
            keys += [self._day_key(scope_id, day_label(at)), self._month_key(scope_id, month_label(at))]
        args: list[str | int] = [self._dedup_s, self._retention_s, 400 * _DAY_S]
        for name, value in _increments(charge).items():
            is_float = name == "usd" or name.endswith("|usd")
            args += [f"f:{name}" if is_float else name, repr(float(value)) if is_float else int(value)]
        return int(await self._charge(keys=keys, args=args)) == 1

    async def report(self, scope_id: str, days: int, now: float | None = None) -> UsageReport:
        at = time.time() if now is None else now
        labels = [day_label(at - back * _DAY_S) for back in range(days)]
        async with self._client.pipeline(transaction=False) as pipe:
            for day in labels:
                pipe.hgetall(self._day_key(scope_id, day))
            replies = await pipe.execute()
        rows: list[UsageRow] = []
        for day, raw in zip(labels, replies):
            rows += _rows(day, {k.decode(): float(v) for k, v in raw.items()})
        return UsageReport(scope_id, rows)
