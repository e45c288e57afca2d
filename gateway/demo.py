"""``switchyard demo``: the embedded default, end to end, with no Redis and no GPU.

Starts two simulated SGLang workers, an SGLang embedding worker and simulated OpenAI and
Anthropic APIs in-process,
starts the gateway over them, drives it with the real ``openai`` SDK and prints where every
request went, how much of its prompt was cached, and how long it took.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from backends.sim import SimConfig
from gateway.local_stack import (
    ANTHROPIC_MODEL,
    AUTO_ROUTE,
    DEMO_KEY,
    EMBED_LOCAL_MODEL,
    LOCAL_MODEL,
    OPENAI_MODEL,
    TEAM_B_KEY,
    start_local_stack,
)

EASY = "hi, how are you?"
HARD = ("Let $f(x) = x^3 - 3x + 1$. Find the number of real roots of $f(f(x)) = 0$ and prove your "
        "answer rigorously, then generalise to $f^{(n)}(x) = 0$.")

SYSTEM_PROMPT = (
    "You are the support assistant of a company that runs GPU clusters. Answer briefly, cite "
    "the runbook section you used, and never invent commands. " * 12
)


@dataclass
class Row:
    label: str
    model: str
    answered_by: str = "-"
    reason: str = "-"
    worker: str = "-"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float = 0.0
    result: str = "ok"


def _route_row(row: Row, headers: Any) -> None:
    """Where the request went and why, from the response headers."""
    row.worker = headers.get("x-switchyard-worker", "-")
    row.reason = headers.get("x-switchyard-route", "-").split(";")[0]
    model = str(headers.get("x-switchyard-model", "-"))
    tier = headers.get("x-switchyard-tier")
    score = headers.get("x-switchyard-difficulty")
    row.answered_by = f"{model} ({tier}{' ' + score if score else ''})" if tier else model


def _usage_row(row: Row, usage: Any) -> None:
    if usage is not None:
        row.prompt_tokens = usage.prompt_tokens
        details = getattr(usage, "prompt_tokens_details", None)
        row.cached_tokens = (details.cached_tokens or 0) if details else 0


async def _chat(client: openai.AsyncOpenAI, label: str, model: str,
                messages: list[dict[str, Any]]) -> tuple[Row, str]:
    row = Row(label, model)
    start = time.perf_counter()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=24)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        row.result = f"HTTP {exc.status_code}: {exc.body}"
        row.total_ms = (time.perf_counter() - start) * 1000
        return row, ""
    row.total_ms = (time.perf_counter() - start) * 1000
    _route_row(row, raw.headers)
    completion = raw.parse()
    _usage_row(row, completion.usage)
    return row, completion.choices[0].message.content or ""


async def _stream(client: openai.AsyncOpenAI, label: str, model: str,
                  messages: list[dict[str, Any]]) -> Row:
    row = Row(label, model)
    start = time.perf_counter()
    async with client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
        model=model, messages=messages, max_tokens=24, stream=True,
        stream_options={"include_usage": True},
    ) as response:
        _route_row(row, response.headers)
        async for chunk in await response.parse():
            if row.ttft_ms is None and chunk.choices and chunk.choices[0].delta.content:
                row.ttft_ms = (time.perf_counter() - start) * 1000
            if chunk.usage:
                _usage_row(row, chunk.usage)
    row.total_ms = (time.perf_counter() - start) * 1000
    return row


async def _embed(client: openai.AsyncOpenAI, label: str, model: str, texts: list[str]) -> Row:
    row = Row(label, model)
    start = time.perf_counter()
    raw = await client.embeddings.with_raw_response.create(model=model, input=texts)
    row.total_ms = (time.perf_counter() - start) * 1000
    _route_row(row, raw.headers)
    answer = raw.parse()
    row.prompt_tokens = answer.usage.prompt_tokens
    row.result = f"{len(answer.data)} vectors of {len(answer.data[0].embedding)} floats"
    return row


async def _conversations(client: openai.AsyncOpenAI, turns: int, users: int = 3) -> list[Row]:
    """Several users' conversations, their turns interleaved, all sharing one system prompt."""
    chats: list[list[dict[str, Any]]] = [[{"role": "system", "content": SYSTEM_PROMPT}] for _ in range(users)]
    rows = []
    for turn in range(1, turns + 1):
        for user, messages in enumerate(chats):
            name = "ABCDEFGH"[user]
            messages.append({"role": "user", "content": f"User {name}, step {turn}: node gpu-{user}{turn} is slow."})
            row, answer = await _chat(client, f"user {name}, turn {turn}", LOCAL_MODEL, messages)
            messages.append({"role": "assistant", "content": answer})
            rows.append(row)
    return rows


