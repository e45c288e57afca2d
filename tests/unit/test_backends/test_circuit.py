"""The circuit breaker's states, with a fake clock."""

from __future__ import annotations

from backends.circuit import CircuitBreaker, CircuitBreakerConfig
from gateway.upstream import RetryBudget, backoff_s
from policies.document import RetryConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_open_it_and_it_refuses_until_open_s() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=3, open_s=10), clock)
    for _ in range(2):
        breaker.on_failure()
    assert breaker.state == "closed" and breaker.available
    breaker.on_failure()
    assert breaker.state == "open" and not breaker.available
    clock.now = 9.9
    assert not breaker.available


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=1, open_s=5), clock)
    breaker.on_failure()
    clock.now = 5.0
    assert breaker.available and breaker.state == "half_open"
    breaker.on_attempt()
    assert not breaker.available  # the probe is in flight: nobody else
    breaker.on_failure()
    assert breaker.state == "open" and not breaker.available
    clock.now = 10.0
    assert breaker.available
    breaker.on_attempt()
    breaker.on_success()
    assert breaker.state == "closed" and breaker.available


def test_an_error_rate_over_the_window_opens_it_too() -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=100, error_rate=0.5, window=10,
                                                  min_requests=10), Clock())
    for i in range(9):
        (breaker.on_failure if i % 2 else breaker.on_success)()
    assert breaker.state == "closed"  # 4 of 9: too few requests to judge
    breaker.on_failure()
    assert breaker.state == "open"  # 5 of 10 failed


def test_successes_reset_the_consecutive_count_and_disabled_never_opens() -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=2, min_requests=100), Clock())
    for _ in range(10):
        breaker.on_failure()
        breaker.on_success()
    assert breaker.state == "closed"
    off = CircuitBreaker(CircuitBreakerConfig(enabled=False, consecutive_failures=1), Clock())
    off.on_failure()
    assert off.available and off.state == "closed"


def test_the_retry_budget_bounds_retries_to_a_share_of_requests() -> None:
    clock = Clock()
    budget = RetryBudget(RetryConfig(budget_ratio=0.25, budget_min_per_s=0.0), clock)
    spent = sum(budget.withdraw() for _ in range(100))
    assert spent == 10  # the banked minimum: ten retries
    for _ in range(40):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(100)) == 10  # 40 requests earn 10 retries


def test_the_retry_budget_refills_per_second() -> None:
    clock = Clock()
    budget = RetryBudget(RetryConfig(budget_ratio=0.0, budget_min_per_s=2.0), clock)
    while budget.withdraw():
        pass
    clock.now += 1.0
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]


def test_backoff_is_jittered_under_an_exponential_ceiling() -> None:
    config = RetryConfig(backoff_initial_s=0.1, backoff_max_s=0.3)
    assert all(0 <= backoff_s(1, config) <= 0.1 for _ in range(100))
    assert all(0 <= backoff_s(5, config) <= 0.3 for _ in range(100))
