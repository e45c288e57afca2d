"""One contract for every RateLimiter: in memory and on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from policies.limits_config import RateLimitConfig
from policies.rate_limit import (
    MemoryRateLimiter,
    RateLimiter,
    RateScope,
    RedisRateLimiter,
    format_reset,
)
from tests.redis_support import connect_or_skip, unique_namespace

T0 = 1_700_000_000.0


def scope(scope_id: str, **limits: float) -> RateScope:
    return RateScope(scope_id, RateLimitConfig(**limits))  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    client = await connect_or_skip()
    namespace = unique_namespace()
    try:
        yield RedisRateLimiter(client, namespace)
    finally:
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_burst_then_refused_with_retry_after(limiter: RateLimiter) -> None:
    key = scope("key:a", rpm=6, burst=0.5)  # a bucket of 3, refilled one every 10 s
    admitted = [(await limiter.admit([key], now=T0)).allowed for _ in range(4)]
    assert admitted == [True, True, True, False]
    refused = await limiter.admit([key], now=T0 + 4)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(6.0)
    (state,) = refused.states
    assert (state.scope, state.dimension, state.limit, state.remaining, state.blocked) == (
        "key:a", "requests", 6, 0, True)


async def test_buckets_refill_at_the_per_minute_rate(limiter: RateLimiter) -> None:
    key = scope("key:a", rpm=60)  # one a second, up to 60
    for _ in range(60):
        assert (await limiter.admit([key], now=T0)).allowed
    assert not (await limiter.admit([key], now=T0 + 0.5)).allowed
    decision = await limiter.admit([key], now=T0 + 1.0)
    assert decision.allowed
    assert decision.states[0].remaining == 0
    assert decision.states[0].reset_s == pytest.approx(60.0)
    later = await limiter.admit([key], now=T0 + 31.0)
    assert later.allowed and later.states[0].remaining == 29  # 30 refilled, 1 taken
    assert later.states[0].reset_s == pytest.approx(31.0)


async def test_every_scope_must_allow_and_a_refusal_takes_nothing(limiter: RateLimiter) -> None:
    key = scope("key:a", rpm=10)
    tenant = scope("tenant:t", rpm=2)
    assert (await limiter.admit([key, tenant], now=T0)).allowed
    assert (await limiter.admit([key, tenant], now=T0)).allowed
    refused = await limiter.admit([key, tenant], now=T0)
    assert not refused.allowed
    assert [s.scope for s in refused.states if s.blocked] == ["tenant:t"]
    assert refused.retry_after_s == pytest.approx(30.0)
    # the key's bucket did not pay for the refused request: 8 left, not 7
    alone = await limiter.admit([key], now=T0)
    assert alone.states[0].remaining == 7
    headers = refused.headers()
    assert headers["x-ratelimit-limit-requests"] == "2"  # the refusing scope is reported
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.error().headers["retry-after"] == "30"


async def test_tokens_per_minute(limiter: RateLimiter) -> None:
    tenant = scope("tenant:t", tpm=1200)  # 20 tokens a second
    assert (await limiter.admit([tenant], tokens=800, now=T0)).allowed
    refused = await limiter.admit([tenant], tokens=800, now=T0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(20.0)  # 400 more at 20/s
    assert refused.states[0].dimension == "tokens" and refused.states[0].remaining == 400
    assert (await limiter.admit([tenant], tokens=800, now=T0 + 20)).allowed


async def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket(limiter: RateLimiter) -> None:
    tenant = scope("tenant:t", tpm=600)  # 10 a second
    assert (await limiter.admit([tenant], tokens=1000, now=T0)).allowed  # bucket full: admitted
    refused = await limiter.admit([tenant], tokens=1, now=T0 + 10)
    assert not refused.allowed  # 400 tokens of debt, 100 repaid
    assert refused.retry_after_s == pytest.approx(30.1)
    assert (await limiter.admit([tenant], tokens=1, now=T0 + 41)).allowed


async def test_adjust_corrects_the_estimate(limiter: RateLimiter) -> None:
    tenant = scope("tenant:t", rpm=100, tpm=1000)
    assert (await limiter.admit([tenant], tokens=100, now=T0)).allowed
    await limiter.adjust([tenant], 500, now=T0)  # the request really used 600
    decision = await limiter.admit([tenant], tokens=0, now=T0)
    tokens = next(s for s in decision.states if s.dimension == "tokens")
    assert tokens.remaining == 400
    await limiter.adjust([tenant], -5000, now=T0)  # refunds never overfill the bucket
    decision = await limiter.admit([tenant], tokens=0, now=T0)
    tokens = next(s for s in decision.states if s.dimension == "tokens")
    assert tokens.remaining == 1000
    requests = next(s for s in decision.states if s.dimension == "requests")
    assert requests.remaining == 97  # adjusting kept the request bucket's level


async def test_headers_have_openai_names_and_formats(limiter: RateLimiter) -> None:
    key = scope("key:a", rpm=60, tpm=6000)
    tenant = scope("tenant:t", rpm=100, tpm=1000)
    decision = await limiter.admit([key, tenant], tokens=400, now=T0)
    assert decision.headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "600",
        "x-ratelimit-reset-tokens": "24s",
    }


async def test_scopes_are_independent(limiter: RateLimiter) -> None:
    assert (await limiter.admit([scope("key:a", rpm=1)], now=T0)).allowed
    assert (await limiter.admit([scope("key:b", rpm=1)], now=T0)).allowed
    assert not (await limiter.admit([scope("key:a", rpm=1)], now=T0)).allowed


async def test_default_clock() -> None:
    limiter = MemoryRateLimiter(clock=lambda: T0)
    key = scope("key:a", rpm=1)
    assert (await limiter.admit([key])).allowed
    assert not (await limiter.admit([key])).allowed


async def test_two_limiters_sharing_redis_enforce_one_limit() -> None:
    """Two gateway processes' limiters on one Redis admit no more than the limit together."""
    clients = [await connect_or_skip(), await connect_or_skip()]
    namespace = unique_namespace()
    limiters = [RedisRateLimiter(c, namespace) for c in clients]
    tenant = scope("tenant:shared", rpm=20)
    try:
        decisions = await asyncio.gather(*(
            limiters[i % 2].admit([tenant]) for i in range(60)))  # Redis's own clock
        assert 20 <= sum(d.allowed for d in decisions) <= 21
    finally:
        await clients[0].delete(f"{namespace}:tenant:shared")
        for client in clients:
            await client.aclose()


async def test_redis_keys_expire_once_buckets_are_full_again() -> None:
    client = await connect_or_skip()
    namespace = unique_namespace()
    try:
        limiter = RedisRateLimiter(client, namespace)
        await limiter.admit([scope("key:a", rpm=60, tpm=600)], tokens=30)
        ttl_ms = await client.pttl(f"{namespace}:{{a}}:key:a")  # under the tenant's hash tag
        assert 3_000 < ttl_ms <= 4_000  # 30 tokens at 10/s, plus a second
    finally:
        await client.delete(f"{namespace}:key:a")
        await client.aclose()


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0ms"), (0.02, "20ms"), (0.0171, "18ms"), (1, "1s"), (1.5, "1.5s"), (8.64, "8.64s"),
    (59.999, "59.999s"), (360, "6m0s"), (90.5, "1m30.5s"), (3600, "1h0m0s"), (3725, "1h2m5s"),
])
def test_format_reset_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_a_limit_needs_rpm_or_tpm() -> None:
    with pytest.raises(ValueError, match="rpm, tpm or both"):
        RateLimitConfig()
