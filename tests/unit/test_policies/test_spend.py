"""One contract for every UsageLedger: in memory and on a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from backends.types import PromptTokensDetails, Usage
from policies.limits_config import BudgetConfig, PriceConfig
from policies.spend import (
    BudgetExceededError,
    BudgetScope,
    Charge,
    MemoryUsageLedger,
    UsageLedger,
    day_label,
)
from policies.spend_redis import RedisUsageLedger
from tests.redis_support import connect_or_skip, unique_namespace

NOON = 1_718_798_400.0  # 2024-06-19 12:00:00 UTC
DAY = 86_400.0
PRICES = PriceConfig(input=2.0, cached_input=0.5, output=8.0)


def charge(request_id: str, prompt: int = 1000, completion: int = 100, cached: int = 0,
           model: str = "gpt-x") -> Charge:
    usage = Usage(prompt, completion, prompt + completion, PromptTokensDetails(cached_tokens=cached))
    return Charge.from_usage(request_id, model, usage, PRICES)


def test_prices_per_million_with_cached_input() -> None:
    priced = charge("r", prompt=1_000_000, completion=500_000, cached=400_000)
    assert (priced.input_tokens, priced.cached_input_tokens, priced.output_tokens) == (
        600_000, 400_000, 500_000)
    assert priced.cost_usd == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)
    assert priced.total_tokens == 1_500_000
    unpriced = Charge.from_usage("r", "m", Usage(10, 5, 15), None)
    assert unpriced.cost_usd == 0.0 and unpriced.total_tokens == 15
    no_cache_price = Charge.from_usage(
        "r", "m", Usage(100, 0, 100, PromptTokensDetails(cached_tokens=100)),
        PriceConfig(input=1.0, output=1.0))
    assert no_cache_price.cost_usd == pytest.approx(100 / 1e6)


async def test_daily_token_budget(ledger: UsageLedger) -> None:
    tenant = BudgetScope("tenant:acme", BudgetConfig(daily_tokens=2500))
    assert (await ledger.check([tenant], now=NOON)).allowed
    assert await ledger.charge(["tenant:acme"], charge("r1"), now=NOON)
    assert await ledger.charge(["tenant:acme"], charge("r2"), now=NOON)
    status = await ledger.check([tenant], now=NOON)
    assert status.allowed  # 2200 of 2500 used
    assert not (await ledger.check([tenant], estimate_tokens=400, now=NOON)).allowed
    assert await ledger.charge(["tenant:acme"], charge("r3"), now=NOON)
    status = await ledger.check([tenant], now=NOON)
    assert not status.allowed
    error = status.error()
    assert isinstance(error, BudgetExceededError)
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert error.message == ("Budget exceeded: tenant:acme has used 3,300 tokens of its"
                             " 2,500 tokens daily budget (resets in 12h00m, UTC).")
    assert error.headers["retry-after"] == "43200"
    assert (await ledger.check([tenant], now=NOON + DAY / 2)).allowed  # the next UTC day


async def test_charging_is_idempotent_by_request_id(ledger: UsageLedger) -> None:
    assert await ledger.charge(["tenant:acme", "key:acme:ci"], charge("r1"), now=NOON)
    assert not await ledger.charge(["tenant:acme", "key:acme:ci"], charge("r1"), now=NOON)
    results = await asyncio.gather(*(
        ledger.charge(["tenant:acme"], charge("r2"), now=NOON) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    report = await ledger.report("tenant:acme", days=1, now=NOON)
    assert report.rows[0].requests == 2
    assert report.total_tokens == 2200


async def test_monthly_money_budget_per_key_and_tenant(ledger: UsageLedger) -> None:
    key = BudgetScope("key:acme:ci", BudgetConfig(monthly_usd=0.01))
    tenant = BudgetScope("tenant:acme", BudgetConfig(daily_usd=1.0, monthly_tokens=10**6))
    for day in range(3):  # 3 x $0.0028
        await ledger.charge(["tenant:acme", "key:acme:ci"], charge(f"r{day}"), now=NOON + day * DAY)
    status = await ledger.check([key, tenant], now=NOON + 2 * DAY)
    assert status.allowed
    assert {(s.scope, s.period, s.unit): round(s.used, 4) for s in status.states} == {
        ("key:acme:ci", "month", "usd"): 0.0084,
        ("tenant:acme", "day", "usd"): 0.0028,
        ("tenant:acme", "month", "tokens"): 3300,
    }
    await ledger.charge(["tenant:acme", "key:acme:ci"], charge("r3"), now=NOON + 2 * DAY)
    status = await ledger.check([key, tenant], now=NOON + 2 * DAY)
    assert not status.allowed
    assert [s.scope for s in status.states if s.exceeded] == ["key:acme:ci"]
    assert "$0.01 monthly budget" in status.error().message
    # July starts a new month
    assert (await ledger.check([key, tenant], now=NOON + 12 * DAY)).allowed


async def test_report_by_model_and_day(ledger: UsageLedger) -> None:
    await ledger.charge(["tenant:acme"], charge("a", model="gpt-x", cached=200), now=NOON - DAY)
    await ledger.charge(["tenant:acme"], charge("b", model="llama:8b|v1"), now=NOON)
    await ledger.charge(["tenant:acme"], charge("c", model="gpt-x"), now=NOON)
    await ledger.charge(["tenant:other"], charge("d", model="gpt-x"), now=NOON)
    report = await ledger.report("tenant:acme", days=7, now=NOON)
    rows = [(r.day, r.model, r.requests, r.input_tokens, r.cached_input_tokens, r.output_tokens)
            for r in report.rows]
    assert rows == [
        ("2024-06-19", "gpt-x", 1, 1000, 0, 100),
        ("2024-06-19", "llama:8b|v1", 1, 1000, 0, 100),
        ("2024-06-18", "gpt-x", 1, 800, 200, 100),
    ]
    assert report.rows[2].cost_usd == pytest.approx((800 * 2 + 200 * 0.5 + 100 * 8) / 1e6)
    assert report.total_tokens == 3300
    assert report.total_usd == pytest.approx(0.0028 * 2 + 0.0025)
    assert (await ledger.report("tenant:acme", days=1, now=NOON)).total_tokens == 2200


def test_days_are_utc() -> None:
    assert day_label(NOON) == "2024-06-19"
    assert day_label(NOON + 11.99 * 3600) == "2024-06-19"
    assert day_label(NOON + 12 * 3600) == "2024-06-20"


def test_a_budget_needs_a_cap() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BudgetConfig()


async def test_redis_records_expire() -> None:
    client = await connect_or_skip()
    namespace = unique_namespace()
    try:
        ledger = RedisUsageLedger(client, namespace, retention_days=2, dedup_s=600)
        await ledger.charge(["tenant:acme"], charge("r1"), now=NOON)
        # every key of a tenant carries its hash tag (one Cluster slot per tenant)
        assert 0 < await client.ttl(f"{namespace}:{{acme}}:u:tenant:acme:d:2024-06-19") <= 2 * 86_400
        assert await client.ttl(f"{namespace}:{{acme}}:u:tenant:acme:m:2024-06") > 300 * 86_400
        assert 0 < await client.ttl(f"{namespace}:{{acme}}:charged:r1") <= 600
    finally:
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        await client.delete(*keys)
        await client.aclose()


async def test_memory_ledger_forgets_charged_ids_in_order_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The id memory must not grow with traffic (it made every charge slower than the last)."""
    from policies import spend

    monkeypatch.setattr(spend, "_MAX_REMEMBERED_IDS", 50)
    ledger = spend.MemoryUsageLedger(dedup_s=100)
    charge = lambda i: spend.Charge(f"r{i}", "m", 1, 0, 1, 0.0)
    for i in range(120):
        assert await ledger.charge(["tenant:t"], charge(i), now=1_000.0 + i)
    assert len(ledger._charged) == 50, "bounded"
    assert not await ledger.charge(["tenant:t"], charge(119), now=1_200.0), "a recent id is still deduplicated"
    await ledger.charge(["tenant:t"], charge(500), now=10_000.0)
    assert list(ledger._charged) == ["r500"], "expired ids are forgotten"


