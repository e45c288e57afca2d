"""The admission ticket: reserves on entry, refunds on an exception, settles exactly once, and
checks the upstream's usage before charging it (issue 15 findings 3 and 6)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from backends.types import ChatRequest, PromptTokensDetails, Usage
from gateway.accounting import Accounting
from gateway.wire import parse_chat
from policies.document import Policy
from policies.keys import Caller, KeyRing, hash_key
from policies.loader import parse_policy
from policies.rate_limit import MemoryRateLimiter
from policies.spend import BudgetExceededError, MemoryUsageLedger
from policies.tokens import TokenCounter

POLICY = f"""
backends: {{local: {{kind: sglang, workers: ["http://127.0.0.1:1"]}}}}
models:
  m:
    deployments: [{{backend: local, model: m}}]
    prices: {{input: 10.0, output: 30.0}}
tenants:
  t:
    budgets: {{daily_tokens: 1000}}
    rate_limits: {{tpm: 10000}}
    keys: [{{name: k, sha256: {hash_key("sy-t")}}}]
"""


def setup(document: str = POLICY) -> tuple[Accounting, Policy, Caller, MemoryUsageLedger]:
    policy = parse_policy(document)
    ledger = MemoryUsageLedger()
    accounting = Accounting(TokenCounter.load(["cl100k_base"]), MemoryRateLimiter(), ledger, policy.limits)
    return accounting, policy, KeyRing(policy).authenticate("Bearer sy-t"), ledger


def chat(max_tokens: int, n: int = 1) -> ChatRequest:
    return parse_chat(msgspec.json.encode({"model": "m", "max_tokens": max_tokens, "n": n,
                                           "messages": [{"role": "user", "content": "hello there"}]}))


async def settled(accounting: Accounting) -> None:
    await asyncio.gather(*accounting._pending)


async def test_the_ticket_settles_once_on_exit_with_what_was_recorded() -> None:
    accounting, policy, caller, ledger = setup()
    async with accounting.admit(policy, caller, "m", chat(400), "r1") as ticket:
        assert ticket.reserved_tokens == ticket.estimate + 400
        ticket.record(Usage(prompt_tokens=ticket.estimate, completion_tokens=7,
                            total_tokens=ticket.estimate + 7))
    assert ticket.charge is not None and ticket.charge.output_tokens == 7
    assert ticket.settle(Usage(prompt_tokens=1, completion_tokens=300, total_tokens=301)) is ticket.charge
    await settled(accounting)
    report = await ledger.report("tenant:t", 1)
    assert report.total_tokens == ticket.estimate + 7 and report.rows[0].requests == 1
    assert ledger._held == {}, "the rest of the reservation is back"


async def test_an_exception_refunds_and_a_handed_off_ticket_waits_for_its_stream() -> None:
    accounting, policy, caller, ledger = setup()
    with pytest.raises(RuntimeError):
        async with accounting.admit(policy, caller, "m", chat(400), "boom"):
            raise RuntimeError("upstream failed before any output")
    async with accounting.admit(policy, caller, "m", chat(400), "stream") as streaming:
        streaming.hand_off()
    assert streaming.charge is None, "the relay settles a stream when it ends"
    assert ledger._held, "its reservation is held meanwhile"
    streaming.settle(None, "one two three")
    await settled(accounting)
    report = await ledger.report("tenant:t", 1)
    assert report.rows[0].requests == 2 and report.rows[0].output_tokens == 3
    assert ledger._held == {}


async def test_a_budget_clamps_max_tokens_in_the_call_sent_upstream() -> None:
    accounting, policy, caller, _ = setup()
    async with accounting.admit(policy, caller, "m", chat(900, n=2), "clamped") as ticket:
        left = 1000 - ticket.estimate
        assert ticket.call.params.max_tokens == left // 2, "two choices share what is left"
        ticket.record(None)
    with pytest.raises(BudgetExceededError):  # everything is held or spent now
        async with accounting.admit(policy, caller, "m", chat(900, n=2), "refused"):
            pass


@pytest.mark.parametrize(("reported", "prompt", "completion"), [
    (Usage(prompt_tokens=10**12, completion_tokens=10**12, total_tokens=2 * 10**12), None, 50),
    (Usage(prompt_tokens=-10**9, completion_tokens=-10**9, total_tokens=-2 * 10**9), 0, 0),
    (Usage(prompt_tokens=2**64, completion_tokens=5, total_tokens=2**64,
           prompt_tokens_details=PromptTokensDetails(cached_tokens=2**65)), None, 5),
])
async def test_upstream_usage_is_clamped_to_the_request_bounds(reported: Usage, prompt: int | None,
                                                               completion: int) -> None:
    accounting, policy, caller, _ = setup()
    async with accounting.admit(policy, caller, "m", chat(50), "lie") as ticket:
        ticket.record(reported)
    charge = ticket.charge
    assert charge is not None
    cap = max(16 * ticket.estimate, ticket.estimate + 4096)
    assert charge.input_tokens + charge.cached_input_tokens == (cap if prompt is None else prompt)
    assert charge.output_tokens == completion and charge.cost_usd >= 0
    assert accounting.usage_counters.clamped == 1
    await settled(accounting)


async def test_settling_a_huge_answer_never_counts_it_whole_on_the_event_loop() -> None:
    """Finding 2: output was token-counted on the event loop. With the upstream's usage and an
    output bound nothing is counted; without usage a long text is counted from its head."""
    import time

    accounting, policy, caller, _ = setup()
    text = "the gateway relays tokens " * 200_000  # 5.2 MB
    exact = accounting.counter.count_text(text[:200_000], policy.models["m"].tokens) * len(text) / 200_000
    for usage in (Usage(prompt_tokens=5, completion_tokens=200, total_tokens=205), None):
        ticket = await accounting.admit(policy, caller, "m", chat(300), f"r-{usage is None}").reserve()
        started = time.perf_counter()
        charge = ticket.settle(usage, text)
        assert time.perf_counter() - started < 0.25  # counting all of it takes over a second here
        assert charge.output_tokens == (300 if usage is None else 200)  # the bound caps the count
        await settled(accounting)
    assert exact > 300
    ticket = await accounting.admit(policy, caller, "m", chat(300), "r-short").reserve()
    assert ticket.settle(None, "hello" + " hello" * 49).output_tokens == 50  # short text: counted exactly


UNLIMITED = f"""
backends: {{local: {{kind: sglang, workers: ["http://127.0.0.1:1"]}}}}
models:
  m: {{deployments: [{{backend: local, model: m}}], prices: {{input: 10.0, output: 30.0}}}}
