"""The usage ledger in Redis, shared by every replica (see ``policies.spend`` for the model).

Remembers charged ids for ``charge_dedup_s`` (two days), reserves and settles in one Lua script
each (the reserve script mirrors ``policies.spend.grant``), and puts every key of one tenant
under the tenant's hash tag, so the scripts also run on a Redis Cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from policies.limits_config import BudgetConfig
from policies.redis_client import RedisClient
from policies.reservation import Cost, Held, Reservation
from policies.scopes import hash_tag
from policies.spend import (
    DAY_S,
    BudgetScope,
    BudgetStatus,
    Charge,
    PeriodTotals,
    ReserveOutcome,
    UsageReport,
    UsageRow,
    day_label,
    evaluate,
    grant,
    increments,
    month_label,
    reservation_charge,
    usage_rows,
)

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

    def __init__(self, client: RedisClient, namespace: str, retention_days: int = 93,
                 dedup_s: int = 172_800) -> None:
        self._client = client
        self._namespace = namespace
        self._retention_s = retention_days * DAY_S
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
        reply = await self._reserve_marked(hash_tag(ids[0]), keys, args)
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

    async def _reserve_marked(self, tag: str, keys: list[str], args: list[str | int | float]) -> Any:
        """Mark the tag as reserving (first: the sweep must find it), then run the reserve script."""
        marker = f"{self._namespace}:reserving"
        if isinstance(self._client, RedisCluster):
            # the marker and the tenant's keys sit in different slots, and a cluster pipeline
            # does not reload a script a promoted replica lacks: two calls, in this order
            await self._client.sadd(marker, tag)
            return await self._reserve(keys=keys, args=args)
        async with self._client.pipeline(transaction=False) as pipe:  # one round trip
            pipe.sadd(marker, tag)
            # EVALSHA itself: a Script in a pipeline makes redis-py ask SCRIPT EXISTS first,
            # a second round trip on every request
            pipe.evalsha(self._reserve.sha, len(keys), *keys, *args)
            try:
                _, reply = await pipe.execute()
            except NoScriptError:  # a restarted or flushed Redis: the Script call loads it again
                return await self._reserve(keys=keys, args=args)
        return reply

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
        args: list[str | int] = [charge.request_id, int(require_reservation), self._dedup_s, self._retention_s, 400 * DAY_S]
        for name, value in increments(charge).items():
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
        labels = [day_label(at - back * DAY_S) for back in range(days)]
        async with self._client.pipeline(transaction=False) as pipe:
            for day in labels:
                pipe.hgetall(self._day_key(scope_id, day))
            replies = await pipe.execute()
        rows: list[UsageRow] = []
        for day, raw in zip(labels, replies):
            rows += usage_rows(day, {k.decode(): float(v) for k, v in raw.items()})
        return UsageReport(scope_id, rows)


_NO_CAPS = BudgetConfig.model_construct()  # every cap None: charged and reported, never refused


def _parse_held(request_id: str, held: str) -> Reservation:
    """A reservation as the reserve script stored it: ``<tokens> <usd> <payload JSON>``."""
    tokens, usd, payload = held.split(" ", 2)
    data = json.loads(payload)
    prompt = int(data["prompt"])
    return Reservation(request_id, tuple(data["scopes"]), str(data["model"]), prompt, int(tokens),
                       float(usd), 0)
