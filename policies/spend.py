"""Token and money budgets per tenant and per key: usage ledgers, checks and reports.

Admission reserves the most a request can cost (``reserve``: check and hold in one atomic
step, see ``policies.reservation``); when it ends, ``settle`` releases the reservation and adds
the real usage, priced per model, to a per-day and a per-month record of every scope it counts
against (its key, its tenant): totals plus a breakdown by model. Settling is idempotent by
request id, so a charge retried after a lost reply (or replayed after a Redis outage) is never
counted twice. A reservation nobody renews (its gateway died) expires, and ``sweep`` charges it
in full. Days and months are UTC.

``MemoryUsageLedger`` serves one process and remembers charged ids for minutes;
``RedisUsageLedger`` is shared by every replica, remembers them for ``charge_dedup_s`` (two
days) and reserves and settles in one Lua script each; every key of one tenant carries the
tenant's hash tag, so the scripts also run on a Redis Cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

import redis.asyncio as redis

from backends.errors import RateLimitedError
from backends.types import Usage
from policies.limits_config import BudgetConfig, PriceConfig
from policies.reservation import Cost, Held, Reservation, fits
from policies.scopes import hash_tag

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
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def month_label(now: float) -> str:
    """The UTC month of ``now``, ``YYYY-MM``."""
    return time.strftime("%Y-%m", time.gmtime(now))


def resets_in(now: float) -> tuple[float, float]:
    """Seconds until the UTC day and the UTC month end."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    first = today.replace(day=1)
    next_month = (first.replace(year=first.year + 1, month=1) if first.month == 12
                  else first.replace(month=first.month + 1))
    month_start = dt.datetime.combine(next_month, dt.time(), dt.UTC)
    return tomorrow.timestamp() - now, month_start.timestamp() - now


def _amount(value: float, unit: str) -> str:
    if unit == "usd":  # small budgets need the cents' fractions
        return f"${value:,.2f}" if value >= 100 else f"${value:,.6f}".rstrip("0").rstrip(".")
    return f"{int(value):,} tokens"


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


# Shared by the settle and reserve scripts: apply field/increment pairs to one hash.
_ADD = """
local function add(key, first, ttl)
  for j = first, #ARGV, 2 do
    local name = ARGV[j]
    if string.sub(name, 1, 2) == 'f:' then
      redis.call('HINCRBYFLOAT', key, string.sub(name, 3), ARGV[j + 1])
    else
      redis.call('HINCRBY', key, name, ARGV[j + 1])
    end
  end
  redis.call('EXPIRE', key, ttl)
end
"""

# KEYS: reservations hash, expiry zset, the request id's marker, then per scope: held hash,
# day hash, month hash. ARGV: request id, require a reservation (1/0), marker TTL, day TTL,
# month TTL, then field/increment pairs (float ones marked by 'f:'). Releases the reservation
# if it is still held, then charges unless the marker says it was charged already.
_SETTLE = _ADD + """
local held = redis.call('HGET', KEYS[1], ARGV[1])
local scopes = (#KEYS - 3) / 3
if held then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  local a = string.find(held, ' ', 1, true)
  local b = string.find(held, ' ', a + 1, true)
  local tokens, usd = tonumber(string.sub(held, 1, a - 1)), string.sub(held, a + 1, b - 1)
  for i = 1, scopes do
    local key = KEYS[1 + 3 * i]
    if redis.call('HINCRBY', key, 'tokens', -tokens) <= 0 then
      redis.call('DEL', key)
    else
      redis.call('HINCRBYFLOAT', key, 'usd', '-' .. usd)
    end
  end
elseif ARGV[2] == '1' then
  return 0
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return 0 end
for i = 1, scopes do
  add(KEYS[2 + 3 * i], 6, ARGV[4])
  add(KEYS[3 + 3 * i], 6, ARGV[5])
end
return 1
"""