tenants:
  t:
    rate_limits: {{rpm: 1000}}
    keys: [{{name: k, sha256: {hash_key("sy-t")}}}]
"""
"""No context budget, no token limit, no budget: nothing before the answer reads the count."""


def unlimited() -> tuple[Accounting, Policy, Caller, MemoryUsageLedger]:
    return setup(UNLIMITED)


def long_chat(words: int) -> ChatRequest:
    return parse_chat(msgspec.json.encode({"model": "m", "max_tokens": 20, "messages": [
        {"role": "user", "content": " ".join(f"w{i}" for i in range(words))}]}))


async def test_a_prompt_nothing_needs_to_count_is_counted_only_if_settling_needs_it() -> None:
    accounting, policy, caller, ledger = unlimited()
    exact = accounting.counter.count_chat(chat(50).params.messages, None, policy.models["m"].tokens)
    async with accounting.admit(policy, caller, "m", chat(50), "reported") as ticket:
        assert not ticket.counted and ticket.estimate == 0  # admission did not count it
        ticket.record(Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12))
    assert not ticket.counted  # a reported prompt under the cap's floor (4,096) needs no estimate
    assert ticket.charge is not None and ticket.charge.input_tokens == 9
    async with accounting.admit(policy, caller, "m", chat(50), "no-usage") as ticket:
        ticket.record(None, "one two three")
    assert ticket.counted and ticket.estimate == exact  # no usage: charged what it counts
    assert ticket.charge is not None and ticket.charge.input_tokens == exact
    async with accounting.admit(policy, caller, "m", chat(50), "lie") as ticket:
        ticket.record(Usage(prompt_tokens=10**9, completion_tokens=3, total_tokens=10**9 + 3))
    assert ticket.charge is not None and ticket.charge.input_tokens == exact + 4096  # still clamped
    await settled(accounting)
    assert (await ledger.report("tenant:t", 1)).rows[0].requests == 3


async def test_a_long_uncounted_prompt_is_counted_in_a_thread_behind_the_request() -> None:
    accounting, policy, caller, _ = unlimited()
    call = long_chat(20_000)  # over the counter's offload threshold
    exact = accounting.counter.count_chat(call.params.messages, None, policy.models["m"].tokens)
    ticket = await accounting.admit(policy, caller, "m", call, "long").reserve()
    assert not ticket.counted and ticket.prompt_count is not None
    assert await ticket.prompt_count == exact
    charge = ticket.settle(Usage(prompt_tokens=exact + 5000, completion_tokens=1, total_tokens=exact + 5001))
    assert ticket.counted and ticket.estimate == exact  # the thread's count, not a second one
    assert charge.input_tokens == exact + 5000  # within the cap: charged as reported
    await settled(accounting)


async def test_a_token_limit_a_budget_or_a_context_budget_needs_the_count_first() -> None:
    accounting, policy, caller, _ = setup()  # tpm and a daily token budget
    ticket = await accounting.admit(policy, caller, "m", chat(50), "limited").reserve()
    assert ticket.counted and ticket.estimate > 0
    ticket.refund()
    await settled(accounting)
