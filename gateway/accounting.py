"""Admission and charging: count, fit the context, reserve against limits and budgets; settle.

``Accounting.admit`` returns a ``Ticket``, the admission ticket of the request path::

    async with accounting.admit(policy, caller, model, call, request_id) as ticket:
        ...                       # send ticket.call (max_tokens may be lowered to the budget)
        ticket.record(usage, text)

Entering reserves the most the request can cost (prompt estimate plus its output bound for
every choice) against rate limits (TPM counts it) and budgets, atomically with every other
request in flight, or raises (400 context, 429 limit or budget, 503 store down and
``fail_closed``). Leaving settles exactly once: the recorded usage (checked against the
request's bounds) is charged and the rest of the reservation returned; an exception refunds
it. A stream's relay takes the ticket over (``hand_off``) and settles it when the stream ends.
Charging runs in its own task, so a client that went away cannot cancel it, and a failing
charge never breaks the response. While requests are in flight the process renews their
reservations; a reservation nobody renews (its gateway died) expires and is charged in full
by whichever gateway sweeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

from backends.types import ChatRequest, EmbeddingRequest, PromptTokensDetails, TextRequest, Usage
from gateway.admission_fit import TRIMMED_HEADER, count_prompt, fit_call, prompt_size, uncounted
from gateway.background_pool import BackgroundPool
from policies.charge_journal import ChargeJournal
from policies.document import ModelConfig, Policy
from policies.keys import Caller
from policies.limits_config import LimitsStoreConfig
from policies.rate_limit import (
    MemoryRateLimiter,
    RateLimiter,
    RateScope,
    RedisRateLimiter,
)
from policies.redis_client import RedisClient, connect
from policies.reservation import Cost, Reservation
from policies.spend import (
    MEMORY_DEDUP_S,
    BudgetScope,
    Charge,
    MemoryUsageLedger,
    UsageLedger,
)
from policies.tokens import TokenCounter

log = logging.getLogger("switchyard.accounting")
Call = TypeVar("Call", ChatRequest, TextRequest, EmbeddingRequest)
__all__ = ["TRIMMED_HEADER", "Accounting", "Ticket", "limit_stores", "limits_client"]

PROMPT_FACTOR, PROMPT_SLACK = 16, 4096
"""Most prompt tokens charged: 16x the gateway's estimate plus 4,096 (images and audio are
estimated, and a model's tokenizer may differ from the counting one, but never by this)."""
COUNT_INLINE_CHARS = 16_384
"""Generated text counted exactly at settlement (~1 ms of tiktoken); longer text is scaled."""
RECOUNT_FACTOR, RECOUNT_SLACK = 4, 64
"""For a request that went upstream with no output bound: completion tokens above
``default_max_output_tokens`` per choice are charged up to 4x the streamed text's count + 64."""


class UsageCounters:
    """Upstream usage reports the gateway did not believe, since the process started."""

    def __init__(self) -> None:
        self.clamped = 0
        """Reports with a negative or out-of-bounds count, charged clamped."""
        self.failed = 0
        """Settlements that raised (logged; the response was not affected)."""


class Ticket(Generic[Call]):
    """One admitted request: what it reserved, and its settlement (exactly once).

    Use it as an async context manager (``async with accounting.admit(...) as ticket``), or
    ``await ticket.reserve()`` then ``settle`` on every exit. ``call`` is what to send upstream.
    """

    def __init__(self, accounting: Accounting, policy: Policy, caller: Caller, model: str, call: Call,
                 request_id: str) -> None:
        self._accounting, self._policy, self._caller = accounting, policy, caller
        self.request_id, self.model = request_id, model
        self.call: Call = call
        """What to send upstream: trimmed, ``max_tokens`` clamped to the window and the budget."""
        self.model_config: ModelConfig = policy.models[model]
        self.rate_scopes = list(caller.rate_scopes)
        self.budget_ids = list(caller.scope_ids)
        self.estimate = 0
        """Prompt tokens counted at admission (or behind it: ``counted``)."""
        self.counted = True
        """False while the prompt is not counted: nothing before the answer needed the count
        (no context budget, token limit or budget), so it is counted only if settling needs it."""
        self.prompt_count: asyncio.Future[int] | None = None
        """A long uncounted prompt's count, made in a worker thread while the request runs."""
        self.output_bound: int | None = None
        """Output tokens per choice the upstream may produce, when the gateway knows it."""
        self.choices = 1
        self.reserved_tokens = 0
        """Tokens taken from TPM buckets and held against budgets at admission."""
        self.reservation: Reservation | None = None
        self.headers: dict[str, str] = {}
        """``x-ratelimit-*`` and ``x-switchyard-trimmed-tokens`` for the response."""
        self.usage: Usage | None = None
        self.generated = ""
        self.charge: Charge | None = None
        """Set once settled."""
        self.on_settle: Callable[[Charge], None] | None = None
        """Told the charge when the ticket settles (the request's telemetry record)."""
        self._handed_off = False
        self._reserved = False

    async def reserve(self) -> Ticket[Call]:
        """Fit, count and reserve (once); raises if a limit or budget refuses."""
        if not self._reserved:
            self._reserved = True
            await self._accounting._reserve(self, self._policy, self._caller)
        return self

    async def __aenter__(self) -> Ticket[Call]:
        return await self.reserve()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if error is not None:
            self.refund()
        elif not self._handed_off:
            self.settle(self.usage, self.generated)

    def record(self, usage: Usage | None, generated: str = "") -> None:
        """What the request used, as the relay saw it: settled on exit."""
        self.usage, self.generated = usage, generated

    def hand_off(self) -> None:
        """The stream's relay owns the ticket now and settles it when the stream ends."""
        self._handed_off = True

    def refund(self) -> Charge:
        """Settle with nothing used (refused or failed before any output)."""
        return self.settle(Usage())

    def settle(self, usage: Usage | None, generated: str = "") -> Charge:
        """Charge what the request used (counted from ``generated`` when the upstream sent no
        usage) and return the rest of the reservation; later calls return the first charge."""
        if self.charge is None:
            self.charge = self._accounting._settle(self, usage, generated)
            if self.on_settle is not None:
                self.on_settle(self.charge)
        return self.charge