# KEYS: reservations hash, expiry zset, then per scope: held, day, month hashes. ARGV: request
# id, expiry (ms), payload, prompt tokens, prompt usd, choices, usd per output token, output
# asked, then per scope: daily tokens, monthly tokens, daily usd, monthly usd (-1: no cap),
# reject (1/0). Mirrors ``grant``; returns the grant (0: refused), then per scope what it has
# used and holds (day tokens, day usd, month tokens, month usd, held tokens, held usd).
_RESERVE = """
local function fits(left, fixed, per)
  if per > 0 then return math.floor((left - fixed + 1e-9) / per) end
  if left - fixed >= -1e-9 then return math.huge end
  return -1
end
local pt, pu, ch, ou, want = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local granted, refused, out, scopes = want, false, {}, (#KEYS - 2) / 3
for i = 1, scopes do
  local d = redis.call('HMGET', KEYS[3 * i], 'tokens', 'usd')
  local m = redis.call('HMGET', KEYS[1 + 3 * i], 'tokens', 'usd')
  local h = redis.call('HMGET', KEYS[2 + 3 * i], 'tokens', 'usd')
  local used = {tonumber(d[1]) or 0, tonumber(m[1]) or 0, tonumber(d[2]) or 0, tonumber(m[2]) or 0}
  local ht, hu = tonumber(h[1]) or 0, tonumber(h[2]) or 0
  local b = 8 + (i - 1) * 5
  local need = (ARGV[b + 5] == '1') and want or 1
  for c = 1, 4 do
    local limit = tonumber(ARGV[b + c])
    if limit >= 0 then
      local room = -1
      if used[c] < limit then
        if c <= 2 then room = fits(limit - used[c] - ht, pt, ch) else room = fits(limit - used[c] - hu, pu, ch * ou) end
      end
      if room < need then refused = true end
      granted = math.min(granted, room)
    end
  end
  for _, v in ipairs({d[1] or '0', d[2] or '0', m[1] or '0', m[2] or '0', h[1] or '0', h[2] or '0'}) do
    out[#out + 1] = v
  end
end
if refused or granted < 1 then return {0, unpack(out)} end
local tokens, usd = pt + granted * ch, pu + granted * ch * ou
local usd_text = string.format('%.17g', usd)
for i = 1, scopes do
  redis.call('HINCRBY', KEYS[2 + 3 * i], 'tokens', tokens)
  redis.call('HINCRBYFLOAT', KEYS[2 + 3 * i], 'usd', usd_text)
end
redis.call('HSET', KEYS[1], ARGV[1], tokens .. ' ' .. usd_text .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {granted, unpack(out)}
"""


