"""The simulated SGLang worker and OpenAI provider, over real sockets, with the real SDK."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from backends.sim import RunningSim, SimConfig, start_sim

# cached tokens are reported as with SGLang's --enable-cache-report (off by default there)
FAST = SimConfig(zero_latency=True, worker_id="w-fast", enable_cache_report=True)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(FAST)
    yield running
    await running.aclose()


@pytest.fixture
async def http(sim: RunningSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        yield client


def sdk(sim: RunningSim, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=api_key, max_retries=0)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "sim-model", "messages": [{"role": "user", "content": text}], **extra}


async def test_chat_non_stream_and_stream_agree(sim: RunningSim) -> None:
    client = sdk(sim)
    raw = await client.chat.completions.with_raw_response.create(**chat("hello", max_tokens=5))
    assert raw.headers["x-sim-worker"] == "w-fast"
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5

    stream = await client.chat.completions.create(**chat("hello", max_tokens=5), stream=True)
    pieces, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == reply.choices[0].message.content
    assert finish == "length"


async def test_default_length_finishes_with_stop(sim: RunningSim) -> None:
    reply = await sdk(sim).chat.completions.create(**chat("no cap"))
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == FAST.default_max_tokens


async def test_second_identical_request_hits_the_prefix_cache(sim: RunningSim) -> None:
    client = sdk(sim)
    body = chat("a long enough question about radix trees " * 10, max_tokens=3)
    first = await client.chat.completions.create(**body)
    second = await client.chat.completions.create(**body)
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens


async def test_multi_turn_shares_the_earlier_prefix(sim: RunningSim) -> None:
    client = sdk(sim)
    turn1 = [{"role": "user", "content": "first question " * 20}]
    first = await client.chat.completions.create(model="m", messages=turn1, max_tokens=4)
    answer = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "more"}]
    second = await client.chat.completions.create(model="m", messages=turn2, max_tokens=4)
    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached is not None and cached >= first.usage.prompt_tokens


async def test_stream_include_usage_ends_with_a_usage_chunk(sim: RunningSim) -> None:
    stream = await sdk(sim).chat.completions.create(
        **chat("count", max_tokens=4), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


async def test_completions_stream_and_not(sim: RunningSim) -> None:
    client = sdk(sim)
    reply = await client.completions.create(model="m", prompt="Once upon", max_tokens=6)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    stream = await client.completions.create(
        model="m", prompt="Once upon", max_tokens=6, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


async def test_sse_wire_format(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat("x", max_tokens=2, stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


async def test_generate_native(http: httpx.AsyncClient) -> None:
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 4}}
    first = (await http.post("/generate", json=body)).json()
    meta = first["meta_info"]
    assert meta["completion_tokens"] == 4 and meta["cached_tokens"] == 0
    assert meta["finish_reason"] == {"type": "length", "length": 4}
    again = (await http.post("/generate", json=body)).json()
    assert again["text"] == first["text"]
    assert again["meta_info"]["cached_tokens"] == meta["prompt_tokens"]

    streamed = await http.post("/generate", json={**body, "stream": True})
    events = [e.removeprefix("data: ") for e in streamed.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    texts = [httpx.Response(200, content=e).json()["text"] for e in events[:-1]]
    assert texts[-1] == first["text"]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))

    ids = await http.post("/generate", json={"input_ids": [1, 2, 3], "sampling_params": {}})
    assert ids.json()["meta_info"]["prompt_tokens"] == 3
    missing = await http.post("/generate", json={"sampling_params": {}})
    assert missing.status_code == 400


async def test_info_routes_and_metrics(http: httpx.AsyncClient) -> None:
    await http.post("/v1/chat/completions", json=chat("warm", max_tokens=2))
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/health_generate")).status_code == 200
    info = (await http.get("/model_info")).json()
    assert info["model_path"] == "sim-model" and info["is_generation"] is True
    assert (await http.get("/get_model_info")).json() == info  # the deprecated alias
    server = (await http.get("/server_info")).json()
    assert server["max_running_requests"] == FAST.max_running
    assert server["max_total_num_tokens"] == FAST.capacity_tokens
    assert server["enable_cache_report"] is True and server["enable_metrics"] is False
    assert (await http.get("/get_server_info")).json()["max_total_num_tokens"] == FAST.capacity_tokens
    models = (await http.get("/v1/models")).json()
    assert models["data"][0]["id"] == "sim-model"
    # SGLang serves /metrics only with --enable-metrics; /v1/loads always
    assert (await http.get("/metrics")).status_code == 404
    loads = (await http.get("/v1/loads")).json()
    assert loads["loads"][0]["num_running_reqs"] == 0 and loads["loads"][0]["num_waiting_reqs"] == 0


async def test_flush_cache(http: httpx.AsyncClient) -> None:
    body = {"text": "flush me please", "sampling_params": {"max_new_tokens": 1}}
    await http.post("/generate", json=body)
    assert (await http.post("/flush_cache")).status_code == 200
    after = (await http.post("/generate", json=body)).json()
    assert after["meta_info"]["cached_tokens"] == 0


async def test_openai_kind_enforces_the_api_key() -> None:
    provider = await start_sim(SimConfig(kind="openai", api_key="sk-right", zero_latency=True))
    try:
        with pytest.raises(openai.AuthenticationError):
            await sdk(provider, "sk-wrong").chat.completions.create(**chat("hi"))
        reply = await sdk(provider, "sk-right").chat.completions.create(**chat("hi", max_tokens=1))
        assert reply.usage is not None and reply.usage.completion_tokens == 1
        async with httpx.AsyncClient(base_url=provider.url) as http:
            assert (await http.post("/generate", json={"text": "x"})).status_code == 404
            stats = (await http.get("/sim/stats")).json()
        assert stats["failed"] == 1 and stats["completed"] == 1
    finally:
        await provider.aclose()


async def test_sim_fail_429_is_a_rate_limit_error(sim: RunningSim) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk(sim).chat.completions.create(**chat("hi"), extra_body={"sim_fail": 429})
    assert caught.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        await sdk(sim).chat.completions.create(**chat("hi"), extra_body={"sim_fail": 503})


async def test_fail_rate_answers_500() -> None:
    broken = await start_sim(SimConfig(fail_rate=1.0, zero_latency=True))
    try:
        with pytest.raises(openai.InternalServerError):
            await sdk(broken).chat.completions.create(**chat("hi"))
        assert broken.engine.stats.failed == 1
    finally:
        await broken.aclose()


async def test_validation_errors_have_the_upstreams_shape(http: httpx.AsyncClient) -> None:
    bad = {"model": "m", "messages": "nope"}
    response = await http.post("/v1/chat/completions", json=bad)
    assert response.status_code == 400
    # SGLang's RequestValidationError handler: a flat ErrorResponse, not under "error"
    error = response.json()
    assert list(error) == ["object", "message", "type", "param", "code"]
    assert (error["object"], error["type"], error["param"], error["code"]) == (
        "error", "Bad Request", None, 400)
    provider = await start_sim(SimConfig(kind="openai", zero_latency=True))
    try:
        async with httpx.AsyncClient(base_url=provider.url) as client:
            response = await client.post("/v1/chat/completions", json=bad)
        assert response.status_code == 400
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    finally:
        await provider.aclose()


async def test_sim_reply_and_stop(sim: RunningSim) -> None:
    client = sdk(sim)
    stream = await client.chat.completions.create(
        **chat("hi"), stream=True, extra_body={"sim_reply": ["Hel", "lo", " there"]}
    )
    deltas = [c.choices[0].delta.content async for c in stream if c.choices]
    assert [d for d in deltas if d] == ["Hel", "lo", " there"]
    reply = await client.chat.completions.create(
        **chat("hi"), stop=["STOP"], extra_body={"sim_reply": "keep this STOP not this"}
    )
    assert reply.choices[0].message.content == "keep this "
    assert reply.choices[0].finish_reason == "stop"


async def test_requests_are_recorded_with_credentials_and_extras(sim: RunningSim) -> None:
    client = openai.AsyncOpenAI(
        base_url=sim.url + "/v1",
        api_key="sk-upstream",
        default_headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )
    await client.chat.completions.create(**chat("hi", max_tokens=1), extra_body={"top_k": 5})
    async with httpx.AsyncClient(base_url=sim.url) as http:
        recorded = (await http.get("/sim/requests")).json()[-1]
    assert recorded["path"] == "/v1/chat/completions"
    assert recorded["body"]["top_k"] == 5
    assert recorded["headers"]["authorization"] == "Bearer sk-upstream"
    assert recorded["headers"]["traceparent"].startswith("00-aaaa")
    assert recorded["headers"]["x-api-key"] is None


async def _wait_for(sim: RunningSim, predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(sim.engine.stats):
        assert time.monotonic() < deadline, sim.engine.stats
        await asyncio.sleep(0.01)


async def test_client_disconnect_mid_stream_is_counted_as_cancelled() -> None:
    slow = await start_sim(SimConfig(itl_ms=20, base_ttft_ms=1))
    try:
        async with httpx.AsyncClient(base_url=slow.url, timeout=5) as http:
            body = chat("talk slowly", max_tokens=200, stream=True)
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for _ in response.aiter_raw():
                    break  # one chunk, then hang up
            hang = chat("say nothing", stream=True, sim_hang_after_headers=True)
            quick = httpx.Timeout(5, read=0.3)
            hung = http.stream("POST", "/v1/chat/completions", json=hang, timeout=quick)
            async with hung as response:
                assert response.status_code == 200  # headers arrived, the body never will
                with pytest.raises(httpx.ReadTimeout):
                    await response.aiter_raw().__anext__()
        await _wait_for(slow, lambda s: s.cancelled == 2 and s.running == 0)
        stats = slow.engine.stats
        assert stats.completed == 0 and stats.generated_tokens < 200
        assert slow.engine.cache.evictable_tokens == slow.engine.cache.total_tokens  # no pin left
    finally:
        await slow.aclose()


async def test_requests_queue_past_max_running() -> None:
    narrow = await start_sim(SimConfig(max_running=1, itl_ms=5, base_ttft_ms=0))
    try:
        client = sdk(narrow)
        calls = [client.chat.completions.create(**chat(f"q{i}", max_tokens=10)) for i in range(3)]
        tasks = [asyncio.ensure_future(call) for call in calls]
        await _wait_for(narrow, lambda s: s.queued == 2 and s.running == 1)
        await asyncio.gather(*tasks)
        assert narrow.engine.stats.completed == 3 and narrow.engine.stats.queued == 0
    finally:
        await narrow.aclose()


async def _ttft(client: openai.AsyncOpenAI, text: str) -> float:
    start = time.perf_counter()
    stream = await client.chat.completions.create(**chat(text, max_tokens=2), stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            elapsed = time.perf_counter() - start
            async for _ in stream:
                pass
            return elapsed
    raise AssertionError("no content")


async def test_ttft_grows_with_uncached_prompt_tokens() -> None:
    # 0.1 ms per uncached token: ~3,000 tokens cost ~300 ms of prefill, a short prompt ~2 ms
    timed = await start_sim(SimConfig(prefill_us_per_token=100, base_ttft_ms=1, itl_ms=1))
    try:
        client = sdk(timed)
        long_prompt = " ".join(f"word{i}" for i in range(1_500))
        assert len(timed.engine.encode(long_prompt)) > 3_000
        short = await _ttft(client, "short")
        cold = await _ttft(client, long_prompt)
        warm = await _ttft(client, long_prompt)
        assert cold > 0.25
        assert cold - short > 0.15
        assert cold - warm > 0.15
    finally:
        await timed.aclose()
