"""Admission and charging: count, fit the context, check limits and budgets; charge at the end.

``admit`` runs before routing and either raises (400 context, 429 limit or budget, 503 store
down and fail_closed) or returns a ``Ticket``. ``settle`` charges the real usage when the
request ends, however it ends (finished, cut by the client, failed after tokens were made):
it runs in its own task, so a client that went away cannot cancel the charge.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backends.types import ChatRequest, Message, TextRequest, Tool, Usage
from policies.context_budget import BudgetResult, fit_context
from policies.document import ModelConfig, Policy
from policies.keys import Caller
from policies.limits_config import LimitsStoreConfig
from policies.rate_limit import (
    MemoryRateLimiter,
    RateLimiter,
    RateScope,
    RedisRateLimiter,
)
from policies.resilient import ResilientLedger, ResilientRateLimiter, StoreHealth
from policies.spend import (
    MEMORY_DEDUP_S,
    Charge,
    MemoryUsageLedger,
    RedisUsageLedger,
    UsageLedger,
)
from policies.tokens import TokenCounter, prompt_chars

log = logging.getLogger("switchyard.accounting")
TRIMMED_HEADER = "x-switchyard-trimmed-tokens"
Call = TypeVar("Call", ChatRequest, TextRequest)


@dataclass
class Ticket:
    """One admitted request: what it counts against, and what it was estimated to use."""

    request_id: str
    model: str
    rate_scopes: list[RateScope]
    budget_ids: list[str]
    estimate: int
    """Prompt tokens counted at admission."""
    model_config: ModelConfig
    headers: dict[str, str] = field(default_factory=dict)
    """``x-ratelimit-*`` and ``x-switchyard-trimmed-tokens`` for the response."""


class Accounting:
    """The process's counter, limiter and ledger (Redis-backed or in memory).

    Args:
        counter: Tokenizers of every model in the policy.
        limiter: Rate limits (resilient wrapper when Redis is used).
        ledger: Usage and spend (resilient wrapper when Redis is used).
    """

    def __init__(self, counter: TokenCounter, limiter: RateLimiter, ledger: UsageLedger) -> None:
        self.counter = counter
        self.limiter = limiter
        self.ledger = ledger
        self._pending: set[asyncio.Task[None]] = set()

    async def admit(self, policy: Policy, caller: Caller, model: str, call: Call,
                    request_id: str) -> tuple[Call, Ticket]:
        """Fit, count, and check limits and budgets; the (possibly trimmed) call and its ticket."""
        config = policy.models[model]
        call, estimate, headers = await self._fit(call, config)
        rate, budgets = list(caller.rate_scopes), caller.budget_scopes
        if rate:
            decision = await self.limiter.admit(rate, requests=1, tokens=estimate)
            headers.update(decision.headers())
            if not decision.allowed:
                raise decision.error()
        if budgets:
            status = await self.ledger.check(budgets, estimate_tokens=estimate)
            if not status.allowed:
                raise status.error()
        ticket = Ticket(request_id, model, rate, list(caller.scope_ids), estimate, config, headers)
        return call, ticket

    async def _fit(self, call: Call, config: ModelConfig) -> tuple[Call, int, dict[str, str]]:
        counter, tokens = self.counter, config.tokens
        if isinstance(call, TextRequest):
            prompt = call.params.prompt
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            count = await counter.offload(len(text), counter.count_text, text, tokens)
            if config.context is None:
                return call, count, {}
            # a text prompt is one turn that cannot be dropped: it fits, or it is refused;
            # max_tokens is clamped or refused as for chat
            requested = call.params.max_tokens if isinstance(call.params.max_tokens, int) else None
            fitted = fit_context([Message(role="user", content="")], lambda _: count, config.context,
                                 max_tokens=requested)
            if fitted.max_tokens is not None and fitted.max_tokens != requested:
                call = msgspec.structs.replace(call, params=msgspec.structs.replace(
                    call.params, max_tokens=fitted.max_tokens))
            return call, count, {}
        params = call.params
        tools = params.tools if isinstance(params.tools, list) else None
        if config.context is None:
            return call, await counter.count_chat_async(params.messages, tools, tokens), {}
        requested = params.max_completion_tokens if isinstance(params.max_completion_tokens, int) \
            else params.max_tokens if isinstance(params.max_tokens, int) else None
        result = await counter.offload(
            prompt_chars(params.messages, tools), _fit_with, counter, params.messages, tools, config, requested)
        headers = {TRIMMED_HEADER: str(result.trimmed_tokens)} if result.is_trimmed else {}
        changes: dict[str, object] = {}
        if result.is_trimmed:
            changes["messages"] = result.messages
        if result.max_tokens is not None and result.max_tokens != requested:
            changes["max_completion_tokens" if isinstance(params.max_completion_tokens, int) else "max_tokens"] = \
                result.max_tokens
        if changes:
            call = msgspec.structs.replace(call, params=msgspec.structs.replace(params, **changes))
        return call, result.prompt_tokens, headers

    def settle(self, ticket: Ticket, usage: Usage | None, generated: str = "") -> Charge:
        """Charge what the request used; counted from the text when the backend sent no usage.

        Returns the charge (tokens and cost) for the request's telemetry; storing it happens
        in the background.
        """
        if usage is None:
            completion = self.counter.count_text(generated, ticket.model_config.tokens) if generated else 0
            usage = Usage(prompt_tokens=ticket.estimate, completion_tokens=completion,
                          total_tokens=ticket.estimate + completion)
        charge = Charge.from_usage(ticket.request_id, ticket.model, usage, ticket.model_config.prices)
        # every request is charged, budgets or not: usage reports cover all traffic
        task = asyncio.get_running_loop().create_task(self._charge(ticket, charge, usage.total_tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return charge

    async def _charge(self, ticket: Ticket, charge: Charge, total_tokens: int) -> None:
        try:
            await self.ledger.charge(ticket.budget_ids, charge)
            if ticket.rate_scopes:
                await self.limiter.adjust(ticket.rate_scopes, total_tokens - ticket.estimate)
        except Exception:  # accounting must never take the gateway down; the wrappers log outages
            log.exception("charging request %s failed", ticket.request_id)

    async def aclose(self) -> None:
        """Let in-flight charges finish (bounded), then flush anything queued for Redis."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        flush = getattr(self.ledger, "flush", None)
        if flush is not None:
            await flush()


