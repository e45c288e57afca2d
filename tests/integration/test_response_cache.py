"""The response cache through the real endpoint, in memory and on a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from tests.conftest import ThreadedStack
from tests.redis_support import REDIS_URL, require_redis


def enable_cache(document: dict[str, Any]) -> None:
    document["models"][LOCAL_MODEL]["response_cache"] = {"enabled": True, "ttl_s": 60}


@pytest.fixture(scope="module", params=["memory", "redis"])
def cached_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    settings: dict[str, Any] = {}
    if request.param == "redis":
        require_redis()
        settings["redis_url"] = REDIS_URL
    stack = ThreadedStack(tmp_path_factory.mktemp(f"cache-{request.param}"), sglang_workers=1,
                          edit_policy=enable_cache, settings_overrides=settings)
    yield stack
    stack.close()


def ask(stack: ThreadedStack, key: str = DEMO_KEY, **options: Any) -> tuple[str, str]:
    """(x-switchyard-cache, answer text) of one chat call."""
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    stream = options.pop("stream", False)
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model=LOCAL_MODEL, max_tokens=12, stream=True, **options) as response:
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
            return response.headers["x-switchyard-cache"], text
    raw = client.chat.completions.with_raw_response.create(model=LOCAL_MODEL, max_tokens=12, **options)
    return raw.headers["x-switchyard-cache"], raw.parse().choices[0].message.content or ""


def upstream_requests(stack: ThreadedStack) -> int:
    return int(stack.sim_stats(stack.stack.sglang[0].url)["requests_total"])


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Cache me {uuid.uuid4().hex}"}]


def test_repeated_deterministic_request_is_served_from_the_cache(cached_stack: ThreadedStack) -> None:
    prompt = messages()
    before = upstream_requests(cached_stack)
    state, first = ask(cached_stack, messages=prompt, temperature=0)
    assert state == "miss"
    state, second = ask(cached_stack, messages=prompt, temperature=0)
    assert (state, second) == ("hit", first)
    state, streamed = ask(cached_stack, messages=prompt, temperature=0, stream=True)
    assert (state, streamed) == ("hit", first), "a cached answer is replayed as a stream"
    assert upstream_requests(cached_stack) == before + 1


def test_a_streamed_answer_is_cached_for_plain_requests(cached_stack: ThreadedStack) -> None:
    prompt = messages()
    state, streamed = ask(cached_stack, messages=prompt, seed=5, stream=True)
    assert state == "miss"
    assert ask(cached_stack, messages=prompt, seed=5) == ("hit", streamed)


def test_a_cache_write_that_raises_still_ends_the_stream(cached_stack: ThreadedStack,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # the write runs before the end marker (so a repeat finds it): a fault in it must not cost
    # the client the end of an answer it already has whole
    async def broken(key: str, response: object) -> None:
        raise RuntimeError("a fault in the cache write")

    for cache in cached_stack.stack.app.state.gateway.runtime.response_caches.values():
        monkeypatch.setattr(cache, "put", broken)
    body = {"model": LOCAL_MODEL, "messages": messages(), "seed": 5, "max_tokens": 12, "stream": True}
    with httpx.stream("POST", cached_stack.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {DEMO_KEY}"}) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and events[-1] == "data: [DONE]"
    assert any('"content"' in e for e in events[:-1])


def test_tenants_never_share_entries(cached_stack: ThreadedStack) -> None:
    prompt = messages()
    ask(cached_stack, messages=prompt, temperature=0)
    assert ask(cached_stack, key=TEAM_B_KEY, messages=prompt, temperature=0)[0] == "miss"
    assert ask(cached_stack, key=TEAM_B_KEY, messages=prompt, temperature=0)[0] == "hit"


def test_no_cache_and_sampling_bypass_it(cached_stack: ThreadedStack) -> None:
    prompt = messages()
    ask(cached_stack, messages=prompt, temperature=0)
    assert ask(cached_stack, messages=prompt, temperature=0,
               extra_headers={"cache-control": "no-cache"})[0] == "bypass"
    assert ask(cached_stack, messages=prompt, temperature=0.8)[0] == "bypass"
