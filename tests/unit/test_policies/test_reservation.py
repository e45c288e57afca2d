"""Reserve, then settle: one contract for both ledgers (memory, real Redis), and the arithmetic
property-tested: no interleaving of reservations and settlements passes a cap."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.types import Usage
from policies.limits_config import BudgetConfig, PriceConfig
from policies.reservation import Cost, Held
from policies.spend import (
    BudgetExceededError,
    BudgetScope,
    Charge,
    MemoryUsageLedger,
    PeriodTotals,
    UsageLedger,
    grant,
)
from policies.spend_redis import RedisUsageLedger
from tests.redis_support import connect_or_skip, unique_namespace

NOON = 1_718_798_400.0  # 2024-06-19 12:00:00 UTC
PRICES = PriceConfig(input=10.0, output=30.0)  # dollars per million tokens
LATER = NOON + 60
Overflow = Literal["clamp", "reject"]


def cost(prompt: int = 25, output: int = 100, choices: int = 1) -> Cost:
    return Cost(prompt, prompt * PRICES.input / 1e6, choices, PRICES.output / 1e6, output)


def used(request_id: str, prompt: int, completion: int) -> Charge:
    return Charge.from_usage(request_id, "m", Usage(prompt, completion, prompt + completion), PRICES)


async def test_concurrent_requests_cannot_overshoot_a_dollar_budget(ledger: UsageLedger) -> None:
    # issue 15 finding 3: 50 concurrent max_tokens=100 requests at $0.0155 a day were all admitted
    scope = BudgetScope("tenant:t", BudgetConfig(daily_usd=0.0155, max_tokens_overflow="reject"))
    outcomes = await asyncio.gather(*(ledger.reserve([scope], cost(), f"r{i}", "m", LATER, now=NOON)
                                      for i in range(50)))
    granted = [o.reservation for o in outcomes if o.reservation is not None]
    assert len(granted) == 4, "each may cost $0.00325: four fit in $0.0155"
    assert sum(r.usd for r in granted) <= 0.0155
    for reservation in granted:  # every one uses all it asked for: the budget is exactly spent
        assert await ledger.settle(reservation, used(reservation.request_id, 25, 100), now=NOON)
    report = await ledger.report("tenant:t", 1, now=NOON)
    assert report.total_usd == pytest.approx(4 * 0.00325) and report.total_usd <= 0.0155
    refused = next(o for o in outcomes if o.reservation is None).status.error()
    assert isinstance(refused, BudgetExceededError) and refused.code == "insufficient_quota"
    assert "100 output tokens x 1 choice" in refused.message


async def test_a_clamping_budget_grants_what_is_left(ledger: UsageLedger) -> None:
    # issue 15 finding 3: n=128, max_tokens=1000 at a nearly spent budget charged 248x what was left
    scope = BudgetScope("tenant:t", BudgetConfig(daily_usd=0.05))
    first = (await ledger.reserve([scope], cost(output=1500), "big", "m", LATER, now=NOON)).reservation
    assert first is not None and first.output == 1500
    await ledger.settle(first, used("big", 25, 1500), now=NOON)  # $0.04525 spent, $0.00475 left
    outcome = await ledger.reserve([scope], cost(output=1000, choices=128), "n128", "m", LATER, now=NOON)
    reservation = outcome.reservation
    assert reservation is not None and reservation.output == 1, "one token for each of 128 choices"
    assert 0.04525 + reservation.usd <= 0.05
    assert (await ledger.reserve([scope], cost(output=1000, choices=128), "next", "m", LATER,
                                 now=NOON)).reservation is None, "nothing is left for another"
    await ledger.settle(reservation, used("n128", 25, 0), now=NOON)  # the rest is returned
    again = (await ledger.reserve([scope], cost(output=1000, choices=128), "again", "m", LATER, now=NOON))
    assert again.reservation is not None and again.reservation.output == 1


async def test_settling_charges_real_usage_once_and_returns_the_rest(ledger: UsageLedger) -> None:
    scope = BudgetScope("key:t:k", BudgetConfig(daily_tokens=1000))
    reservation = (await ledger.reserve([scope], cost(prompt=100, output=800), "r", "m", LATER,
                                        now=NOON)).reservation
    assert reservation is not None and reservation.tokens == 900
    assert (await ledger.reserve([scope], cost(prompt=100, output=10), "s", "m", LATER, now=NOON)
            ).reservation is None, "100 + 10 does not fit beside 900 held"
    assert await ledger.settle(reservation, used("r", 100, 50), now=NOON)
    assert not await ledger.settle(reservation, used("r", 100, 50), now=NOON), "exactly once"
    report = await ledger.report("key:t:k", 1, now=NOON)
    assert report.total_tokens == 150
    retry = (await ledger.reserve([scope], cost(prompt=100, output=800), "t", "m", LATER, now=NOON))
    assert retry.reservation is not None and retry.reservation.output == 750, "clamped to 1000 - 150 - 100"


async def test_an_expired_reservation_is_charged_in_full_once(ledger: UsageLedger) -> None:
    # issue 15 finding 5: a gateway killed mid-stream never settles; its reservation must become a charge
    scope = BudgetScope("tenant:t", BudgetConfig(daily_tokens=10_000))
    reservation = (await ledger.reserve([scope], cost(prompt=30, output=200), "crashed", "m", NOON + 5,
                                        now=NOON)).reservation
    assert reservation is not None
    assert await ledger.sweep(now=NOON + 1) == [], "not expired yet"
    swept = await ledger.sweep(now=NOON + 6)
    assert [(ids, c.total_tokens, c.request_id) for ids, c in swept] == [(("tenant:t",), 230, "crashed")]
    assert await ledger.sweep(now=NOON + 7) == []
    assert not await ledger.settle(reservation, used("crashed", 30, 10), now=NOON + 8), "already charged"
    report = await ledger.report("tenant:t", 1, now=NOON)
    assert report.total_tokens == 230 and report.rows[0].requests == 1
    # the hold is gone: the whole budget but the charge is available again
    again = await ledger.reserve([scope], cost(prompt=30, output=20_000), "next", "m", LATER, now=NOON)
    assert again.reservation is not None and again.reservation.output == 10_000 - 230 - 30


async def test_renewed_reservations_do_not_expire(ledger: UsageLedger) -> None:
    scope = BudgetScope("tenant:t", BudgetConfig(daily_tokens=10_000))
    reservation = (await ledger.reserve([scope], cost(), "live", "m", NOON + 5, now=NOON)).reservation
    assert reservation is not None
    await ledger.renew([reservation], NOON + 60)
    assert await ledger.sweep(now=NOON + 30) == []
    assert await ledger.settle(reservation, used("live", 25, 5), now=NOON + 31)
    assert (await ledger.report("tenant:t", 1, now=NOON)).total_tokens == 30


async def test_uncapped_scopes_are_reserved_and_charged(ledger: UsageLedger) -> None:
    reservation = (await ledger.reserve([BudgetScope("tenant:t", None), BudgetScope("key:t:k", None)],
                                        cost(output=10**6), "r", "m", NOON + 1, now=NOON)).reservation
    assert reservation is not None and reservation.output == 10**6
    await ledger.sweep(now=NOON + 2)
    for scope_id in ("tenant:t", "key:t:k"):
        assert (await ledger.report(scope_id, 1, now=NOON)).total_tokens == 25 + 10**6


def test_redis_script_mirrors_the_reference() -> None:
    """The Lua reserve script and ``grant`` agree on a grid of budgets, spend and requests."""
    async def compare() -> None:
        client = await connect_or_skip()
        namespace = unique_namespace()
        try:
            redis_ledger = RedisUsageLedger(client, namespace)
            grid: list[tuple[int, int, int, int, Overflow]] = [
                (1000, 0, 500, 1, "clamp"), (1000, 900, 500, 1, "clamp"), (1000, 900, 500, 1, "reject"),
                (1000, 999, 1, 1, "clamp"), (1000, 1000, 1, 1, "clamp"), (5000, 100, 1000, 7, "clamp")]
            for index, (limit, spent, output, choices, mode) in enumerate(grid):
                scope = BudgetScope(f"tenant:g{index}", BudgetConfig(daily_tokens=limit, max_tokens_overflow=mode))
                if spent:
                    await redis_ledger.charge([scope.id], used(f"s{index}", spent, 0), now=NOON)
                request = cost(prompt=10, output=output, choices=choices)
                expected, _ = grant([scope], {scope.id: PeriodTotals(spent, 0, spent, 0)}, {}, request, NOON)
                outcome = await redis_ledger.reserve([scope], request, f"r{index}", "m", LATER, now=NOON)
                assert (outcome.reservation.output if outcome.reservation else 0) == expected, index
        finally:
            keys = [k async for k in client.scan_iter(f"{namespace}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(compare())


@st.composite
def requests(draw: st.DrawFn) -> tuple[Cost, float]:
    prompt = draw(st.integers(0, 400))
    output = draw(st.integers(1, 2000))
    choices = draw(st.integers(1, 8))
    used_share = draw(st.floats(0, 1))  # how much of its grant the answer really uses
    return Cost(prompt, prompt * 2e-6, choices, 6e-6, output), used_share


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(requests(), st.booleans()), min_size=1, max_size=40),
       st.sampled_from(["clamp", "reject"]), st.integers(100, 20_000), st.floats(0.001, 0.2))
def test_no_interleaving_passes_a_cap(steps: list[tuple[tuple[Cost, float], bool]], mode: Overflow,
                                      daily_tokens: int, daily_usd: float) -> None:
    """Reservations granted and settled in any order (settling some at once, others at the end)
    never take a scope past its caps, and nothing held or spent goes negative."""
    scope = BudgetScope("tenant:p", BudgetConfig(daily_tokens=daily_tokens, daily_usd=daily_usd,
                                                 max_tokens_overflow=mode))

    async def run() -> None:
        ledger = MemoryUsageLedger(clock=lambda: NOON)
        open_ = []
        for index, ((request, share), settle_now) in enumerate(steps):
            outcome = await ledger.reserve([scope], request, f"r{index}", "m", LATER)
            reservation = outcome.reservation
            if reservation is None:
                continue
            assert 1 <= reservation.output <= request.output
            if mode == "reject":
                assert reservation.output == request.output
            completion = math.floor(reservation.output * share) * request.choices
            charge = Charge(f"r{index}", "m", request.prompt_tokens, 0, completion,
                            request.prompt_usd + completion * request.output_usd)
            if settle_now:
                await ledger.settle(reservation, charge)
            else:
                open_.append((reservation, charge))
            totals = await ledger.check([scope])
            held = ledger._held.get(scope.id, Held())  # what is held plus spent stays within the caps
            day = next(s for s in totals.states if s.unit == "tokens")
            usd = next(s for s in totals.states if s.unit == "usd")
            assert 0 <= day.used + held.tokens <= daily_tokens
            assert 0 <= usd.used + held.usd <= daily_usd + 1e-9
        for reservation, charge in open_:
            await ledger.settle(reservation, charge)
        assert ledger._held == {}
        report = await ledger.report(scope.id, 1)
        assert report.total_tokens <= daily_tokens and report.total_usd <= daily_usd + 1e-9

    asyncio.run(run())


async def test_a_reservation_survives_redis_forgetting_its_scripts() -> None:
    # the reserve script is sent as EVALSHA in a pipeline (no SCRIPT EXISTS round trip): a Redis
    # that restarted or flushed its scripts answers NOSCRIPT, and the ledger loads it again
    client = await connect_or_skip()
    namespace = unique_namespace()
    ledger = RedisUsageLedger(client, namespace)
    scope = BudgetScope("tenant:flush", BudgetConfig(daily_tokens=10_000))
    try:
        first = await ledger.reserve([scope], cost(), "before", "m", LATER, now=NOON)
        await client.script_flush()
        second = await ledger.reserve([scope], cost(), "after", "m", LATER, now=NOON)
        assert first.reservation is not None and second.reservation is not None
        assert second.reservation.tokens == first.reservation.tokens
        for reservation in (first.reservation, second.reservation):
            assert await ledger.settle(reservation, used(reservation.request_id, 25, 100), now=NOON)
        assert (await ledger.report("tenant:flush", 1, now=NOON)).total_tokens == 250
    finally:
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