AnyTicket = Ticket[ChatRequest] | Ticket[TextRequest] | Ticket[EmbeddingRequest]
"""A ticket of any operation (the accounting charges them alike)."""


class Accounting:
    """The process's counter, limiter and ledger (Redis-backed or in memory).

    Args:
        counter: Tokenizers of every model in the policy.
        limiter: Rate limits (resilient wrapper when Redis is used).
        ledger: Usage and spend (resilient wrapper when Redis is used).
        config: Reservation expiry and output bounds (the policy's ``limits``).
        clock: Unix time in seconds.
    """

    def __init__(self, counter: TokenCounter, limiter: RateLimiter, ledger: UsageLedger,
                 config: LimitsStoreConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.counter = counter
        self.limiter = limiter
        self.ledger = ledger
        self.config = config or LimitsStoreConfig()
        self.usage_counters = UsageCounters()
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()
        self._live: weakref.WeakValueDictionary[str, AnyTicket] = \
            weakref.WeakValueDictionary()
        self._upkeep: asyncio.Task[None] | None = None
        self._behind = BackgroundPool("switchyard-count")
        """Counts prompts behind their requests (``_count_behind``)."""

    def admit(self, policy: Policy, caller: Caller, model: str, call: Call, request_id: str) -> Ticket[Call]:
        """The admission ticket of one request; entering it reserves (see ``Ticket``)."""
        return Ticket(self, policy, caller, model, call, request_id)

    def settle(self, ticket: AnyTicket, usage: Usage | None,
               generated: str = "") -> Charge:
        """``ticket.settle(usage, generated)``, for call sites holding the accounting."""
        return ticket.settle(usage, generated)

    async def _reserve(self, ticket: Ticket[Call], policy: Policy, caller: Caller) -> None:
        config = ticket.model_config
        fitted = None if _reads_prompt_count(config, caller) else uncounted(ticket.call)
        if fitted is None:
            fitted = await fit_call(self.counter, ticket.call, config)
        else:
            self._count_behind(ticket)
        ticket.call, ticket.estimate, ticket.headers = fitted.call, fitted.prompt_tokens, fitted.headers
        ticket.counted = fitted.counted
        ticket.output_bound, ticket.choices = fitted.output_bound, fitted.choices
        # the ledgers grant at least one output token per choice (0 means refused): an operation
        # that generates nothing (bound 0) holds that one token, and is charged what it used
        output = max(1, fitted.output_bound if fitted.output_bound is not None
                     else self.config.default_max_output_tokens)
        prices = config.prices
        cost = Cost(fitted.prompt_tokens, fitted.prompt_tokens * prices.input / 1e6 if prices else 0.0,
                    fitted.choices, prices.output / 1e6 if prices else 0.0, output)
        ticket.reserved_tokens = taken = cost.at(output)[0]
        rate = ticket.rate_scopes
        if rate:
            decision = await self.limiter.admit(rate, requests=1, tokens=taken)
            ticket.headers.update(decision.headers())
            if not decision.allowed:
                raise decision.error()
        budgets = {s.id: s for s in caller.budget_scopes}
        scopes = [budgets.get(i, BudgetScope(i, None)) for i in ticket.budget_ids]
        self._start_upkeep()
        try:
            outcome = await self.ledger.reserve(scopes, cost, ticket.request_id, ticket.model,
                                                self._clock() + self.config.reservation_ttl_s)
        except BaseException:
            await self._give_back(rate, taken)
            raise
        reservation = outcome.reservation
        if reservation is None:
            await self._give_back(rate, taken)
            raise outcome.status.error()
        ticket.reservation = reservation
        self._live[ticket.request_id] = ticket
        if reservation.output < output:  # the budget covers less: ask the upstream for less
            ticket.call = fitted.with_max_tokens(reservation.output)
            ticket.output_bound = reservation.output
            ticket.reserved_tokens = reservation.tokens
            await self._give_back(rate, taken - reservation.tokens)

    async def _give_back(self, rate: list[RateScope], tokens: int) -> None:
        if rate and tokens:
            with contextlib.suppress(Exception):  # the bucket refills anyway; admission goes on
                await self.limiter.adjust(rate, -tokens)

    def _settle(self, ticket: AnyTicket, usage: Usage | None,
                generated: str) -> Charge:
        try:
            checked = self.checked_usage(ticket, usage, generated)
            charge = Charge.from_usage(ticket.request_id, ticket.model, checked, ticket.model_config.prices)
        except Exception:  # a charge must never break the response or its access line
            self.usage_counters.failed += 1
            log.exception("settling request %s failed; charging its reservation", ticket.request_id)
            charge = Charge(ticket.request_id, ticket.model, ticket.estimate, 0,
                            max(0, ticket.reserved_tokens - ticket.estimate), 0.0)
        self._live.pop(ticket.request_id, None)
        # every request is charged, budgets or not: usage reports cover all traffic
        task = asyncio.get_running_loop().create_task(self._charge(ticket, charge))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return charge

    def _count_behind(self, ticket: AnyTicket) -> None:
        """Start counting a long uncounted prompt in a low-priority thread (tiktoken releases the
        GIL): settling may need it, the first token does not wait for it."""
        call = ticket.call
        if isinstance(call, EmbeddingRequest) or prompt_size(call) <= self.counter.offload_chars:
            return
        ticket.prompt_count = self._behind.submit(count_prompt, self.counter, call, ticket.model_config)

    def _ensure_counted(self, ticket: AnyTicket) -> None:
        """Give an uncounted ticket its estimate: the thread's count when it is done, else
        counted now (rare: the estimate is read only for a prompt over ``PROMPT_SLACK`` tokens
        or an upstream that reported no usage)."""
        call, pending = ticket.call, ticket.prompt_count
        if ticket.counted or isinstance(call, EmbeddingRequest):
            return
        if pending is not None and pending.done() and not pending.cancelled() and pending.exception() is None:
            ticket.estimate = pending.result()
        else:
            ticket.estimate = count_prompt(self.counter, call, ticket.model_config)
        ticket.counted = True

    def checked_usage(self, ticket: AnyTicket, usage: Usage | None,
                      generated: str = "") -> Usage:
        """The usage to charge: the upstream's, clamped to what the request could have used
        (no negative count, no prompt far beyond the estimate, no completion beyond its output
        bound for every choice); counted from ``generated`` when the upstream sent none."""
        if usage is None or usage.prompt_tokens > PROMPT_SLACK:
            # the prompt cap is at least PROMPT_SLACK whatever the estimate: only a count over it
            # (or none at all) needs the estimate of a prompt admission did not count
            self._ensure_counted(ticket)
        counted = 0
        if generated and (usage is None or ticket.output_bound is None):  # only when it is needed
            counted = self._count_output(ticket, generated)
        prompt_cap = max(PROMPT_FACTOR * ticket.estimate, ticket.estimate + PROMPT_SLACK)
        if ticket.output_bound is not None:
            completion_cap = ticket.output_bound * ticket.choices
        else:
            completion_cap = max(self.config.default_max_output_tokens * ticket.choices,
                                 RECOUNT_FACTOR * counted + RECOUNT_SLACK)
        if usage is None:  # counted by the gateway: held to the same bound as a reported count
            completion = min(counted, completion_cap)
            return Usage(prompt_tokens=ticket.estimate, completion_tokens=completion,
                         total_tokens=ticket.estimate + completion)
        prompt = min(max(usage.prompt_tokens, 0), prompt_cap)
        completion = min(max(usage.completion_tokens, 0), completion_cap)
        cached = min(max(usage.cached_tokens, 0), prompt)
        if (prompt, completion, cached) != (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens):
            self.usage_counters.clamped += 1
            log.warning("request %s: upstream usage (prompt %d, cached %d, completion %d) is outside what"
                        " the request could use (prompt <= %d, completion <= %d); charged as clamped",
                        ticket.request_id, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens,
                        prompt_cap, completion_cap)
        if (prompt, completion, cached) == (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens):
            return usage
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))

    def _count_output(self, ticket: AnyTicket, generated: str) -> int:
        """Tokens in generated text, on the event loop, so bounded: up to ``COUNT_INLINE_CHARS``
        exactly, beyond that the exact count of that much scaled by length (an estimate, used
        only for an upstream that reported no usage or a request sent with no output bound)."""
        config = ticket.model_config.tokens
        if len(generated) <= COUNT_INLINE_CHARS:
            return self.counter.count_text(generated, config)
        head = self.counter.count_text(generated[:COUNT_INLINE_CHARS], config)
        return math.ceil(head * len(generated) / COUNT_INLINE_CHARS)

    async def _charge(self, ticket: AnyTicket, charge: Charge) -> None:
        try:
            if ticket.reservation is not None:
                await self.ledger.settle(ticket.reservation, charge)
            else:
                await self.ledger.charge(ticket.budget_ids, charge)
            if ticket.rate_scopes:
                await self.limiter.adjust(ticket.rate_scopes, charge.total_tokens - ticket.reserved_tokens)
        except Exception:  # accounting must never take the gateway down; the wrappers log outages
            log.exception("charging request %s failed", ticket.request_id)

    def start(self) -> None:
        """Start renewing, sweeping and replaying in the background (also with no traffic: a
        gateway that serves nobody still charges the reservations of a dead one)."""
        self._start_upkeep()

    def _start_upkeep(self) -> None:
        if self._upkeep is None or self._upkeep.done():
            self._upkeep = asyncio.get_running_loop().create_task(self._keep_up(), name="accounting-upkeep")

    async def _keep_up(self) -> None:
        """Renew the reservations of requests in flight, charge expired ones (of any gateway),
        and replay what waits for Redis, every third of the reservation lifetime."""
        interval = self.config.reservation_ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.upkeep()
            except Exception:
                log.warning("accounting upkeep failed", exc_info=True)

    async def upkeep(self) -> None:
        """One round of renewing, sweeping and replaying."""
        live = [t.reservation for t in list(self._live.values()) if t.reservation is not None]
        await self.ledger.renew(live, self._clock() + self.config.reservation_ttl_s)
        swept = await self.ledger.sweep()
        if swept:
            log.warning("charged %d expired reservations in full (their gateway stopped renewing them)",
                        len(swept))
        replay = getattr(self.limiter, "replay", None)
        if replay is not None:
            await replay()

    async def aclose(self) -> None:
        """Let in-flight charges finish (bounded), then flush anything queued for Redis."""
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        flush = getattr(self.ledger, "flush", None)
        if flush is not None:
            await flush()
        self._behind.close()