class RedisUsageLedger:
    """The ledger in Redis hashes, shared by every replica.

    Keys (``{t}`` is the hash tag of the scope's tenant, ``policies.scopes.hash_tag``):
    ``<ns>:{t}:u:<scope>:d:<YYYY-MM-DD>`` and ``<ns>:{t}:u:<scope>:m:<YYYY-MM>`` (fields
    ``tokens``, ``usd``, ``requests`` and ``<model>|in|cached|out|usd|req``),
    ``<ns>:{t}:held:<scope>`` (what requests in flight reserve), ``<ns>:{t}:res`` and
    ``<ns>:{t}:res-exp`` (the tenant's reservations and their expiries),
    ``<ns>:{t}:charged:<request id>``, and ``<ns>:reserving`` (the tags with reservations, for
    the sweep).

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
        self._settle = client.register_script(_SETTLE)
        self._reserve = client.register_script(_RESERVE)

    def _key(self, scope_id: str, kind: str) -> str:
        return f"{self._namespace}:{hash_tag(scope_id)}:{kind}"

    def _day_key(self, scope_id: str, day: str) -> str:
        return self._key(scope_id, f"u:{scope_id}:d:{day}")

    def _month_key(self, scope_id: str, month: str) -> str:
        return self._key(scope_id, f"u:{scope_id}:m:{month}")

    def _tag_keys(self, tag: str) -> tuple[str, str]:
        return f"{self._namespace}:{tag}:res", f"{self._namespace}:{tag}:res-exp"

    async def reserve(self, scopes: Sequence[BudgetScope], cost: Cost, request_id: str, model: str,
                      expires_at: float, now: float | None = None) -> ReserveOutcome:
        at = time.time() if now is None else now
        ids = tuple(s.id for s in scopes)
        keys = [*self._tag_keys(hash_tag(ids[0]))]
        args: list[str | int | float] = [
            request_id, int(expires_at * 1000), json.dumps({"scopes": ids, "model": model, "prompt": cost.prompt_tokens}),
            cost.prompt_tokens, repr(cost.prompt_usd), cost.choices, repr(cost.output_usd), cost.output]
        for scope in scopes:
            budget = scope.budget or _NO_CAPS
            keys += [self._day_key(scope.id, day_label(at)), self._month_key(scope.id, month_label(at)),
                     self._key(scope.id, f"held:{scope.id}")]
            args += [*(-1 if c is None else repr(float(c)) for c in (
                budget.daily_tokens, budget.monthly_tokens, budget.daily_usd, budget.monthly_usd)),
                int(budget.max_tokens_overflow == "reject")]
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.sadd(f"{self._namespace}:reserving", hash_tag(ids[0]))  # first: the sweep must find it
            await self._reserve(keys=keys, args=args, client=pipe)
            _, reply = await pipe.execute()
        totals, held = {}, {}
        for index, scope in enumerate(scopes):
            d_tok, d_usd, m_tok, m_usd, h_tok, h_usd = (float(x) for x in reply[1 + 6 * index: 7 + 6 * index])
            totals[scope.id] = PeriodTotals(int(d_tok), d_usd, int(m_tok), m_usd)
            held[scope.id] = Held(int(h_tok), h_usd)
        _, status = grant(scopes, totals, held, cost, at)
        output = int(reply[0])  # the script's verdict is the one that took effect
        if not output:
            return ReserveOutcome(None, BudgetStatus(False, status.states, cost))
        tokens, usd = cost.at(output)
        return ReserveOutcome(Reservation(request_id, ids, model, cost.prompt_tokens, tokens, usd, output),
                              BudgetStatus(True, status.states))

    async def settle(self, reservation: Reservation, charge: Charge, now: float | None = None) -> bool:
        return await self._charge(reservation.scope_ids, charge, now, require_reservation=False)

    async def charge(self, scope_ids: Sequence[str], charge: Charge,
                     now: float | None = None) -> bool:
        return await self._charge(scope_ids, charge, now, require_reservation=False)

    async def _charge(self, scope_ids: Sequence[str], charge: Charge, now: float | None,
                      require_reservation: bool) -> bool:
        """Release the request's reservation if it holds one, and charge; with
        ``require_reservation`` only if it still holds one (the sweep: the request may have
        been settled since its reservation was read)."""
        at = time.time() if now is None else now
        tag = hash_tag(scope_ids[0]) if scope_ids else "{}"
        keys = [*self._tag_keys(tag), f"{self._namespace}:{tag}:charged:{charge.request_id}"]
        for scope_id in scope_ids:
            keys += [self._key(scope_id, f"held:{scope_id}"), self._day_key(scope_id, day_label(at)),
                     self._month_key(scope_id, month_label(at))]
        args: list[str | int] = [charge.request_id, int(require_reservation), self._dedup_s, self._retention_s, 400 * _DAY_S]
        for name, value in _increments(charge).items():
            is_float = name == "usd" or name.endswith("|usd")
            args += [f"f:{name}" if is_float else name, repr(float(value)) if is_float else int(value)]
        return int(await self._settle(keys=keys, args=args)) == 1

    async def renew(self, reservations: Sequence[Reservation], expires_at: float) -> None:
        if not reservations:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for reservation in reservations:
                _, expiries = self._tag_keys(hash_tag(reservation.scope_ids[0]))
                pipe.zadd(expiries, {reservation.request_id: int(expires_at * 1000)}, xx=True)
            await pipe.execute()

    async def sweep(self, now: float | None = None) -> list[tuple[tuple[str, ...], Charge]]:
        at = time.time() if now is None else now
        charges: list[tuple[tuple[str, ...], Charge]] = []
        tags = cast("set[bytes]", await self._client.smembers(f"{self._namespace}:reserving"))
        for raw_tag in tags:
            held, expiries = self._tag_keys(raw_tag.decode())
            ids = cast("list[bytes]", await self._client.zrangebyscore(
                expiries, "-inf", int(at * 1000), start=0, num=100))
            payloads = cast("list[bytes | None]", await self._client.hmget(held, ids)) if ids else []
            for request_id, payload in zip(ids, payloads):
                if payload is None:
                    await self._client.zrem(expiries, request_id)
                    continue
                reservation = _parse_held(request_id.decode(), payload.decode())
                charge = reservation_charge(reservation)
                if await self._charge(reservation.scope_ids, charge, at, require_reservation=True):
                    charges.append((reservation.scope_ids, charge))
        return charges

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


_NO_CAPS = BudgetConfig.model_construct()  # every cap None: charged and reported, never refused


def _parse_held(request_id: str, held: str) -> Reservation:
    """A reservation as the reserve script stored it: ``<tokens> <usd> <payload JSON>``."""
    tokens, usd, payload = held.split(" ", 2)
    data = json.loads(payload)
    prompt = int(data["prompt"])
    return Reservation(request_id, tuple(data["scopes"]), str(data["model"]), prompt, int(tokens),
                       float(usd), 0)
