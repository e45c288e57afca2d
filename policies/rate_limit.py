"""Requests-per-minute and tokens-per-minute limits per key and per tenant, as token buckets.

Each scope (a key, a tenant) has a requests bucket and a tokens bucket, refilled continuously at
the per-minute rate up to ``burst`` minutes' worth. ``admit`` checks every scope of a request at
once and takes from all of them only if all allow it; ``adjust`` later corrects the tokens
bucket by the difference between the real usage and what admission took, the most the request
could use (so TPM counts tokens reserved by requests in flight; a bucket may go below zero when
an upstream reports more: the debt delays the next requests). A cost larger than the bucket is admitted only
when the bucket is full, so an oversized request is slow, never impossible.

``MemoryRateLimiter`` serves one process; ``RedisRateLimiter`` is shared by every replica and
does one admission in one Lua script (one round trip); both follow the same arithmetic, and one
contract suite tests both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from backends.errors import RateLimitedError
from policies.limits_config import RateLimitConfig
from policies.redis_client import RedisClient
from policies.scopes import hash_tag

Dimension = Literal["requests", "tokens"]
_DIMENSIONS: tuple[Dimension, Dimension] = ("requests", "tokens")
# one limited bucket: dimension, capacity, refill per second, level before taking, refused
_Row = tuple[Dimension, float, float, float, bool]


@dataclass(frozen=True, slots=True)
class RateScope:
    """One set of limits a request counts against, e.g. ``RateScope("tenant:acme", config)``."""

    id: str
    limits: RateLimitConfig

    def bucket(self, dimension: Dimension) -> tuple[float, float]:
        """(capacity, refill per second) of one bucket; (0, 0) when that dimension is unlimited."""
        per_minute = self.limits.rpm if dimension == "requests" else self.limits.tpm
        if per_minute is None:
            return 0.0, 0.0
        return max(1.0, per_minute * self.limits.burst), per_minute / 60.0


@dataclass(frozen=True, slots=True)
class LimitState:
    """One bucket after an admission: what the ``x-ratelimit-*`` headers report."""

    scope: str
    dimension: Dimension
    limit: int
    """The per-minute limit."""
    remaining: int
    """Whole units left in the bucket now (0 when in debt)."""
    reset_s: float
    """Seconds until the bucket is full again."""
    blocked: bool
    """This bucket refused the request."""


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a request is admitted, and the state of every bucket it was checked against."""

    allowed: bool
    retry_after_s: float
    """Seconds until every refusing bucket holds enough (0 when admitted)."""
    states: tuple[LimitState, ...] = ()

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for this decision (see ``ratelimit_headers``)."""
        return ratelimit_headers(self)

    def error(self) -> RateLimitedError:
        """The 429 for a refused request, with ``Retry-After`` and the ``x-ratelimit-*`` headers."""
        blocked = [s for s in self.states if s.blocked]
        what = "; ".join(
            f"{s.scope} on {s.dimension} per minute (limit {s.limit}, remaining {s.remaining})"
            for s in blocked) or "unknown limit"
        wait = max(1, math.ceil(self.retry_after_s))
        return RateLimitedError(f"Rate limit reached for {what}. Please try again in {wait}s.",
                                retry_after_s=self.retry_after_s, headers=self.headers())


class RateLimiter(Protocol):
    """Admission against request and token buckets of several scopes at once."""

    async def admit(self, scopes: Sequence[RateScope], requests: int = 1, tokens: int = 0,
                    now: float | None = None) -> RateDecision:
        """Take ``requests`` and ``tokens`` from every scope's buckets, or from none.

        Args:
            scopes: Every scope the request counts against (its key, its tenant).
            requests: Requests to take (1 per request).
            tokens: The most the request can use: prompt estimate plus output bound x choices.
            now: Unix time in seconds; defaults to the store's clock.
        """
        ...

    async def adjust(self, scopes: Sequence[RateScope], token_delta: int,
                     now: float | None = None) -> None:
        """Take ``token_delta`` more tokens (give back when negative) after the real usage."""
        ...


def ratelimit_headers(decision: RateDecision) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` as OpenAI sends them.

    With several scopes, each dimension reports the bucket that refused the request, or else the
    one with the least remaining.
    """
    headers: dict[str, str] = {}
    for dimension in _DIMENSIONS:
        states = [s for s in decision.states if s.dimension == dimension]
        if not states:
            continue
        state = min(states, key=lambda s: (not s.blocked, s.remaining, -s.reset_s))
        headers[f"x-ratelimit-limit-{dimension}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{dimension}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{dimension}"] = format_reset(state.reset_s)
    return headers


