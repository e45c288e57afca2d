"""Sending a request upstream: pick a worker, try, and on a retryable failure try elsewhere.

Only failures before the first byte are retried (a JSON answer's whole body, a stream's
first chunk): after that the client has output and a retry would duplicate it. Each failure
counts against the worker's circuit breaker and excludes that worker for the rest of the
request; the model's deployments are its fallback chain (``router.decide.choose``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from backends.errors import (
    AllBackendsFailedError,
    SwitchyardError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from gateway.telemetry import RequestRecord
from policies.document import RetryConfig
from router.base import RoutingRequest
from router.decide import Choice, ModelRoute, choose

T = TypeVar("T")


class RetryBudget:
    """Retries allowed across all requests: ``budget_ratio`` of a retry earned per request,
    plus ``budget_min_per_s`` per second; at most ten seconds' (or ten retries') worth banked,
    so an outage cannot turn every request into ``max_attempts`` of them."""

    def __init__(self, config: RetryConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._ratio, self._per_s = config.budget_ratio, config.budget_min_per_s
        self._cap = max(10.0, 10 * config.budget_min_per_s)
        self._clock = clock
        self._tokens = self._cap
        self._updated = clock()

    def deposit(self) -> None:
        """A request arrived: it earns ``budget_ratio`` of a retry."""
        self._tokens = min(self._cap, self._tokens + self._ratio)

    def withdraw(self) -> bool:
        """Spend one retry if the budget holds one."""
        now = self._clock()
        self._tokens = min(self._cap, self._tokens + (now - self._updated) * self._per_s)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def backoff_s(attempt: int, config: RetryConfig, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    ceiling = min(config.backoff_max_s, config.backoff_initial_s * 2 ** (attempt - 1))
    return (rng or random).uniform(0, ceiling)


def _retryable(error: BaseException) -> bool:
    return isinstance(error, UpstreamError) and not isinstance(error, UpstreamRejectedError)


async def call_upstream(route: ModelRoute, routing: RoutingRequest, record: RequestRecord, config: RetryConfig,
                        budget: RetryBudget, send: Callable[[Choice], Awaitable[T]]) -> tuple[Choice, T]:
    """``send`` to a chosen worker, retrying elsewhere; the choice that answered and its result.

    The worker's slot is taken before ``send`` and, on success, left for the caller to
    release (a stream holds it until it ends); on failure it is released here.
    """
    budget.deposit()
    errors: list[SwitchyardError] = []
    exclude: set[str] = set()
    queue_timeout = max(d.pool.queue_timeout_s for d in route.deployments)
    for attempt in range(config.max_attempts):
        try:
            with record.phase("switchyard.select_worker") as span:
                attempt_routing = routing if attempt == 0 else dataclasses.replace(routing, retry=True)
                choice = await choose(route, attempt_routing, exclude=frozenset(exclude),
                                      queue_timeout_s=queue_timeout)
                span.set_attributes({"switchyard.worker": choice.worker.id,
                                     "switchyard.worker.reason": choice.selection.reason})
        except UpstreamUnavailableError:
            if not errors:
                raise
            break  # every worker left has failed this request already
        worker = choice.worker
        worker.acquire()
        record.selected(choice.selection, choice.deployment.pool.name, fallback=choice.fallback)
        try:
            result = await send(choice)
        except BaseException as exc:
            worker.release()
            if not _retryable(exc):
                if isinstance(exc, UpstreamRejectedError):
                    worker.circuit.on_success()  # it answered; the request was at fault
                raise
            assert isinstance(exc, UpstreamError)
            worker.circuit.on_failure()
            errors.append(exc)
            exclude.add(worker.id)
            record.attempt_failed(exc)
            if attempt + 1 >= config.max_attempts or not budget.withdraw():
                break
            await asyncio.sleep(backoff_s(attempt + 1, config))
            continue
        worker.circuit.on_success()
        return choice, result
    if len({type(e) for e in errors}) == 1:
        raise errors[-1]  # e.g. every attempt got 429: the client sees 429 and its Retry-After
    raise AllBackendsFailedError(errors)