def _fit_with(counter: TokenCounter, messages: list[Message], tools: list[Tool] | None,
              config: ModelConfig, requested: int | None) -> BudgetResult:
    assert config.context is not None
    return fit_context(messages, lambda m: counter.count_message(m, config.tokens), config.context,
                       fixed_tokens=counter.count_fixed(tools, config.tokens), max_tokens=requested)


def limit_stores(client: redis.Redis | None, config: LimitsStoreConfig) -> tuple[RateLimiter, UsageLedger]:
    """The process's limiter and ledger: on Redis with per-process fallbacks, or in memory."""
    memory_limiter = MemoryRateLimiter()
    # Redis remembers charged ids for charge_dedup_s (a replay after a long outage must find
    # them); a process only needs to catch a charge retried within seconds, and keeps ids 10 min
    memory_ledger = MemoryUsageLedger(config.usage_retention_days, min(config.charge_dedup_s, MEMORY_DEDUP_S))
    if client is None:
        return memory_limiter, memory_ledger
    limiter = ResilientRateLimiter(RedisRateLimiter(client, "switchyard:rl"), memory_limiter,
                                   StoreHealth("rate limits", config))
    ledger = ResilientLedger(RedisUsageLedger(client, "switchyard:usage", config.usage_retention_days,
                                              config.charge_dedup_s),
                             memory_ledger, StoreHealth("budgets", config))
    return limiter, ledger


def limits_client(url: str, config: LimitsStoreConfig) -> redis.Redis:
    """A Redis client that fails fast: no retries, short timeouts (an outage must cost
    microseconds per request, not redis-py's default ten retries with backoff)."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=config.redis_timeout_s,
                                socket_connect_timeout=config.redis_timeout_s)