def format_reset(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it (Go style): ``20ms``, ``1s``, ``1.5s``,
    ``6m0s``, ``1h0m0s``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _decide(scopes: Sequence[RateScope], levels: Sequence[tuple[float, float]], requests: int,
            tokens: int) -> tuple[bool, float, list[_Row]]:
    """The admission arithmetic shared by both limiters (the Lua script mirrors it).

    Returns (allowed, retry_after_s, one row per limited bucket with its level before taking).
    """
    allowed, wait = True, 0.0
    rows: list[_Row] = []
    for scope, scope_levels in zip(scopes, levels):
        for dimension, level, cost in zip(_DIMENSIONS, scope_levels, (requests, tokens)):
            capacity, rate = scope.bucket(dimension)
            if capacity == 0:
                continue
            need = min(cost, capacity)
            blocked = level < need
            if blocked:
                allowed, wait = False, max(wait, (need - level) / rate)
            rows.append((dimension, capacity, rate, level, blocked))
    return allowed, wait, rows


def _decision(scopes: Sequence[RateScope], allowed: bool, wait: float, rows: Sequence[_Row],
              requests: int, tokens: int) -> RateDecision:
    ids = [s.id for s in scopes for d in _DIMENSIONS if s.bucket(d)[0]]
    states = []
    for scope_id, (dimension, capacity, rate, level, blocked) in zip(ids, rows):
        if allowed:
            level -= requests if dimension == "requests" else tokens
        states.append(LimitState(
            scope=scope_id, dimension=dimension, limit=round(rate * 60),
            remaining=max(0, math.floor(level + 1e-9)),
            reset_s=max(0.0, (capacity - level) / rate), blocked=blocked and not allowed))
    return RateDecision(allowed, 0.0 if allowed else wait, tuple(states))


class MemoryRateLimiter:
    """Token buckets in a dict: exact for one process (and the fail-open fallback for Redis).

    Args:
        clock: Unix time in seconds, used when a call passes no ``now``.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}

    def _levels(self, scope: RateScope, now: float) -> tuple[float, float]:
        request_cap, request_rate = scope.bucket("requests")
        token_cap, token_rate = scope.bucket("tokens")
        stored = self._buckets.get(scope.id)
        if stored is None:
            return request_cap, token_cap
        requests, tokens, stamp = stored
        elapsed = max(0.0, now - stamp)
        return (min(request_cap, requests + elapsed * request_rate),
                min(token_cap, tokens + elapsed * token_rate))

    async def admit(self, scopes: Sequence[RateScope], requests: int = 1, tokens: int = 0,
                    now: float | None = None) -> RateDecision:
        at = self._clock() if now is None else now
        levels = [self._levels(s, at) for s in scopes]
        allowed, wait, rows = _decide(scopes, levels, requests, tokens)
        if allowed:
            for scope, (request_level, token_level) in zip(scopes, levels):
                self._buckets[scope.id] = (request_level - requests, token_level - tokens, at)
        return _decision(scopes, allowed, wait, rows, requests, tokens)

    async def adjust(self, scopes: Sequence[RateScope], token_delta: int,
                     now: float | None = None) -> None:
        at = self._clock() if now is None else now
        for scope in scopes:
            request_level, token_level = self._levels(scope, at)
            capacity = scope.bucket("tokens")[0]
            self._buckets[scope.id] = (request_level, min(capacity, token_level - token_delta), at)


# KEYS: one hash per scope (fields r, t: levels; ts: ms). ARGV: now_ms (<0: server time),
# requests, tokens, then per scope: request capacity, rate/ms, token capacity, rate/ms
# (capacity 0: unlimited). Mirrors _decide; returns allowed, wait (ms) and the levels before
# taking, as strings to keep fractions.
_LEVELS = """
local function levels(key, now, rc, rr, tc, tr)
  local h = redis.call('HMGET', key, 'r', 't', 'ts')
  local ts = tonumber(h[3])
  if ts == nil then return rc, tc end
  local elapsed = math.max(0, now - ts)
  return math.min(rc, tonumber(h[1]) + elapsed * rr), math.min(tc, tonumber(h[2]) + elapsed * tr)
end
local function clock(arg)
  local now = tonumber(arg)
  if now < 0 then local t = redis.call('TIME'); now = t[1] * 1000 + t[2] / 1000 end
  return now
end
local function store(key, now, r, t, rc, rr, tc, tr)
  redis.call('HSET', key, 'r', tostring(r), 't', tostring(t), 'ts', tostring(now))
  local full = 0
  if rr > 0 then full = math.max(full, (rc - r) / rr) end
  if tr > 0 then full = math.max(full, (tc - t) / tr) end
  redis.call('PEXPIRE', key, math.ceil(full) + 1000)
end
"""

_ADMIT = _LEVELS + """
local now = clock(ARGV[1])
local reqs, toks = tonumber(ARGV[2]), tonumber(ARGV[3])
local allowed, wait, out, lv = 1, 0, {}, {}
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  local rc, rr, tc, tr = tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3]), tonumber(ARGV[b+4])
  local r, t = levels(KEYS[i], now, rc, rr, tc, tr)
  lv[i] = {r, t}
  if rc > 0 and r < math.min(reqs, rc) then allowed = 0; wait = math.max(wait, (math.min(reqs, rc) - r) / rr) end
  if tc > 0 and t < math.min(toks, tc) then allowed = 0; wait = math.max(wait, (math.min(toks, tc) - t) / tr) end
