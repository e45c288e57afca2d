"""Cache-aware worker selection through the real endpoint with the openai SDK."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL
from tests.conftest import ThreadedStack

SYSTEM = "You are the on-call assistant. Follow the runbook strictly and cite sections. " * 20


def use_cache_aware(document: dict[str, Any]) -> None:
    document["backends"]["local"]["selection"] = {"type": "cache_aware", "debug_header": True}


@pytest.fixture(scope="module")
def cache_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    stack = ThreadedStack(tmp_path_factory.mktemp("cache"), sglang_workers=3, edit_policy=use_cache_aware)
    yield stack
    stack.close()


def test_turns_of_a_conversation_stay_on_the_worker_holding_its_prefix(cache_stack: ThreadedStack) -> None:
    client = openai.OpenAI(base_url=cache_stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    homes: Counter[str] = Counter()
    for user in range(6):
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"User {user}: node {user} is down."}]
        workers, cached, prompts = [], [], []
        for turn in range(3):
            raw = client.chat.completions.with_raw_response.create(model=LOCAL_MODEL, messages=messages, max_tokens=8)
            completion = raw.parse()
            workers.append(raw.headers["x-switchyard-worker"])
            assert raw.headers["x-switchyard-route"].split(";")[0] in {"home_hit", "home_miss", "conversation_match"}
            usage = completion.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            cached.append(usage.prompt_tokens_details.cached_tokens or 0)
            prompts.append(usage.prompt_tokens)
            messages += [{"role": "assistant", "content": completion.choices[0].message.content or ""},
                         {"role": "user", "content": f"Turn {turn}: what next?"}]
        assert len(set(workers)) == 1, workers
        # later turns find the whole previous prompt, and part of its answer, in the worker's cache
        assert cached[1] > prompts[0] and cached[2] > prompts[1]
        homes[workers[0]] += 1
    assert len(homes) >= 2, "new conversations are spread, not piled on one worker"


def test_streamed_answers_are_learned_too(cache_stack: ThreadedStack) -> None:
    client = openai.OpenAI(base_url=cache_stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": SYSTEM},
                                                  {"role": "user", "content": "A streamed conversation."}]
    with client.chat.completions.with_streaming_response.create(
            model=LOCAL_MODEL, messages=messages, max_tokens=8, stream=True) as response:
        first_worker = response.headers["x-switchyard-worker"]
        answer = "".join(c.choices[0].delta.content or "" for c in response.parse()
                         if isinstance(c, ChatCompletionChunk) and c.choices)
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "And then?"}]
    raw = client.chat.completions.with_raw_response.create(model=LOCAL_MODEL, messages=messages, max_tokens=4)
    assert raw.headers["x-switchyard-worker"] == first_worker
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens_details.cached_tokens or 0) >= usage.prompt_tokens - 40


def test_replicas_sharing_redis_send_a_second_turn_where_the_first_ran(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two gateways over the same workers and Redis, the client alternating between them: a
    conversation opened through one (a short first message) continues through the other on the
    worker holding its history, every time (router.placement)."""
    from uuid import uuid4

    from tests.redis_support import REDIS_URL, require_redis

    require_redis()
    first = ThreadedStack(tmp_path_factory.mktemp("replica-a"), sglang_workers=4, edit_policy=use_cache_aware,
                          settings_overrides={"redis_url": REDIS_URL})
    urls = [sim.url for sim in first.stack.sglang]

    def same_workers(document: dict[str, Any]) -> None:
        use_cache_aware(document)
        document["backends"]["local"]["workers"] = urls

    second = ThreadedStack(tmp_path_factory.mktemp("replica-b"), sglang_workers=1, edit_policy=same_workers,
                           settings_overrides={"redis_url": REDIS_URL})
    try:
        run = uuid4().hex[:8]
        clients = [openai.OpenAI(base_url=s.url + "/v1", api_key=DEMO_KEY, max_retries=0) for s in (first, second)]
        # the first replica has placed other conversations the second never saw: their lines
        # (each replica's own counts) now cut the workers' slices differently
        for user in range(40):
            clients[0].chat.completions.create(model=LOCAL_MODEL, max_tokens=1, user=f"{run}-warm-{user}", messages=[
                {"role": "system", "content": SYSTEM}, {"role": "user", "content": f"warm-up {user}"}])
        moved = []
        for user in range(24):
            messages: list[ChatCompletionMessageParam] = [
                {"role": "system", "content": SYSTEM}, {"role": "user", "content": f"hi {user}"}]
            opened = clients[user % 2].chat.completions.with_raw_response.create(
                model=LOCAL_MODEL, messages=messages, max_tokens=8, user=f"{run}-{user}")
            answer = opened.parse().choices[0].message.content or ""
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "and then?"}]
            later = clients[(user + 1) % 2].chat.completions.with_raw_response.create(
                model=LOCAL_MODEL, messages=messages, max_tokens=8, user=f"{run}-{user}")
            if later.headers["x-switchyard-worker"] != opened.headers["x-switchyard-worker"]:
                moved.append((user, later.headers.get("x-switchyard-route")))
        assert moved == []
    finally:
        second.close()
        first.close()