def _reads_prompt_count(config: ModelConfig, caller: Caller) -> bool:
    """Whether admission needs the prompt's count: to fit a context budget, or to reserve it
    against a token rate limit or a budget."""
    return (config.context is not None or any(s.limits.tpm is not None for s in caller.rate_scopes)
            or any(s.budget is not None for s in caller.budget_scopes))


def limit_stores(client: RedisClient | None, config: LimitsStoreConfig) -> tuple[RateLimiter, UsageLedger]:
    """The process's limiter and ledger: on Redis with per-process fallbacks, or in memory."""
    memory_limiter = MemoryRateLimiter()
    # Redis remembers charged ids for charge_dedup_s (a replay after a long outage must find
    # them); a process only needs to catch a charge retried within seconds, and keeps ids 10 min
    memory_ledger = MemoryUsageLedger(config.usage_retention_days, min(config.charge_dedup_s, MEMORY_DEDUP_S))
    if client is None:
        return memory_limiter, memory_ledger
    # here, not at the top: they load redis-py, which a gateway without Redis never needs
    from policies.resilient import ResilientLedger, ResilientRateLimiter, StoreHealth
    from policies.spend_redis import RedisUsageLedger

    limiter = ResilientRateLimiter(RedisRateLimiter(client, "switchyard:rl"), memory_limiter,
                                   StoreHealth("rate limits", config))
    journal = ChargeJournal(config.charge_journal_dir) if config.charge_journal_dir else None
    ledger = ResilientLedger(RedisUsageLedger(client, "switchyard:usage", config.usage_retention_days,
                                              config.charge_dedup_s),
                             memory_ledger, StoreHealth("budgets", config), journal)
    return limiter, ledger


def limits_client(url: str, config: LimitsStoreConfig) -> RedisClient:
    """A Redis (or Redis Cluster, or Sentinel) client that fails fast: no retries, short timeouts
    (an outage must cost microseconds per request, not redis-py's default ten retries with backoff)."""
    return connect(url, timeout_s=config.redis_timeout_s, fail_fast=True)