end
for i = 1, #KEYS do
  if allowed == 1 then
    local b = 3 + (i - 1) * 4
    store(KEYS[i], now, lv[i][1] - reqs, lv[i][2] - toks, tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3]), tonumber(ARGV[b+4]))
  end
  out[#out+1] = tostring(lv[i][1])
  out[#out+1] = tostring(lv[i][2])
end
return {allowed, tostring(wait), unpack(out)}
"""

_ADJUST = _LEVELS + """
local now = clock(ARGV[1])
local delta = tonumber(ARGV[2])
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 4
  local rc, rr, tc, tr = tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3]), tonumber(ARGV[b+4])
  if tc > 0 then
    local r, t = levels(KEYS[i], now, rc, rr, tc, tr)
    store(KEYS[i], now, r, math.min(tc, t - delta), rc, rr, tc, tr)
  end
end
return 1
"""


class RedisRateLimiter:
    """Token buckets in Redis hashes, shared by every replica; one Lua script per admission.

    Keys expire when their buckets would be full again, so idle scopes cost nothing. Without an
    explicit ``now`` the script uses Redis's clock, so replicas with skewed clocks agree.

    Args:
        client: The shared ``redis.asyncio.Redis``.
        namespace: Key prefix, e.g. ``switchyard:rl``; a scope lives at
            ``<namespace>:{<tenant>}:<id>`` (``policies.scopes.hash_tag``).
    """

    def __init__(self, client: RedisClient, namespace: str) -> None:
        self._namespace = namespace
        self._admit = client.register_script(_ADMIT)
        self._adjust = client.register_script(_ADJUST)

    def _args(self, scopes: Sequence[RateScope]) -> tuple[list[str], list[float]]:
        # one hash tag per tenant: a request's key and tenant buckets sit in one Cluster slot
        keys = [f"{self._namespace}:{hash_tag(s.id)}:{s.id}" for s in scopes]
        args: list[float] = []
        for scope in scopes:
            for dimension in _DIMENSIONS:
                capacity, rate = scope.bucket(dimension)
                args += [capacity, rate / 1000.0]
        return keys, args

    async def admit(self, scopes: Sequence[RateScope], requests: int = 1, tokens: int = 0,
                    now: float | None = None) -> RateDecision:
        keys, args = self._args(scopes)
        now_ms = -1.0 if now is None else now * 1000.0
        reply = await self._admit(keys=keys, args=[now_ms, requests, tokens, *args])
        numbers = [float(x) for x in reply[2:]]
        levels = [(numbers[2 * i], numbers[2 * i + 1]) for i in range(len(scopes))]
        _, _, rows = _decide(scopes, levels, requests, tokens)
        # the script's verdict is the one that took effect
        return _decision(scopes, int(reply[0]) == 1, float(reply[1]) / 1000.0, rows,
                         requests, tokens)

    async def adjust(self, scopes: Sequence[RateScope], token_delta: int,
                     now: float | None = None) -> None:
        keys, args = self._args(scopes)
        now_ms = -1.0 if now is None else now * 1000.0
        await self._adjust(keys=keys, args=[now_ms, token_delta, *args])