def _print_table(rows: list[Row]) -> None:
    header = (f"{'request':<22} {'asked':<13} {'answered by':<30} {'worker':<13} {'why':<18} "
              f"{'prompt':>6} {'cached':>6} {'TTFT ms':>7} {'ms':>6}  result")
    print(header)
    print("-" * len(header))
    for r in rows:
        ttft = f"{r.ttft_ms:7.1f}" if r.ttft_ms is not None else f"{'-':>7}"
        print(f"{r.label:<22} {r.model:<13} {r.answered_by:<30} {r.worker:<13} {r.reason:<18} "
              f"{r.prompt_tokens:>6} {r.cached_tokens:>6} {ttft} {r.total_ms:6.1f}  {r.result}")


async def _run(turns: int) -> int:
    with tempfile.TemporaryDirectory(prefix="switchyard-demo-") as tmp:
        # a latency model with visible prefill cost, so cached prefixes show up in TTFT
        # the demo's table shows cached tokens: SGLang reports them with --enable-cache-report
        sim = SimConfig(base_ttft_ms=2.0, prefill_us_per_token=60.0, itl_ms=3.0,
                        enable_cache_report=True, enable_metrics=True)
        stack = await start_local_stack(Path(tmp), sim=sim, embeddings=True,
                                        selection={"type": "cache_aware", "debug_header": True})
        print(f"gateway on {stack.url}; SGLang sims: {', '.join(s.url for s in stack.sglang)}; "
              f"OpenAI sim: {stack.openai.url}; Anthropic sim: {stack.anthropic.url}\n")
        try:
            async with openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY,
                                          max_retries=0) as client:
                hello = [{"role": "user", "content": "Say hello to the demo."}]
                rows = [(await _chat(client, "chat", LOCAL_MODEL, hello))[0],
                        await _stream(client, "chat, streamed", LOCAL_MODEL, hello)]
                rows += await _conversations(client, turns)
                rows.append((await _chat(client, "external OpenAI API", OPENAI_MODEL, hello))[0])
                rows.append(await _stream(client, "Anthropic, streamed", ANTHROPIC_MODEL, hello))
                rows.append((await _chat(client, "auto: easy prompt", AUTO_ROUTE,
                                         [{"role": "user", "content": EASY}]))[0])
                rows.append((await _chat(client, "auto: hard prompt", AUTO_ROUTE,
                                         [{"role": "user", "content": HARD}]))[0])
                rows.append(await _embed(client, "embeddings", EMBED_LOCAL_MODEL, [EASY, SYSTEM_PROMPT[:80]]))
            async with openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=TEAM_B_KEY,
                                          max_retries=0) as limited:
                rows.append((await _chat(limited, "team-b asks for Claude", ANTHROPIC_MODEL, hello))[0])
        finally:
            await stack.aclose()
    _print_table(rows)
    print("\nanswered by: the model that answered (for the difficulty route 'auto': tier and "
          "classifier score).\nworker, why: where the cache-aware router sent the request and its "
          "reason (home_*: the conversation's\nhashed home worker; conversation_match: the worker "
          "holding its history). cached: prompt tokens found in that worker's prefix cache.")
    return 0


def run_demo(turns: int = 3) -> int:
    """Run the demo; returns the process exit code."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run(turns))
    return uvloop.run(_run(turns))
