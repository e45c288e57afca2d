"""The guards: a bad canary breaches within a bounded number of requests, noise does not."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.canary import GuardsConfig, Outcome, VersionStats, judge
from policies.canary.stats import Histogram
from tests.unit.test_canary._support import outcome

GUARDS = GuardsConfig(min_samples=50)


def drive(seed: int, *, canary_errors: float = 0.01, canary_latency: float = 0.2,
          weight: float = 0.25, requests: int = 4_000) -> tuple[float | None, list[str]]:
    """Split traffic, judging every 10 requests; canary requests seen at the first breach."""
    rng = random.Random(seed)
    stable, canary = VersionStats(), VersionStats()
    for i in range(requests):
        if rng.random() < weight:
            canary.add(outcome(rng, error_rate=canary_errors, latency=canary_latency))
        else:
            stable.add(outcome(rng))
        if i % 10 == 0:
            verdict = judge(stable, canary, GUARDS)
            if verdict.judgement == "breach":
                return canary.requests, verdict.reasons
    return None, []


@pytest.mark.parametrize("seed", range(20))
def test_twenty_percent_errors_breach_within_150_canary_requests(seed: int) -> None:
    seen, reasons = drive(seed, canary_errors=0.2)
    assert seen is not None and seen <= 150
    assert any(r.startswith("error_rate") for r in reasons)


@pytest.mark.parametrize("seed", range(20))
def test_doubled_latency_breaches_within_100_canary_requests(seed: int) -> None:
    seen, reasons = drive(seed, canary_latency=0.4)
    assert seen is not None and seen <= 100
    assert any(r.startswith("ttft_p95") for r in reasons)


def test_a_healthy_canary_rarely_breaches_even_judged_every_ten_requests() -> None:
    breaches = sum(drive(seed)[0] is not None for seed in range(60))
    assert breaches <= 2


def test_one_very_slow_request_does_not_breach() -> None:
    rng = random.Random(3)
    stable, canary = VersionStats(), VersionStats()
    for _ in range(500):
        stable.add(outcome(rng, error_rate=0))
    for _ in range(100):
        canary.add(outcome(rng, error_rate=0))
    canary.add(Outcome(ok=True, status=200, ttft_s=60.0, e2e_s=120.0))
    verdict = judge(stable, canary, GUARDS)
    assert verdict.judgement == "pass", verdict.reasons


def test_a_few_errors_on_a_clean_stable_do_not_breach() -> None:
    stable = VersionStats(requests=5_000)
    canary = VersionStats(requests=200, errors=1)
    assert judge(stable, canary, GuardsConfig(min_samples=50, ttft_p95_ratio=None,
                                              e2e_p95_ratio=None)).judgement == "pass"


def test_min_samples_are_respected() -> None:
    stable = VersionStats(requests=10_000, errors=10)
    canary = VersionStats(requests=49, errors=49)
    verdict = judge(stable, canary, GuardsConfig(min_samples=50, ttft_p95_ratio=None, e2e_p95_ratio=None))
    assert verdict.judgement == "wait"
    assert "needs 50" in verdict.reasons[0]
    canary.requests, canary.errors = 50, 50
    assert judge(stable, canary, GuardsConfig(min_samples=50, ttft_p95_ratio=None,
                                              e2e_p95_ratio=None)).judgement == "breach"


def test_moderation_blocks_are_judged_like_errors() -> None:
    stable = VersionStats(requests=2_000, blocks=20)
    canary = VersionStats(requests=300, blocks=30)
    verdict = judge(stable, canary, GuardsConfig(min_samples=50, ttft_p95_ratio=None, e2e_p95_ratio=None))
    assert verdict.judgement == "breach"
    assert verdict.reasons[0].startswith("moderation_block_rate")


def test_a_disabled_guard_is_not_judged() -> None:
    verdict = judge(VersionStats(requests=100), VersionStats(requests=100, errors=100),
                    GuardsConfig(min_samples=50, error_rate_ratio=None, ttft_p95_ratio=None, e2e_p95_ratio=None))
    assert [c.guard for c in verdict.checks] == ["moderation_block_rate"]
    assert verdict.judgement == "pass"


def test_client_errors_are_not_version_errors() -> None:
    stats = VersionStats()
    for status in (400, 404, 429, 500, 502, None):
        stats.add(Outcome(ok=False, status=status))
    assert (stats.requests, stats.errors) == (6, 4)


@given(st.lists(st.floats(0.0005, 1_000), min_size=20, max_size=300))
def test_histogram_quantile_is_within_a_bucket(samples: list[float]) -> None:
    hist = Histogram()
    for s in samples:
        hist.add(s)
    ordered = sorted(samples)
    rank = int(0.95 * len(ordered))  # the p95 lies between these neighbours
    estimate = hist.quantile(0.95)
    assert estimate is not None
    assert min(ordered[rank - 2], 0.001) / 1.1 <= estimate <= max(ordered[rank], 0.001) * 1.1


def test_count_above_interpolates_inside_a_bucket() -> None:
    hist = Histogram()
    for s in (0.1, 0.2, 0.4, 0.8):
        hist.add(s, 10)
    assert hist.count_above(0.05) == 40
    assert hist.count_above(0.3) == 20
    assert 0 <= hist.count_above(0.8) <= 10
    assert hist.count_above(5.0) == 0
