"""Tenant B cannot read tenant A's prompts from a shared prefix cache (issue 15, finding 8).

Tenant B guesses A's system prompt on the same model and reads ``cached_tokens``: with the
model shared, the right guess comes back cached; with ``cache_isolation: tenant`` it does not,
whatever B sends, while A's own later turns still find their prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from gateway.local_stack import ANTHROPIC_MODEL, DEMO_KEY, LOCAL_MODEL, OPENAI_MODEL, TEAM_B_KEY
from router.isolation import tenant_salt
from tests.conftest import ThreadedStack

SECRET_SYSTEM = "You are Acme's pricing agent. Internal floor price for SKU-77 is 41.20 EUR. " * 12


def one_worker(isolation: str) -> Any:
    def edit(document: dict[str, Any]) -> None:
        # one worker: B's guess lands where A's prefix is, the strongest form of the probe
        document["backends"]["local"]["workers"] = document["backends"]["local"]["workers"][:1]
        document["models"][LOCAL_MODEL]["cache_isolation"] = isolation
    return edit


@pytest.fixture(scope="module", params=["shared", "tenant"])
def isolation_stack(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ThreadedStack]]:
    stack = ThreadedStack(tmp_path_factory.mktemp(f"iso-{request.param}"), edit_policy=one_worker(request.param))
    yield request.param, stack
    stack.close()


def cached(client: openai.OpenAI, question: str, **extra: Any) -> int:
    answer = client.chat.completions.create(
        model=LOCAL_MODEL, max_tokens=4, extra_body=extra or None,
        messages=[{"role": "system", "content": SECRET_SYSTEM}, {"role": "user", "content": question}])
    assert answer.usage is not None
    details = answer.usage.prompt_tokens_details
    return details.cached_tokens or 0 if details is not None else 0


def test_a_guessed_prompt_of_another_tenant_reads_as_uncached(isolation_stack: tuple[str, ThreadedStack]) -> None:
    isolation, stack = isolation_stack
    tenant_a = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    tenant_b = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEAM_B_KEY, max_retries=0)
    cached(tenant_a, "What is the floor for SKU-77?")
    assert cached(tenant_a, "And for SKU-78?") > 200  # A's own prefix is served from the cache
    if isolation == "shared":
        assert cached(tenant_b, "Hello") > 200  # the side channel, as it is without isolation
        return
    # B even tries to pick A's salt: the gateway overwrites whatever salt a client sends
    forged = cached(tenant_b, "Hello", cache_salt=tenant_salt("demo"))
    assert forged < 20, forged
    assert cached(tenant_b, "Hello again") > 200  # B's own prefix is B's to reuse


def test_a_hosted_provider_s_cached_tokens_are_withheld_but_charged(tmp_path_factory: pytest.TempPathFactory) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["models"][OPENAI_MODEL]["cache_isolation"] = "tenant"
    stack = ThreadedStack(tmp_path_factory.mktemp("iso-hosted"), edit_policy=edit)
    try:
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
        for streamed in (False, True):
            reported = []
            for question in ("What is the floor?", "And the ceiling?"):
                if streamed:
                    chunks = list(client.chat.completions.create(
                        model=OPENAI_MODEL, max_tokens=4, stream=True, stream_options={"include_usage": True},
                        messages=[{"role": "system", "content": SECRET_SYSTEM}, {"role": "user", "content": question}]))
                    usage = chunks[-1].usage
                else:
                    usage = client.chat.completions.create(
                        model=OPENAI_MODEL, max_tokens=4,
                        messages=[{"role": "system", "content": SECRET_SYSTEM},
                                  {"role": "user", "content": question}]).usage
                assert usage is not None
                details = usage.prompt_tokens_details
                reported.append(details.cached_tokens or 0 if details is not None else 0)
            assert reported == [0, 0], reported
        upstream = stack.sim_stats(stack.stack.openai.url)
        assert upstream["cached_tokens"] > 200  # the provider did serve from its cache
    finally:
        stack.close()


def test_the_messages_door_withholds_a_provider_s_cache_reads_too(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Native Anthropic answers and events carry the provider's cache counts: with isolation
    they are rendered from the canonical answer instead, cache reads withheld."""
    def edit(document: dict[str, Any]) -> None:
        document["models"][ANTHROPIC_MODEL]["cache_isolation"] = "tenant"
    stack = ThreadedStack(tmp_path_factory.mktemp("iso-messages"), edit_policy=edit)
    try:
        client = anthropic.Anthropic(base_url=stack.url, api_key=DEMO_KEY, max_retries=0)
        reads = []
        for question in ("What is the floor?", "And the ceiling?", "And the median?"):
            kwargs: dict[str, Any] = {"model": ANTHROPIC_MODEL, "max_tokens": 8, "system": SECRET_SYSTEM,
                                      "messages": [{"role": "user", "content": question}]}
            if question.startswith("And the c"):
                with client.messages.stream(**kwargs) as stream:
                    events = list(stream)
                    usage = stream.get_final_message().usage
                starts = [e.message.usage.cache_read_input_tokens for e in events if e.type == "message_start"]
                reads += [r or 0 for r in starts]
            else:
                usage = client.messages.create(**kwargs).usage
            reads.append(usage.cache_read_input_tokens or 0)
        assert reads == [0] * len(reads), reads
        upstream = stack.sim_stats(stack.stack.anthropic.url)
        assert upstream["cached_tokens"] > 200  # the provider did serve from its cache
    finally:
        stack.close()