async def test_memory_ledger_remembers_ids_ten_minutes_and_20k_at_most() -> None:
    """A retried charge comes within seconds; remembering ids for days only grew memory."""
    import tracemalloc

    from gateway.accounting import limit_stores
    from policies.limits_config import LimitsStoreConfig

    _, ledger = limit_stores(None, LimitsStoreConfig())  # the per-process ledger, as served
    assert await ledger.charge(["tenant:t"], charge("retried"), now=NOON)
    assert not await ledger.charge(["tenant:t"], charge("retried"), now=NOON + 599)
    assert await ledger.charge(["tenant:t"], charge("retried"), now=NOON + 601), "forgotten after 10 min"
    _, short = limit_stores(None, LimitsStoreConfig(charge_dedup_s=60))  # a shorter setting wins
    assert await short.charge(["tenant:t"], charge("r"), now=NOON)
    assert await short.charge(["tenant:t"], charge("r"), now=NOON + 61)

    memory = MemoryUsageLedger()
    tracemalloc.start()
    try:
        for i in range(30_000):  # 300 s at 100 req/s: the cap binds before the 10 minutes
            await memory.charge(["tenant:t"], charge(f"{i:032x}"), now=NOON + i / 100)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(memory._charged) == 20_000
    assert held < 5_000_000, f"{held / 1e6:.1f} MB for 20k ids"  # was up to 200k ids, 43 MB
    assert not await memory.charge(["tenant:t"], charge(f"{29_999:032x}"), now=NOON + 300)
    report = await memory.report("tenant:t", days=1, now=NOON + 300)
    assert report.rows[0].requests == 30_000
