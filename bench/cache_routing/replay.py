"""Replay a workload's schedule against an OpenAI-compatible endpoint, streaming every answer.

Each turn is sent at its scheduled time, or as soon as the conversation's previous answer
has arrived if that is later (its messages need the answer's text). TTFT runs from sending
to the first delta with non-empty content. Where each request went is read from the answer's
headers: ``x-switchyard-worker`` (gateway), else ``x-sim-worker`` (straight to a sim).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench.cache_routing.workload import Arrival, Workload

Route = Callable[[int, Arrival], str]
"""(send order, arrival) -> base URL of the target that gets this request."""


@dataclass
class Record:
    """One request as the client saw it; times are seconds from the start of the replay."""

    conversation: int
    turn: int
    due_s: float
    sent_s: float = 0.0
    ttft_s: float | None = None
    end_s: float = 0.0
    target: str = ""
    worker: str = ""
    reason: str = ""
    """``x-switchyard-route`` (the policy's reason), when the gateway sends it."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    error: str = ""


@dataclass
class _Turn:
    done: asyncio.Event
    answer: str | None = None


async def replay(workload: Workload, route: Route, *, model: str, api_key: str,
                 timeout_s: float = 60.0) -> list[Record]:
    """Send every scheduled turn; return one record per turn, in schedule order."""
    turns = {(a.conversation, a.turn): _Turn(asyncio.Event()) for a in workload.schedule}
    records = [Record(a.conversation, a.turn, a.at_s) for a in workload.schedule]
    order = iter(range(len(records)))
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=headers) as client:
        start = time.perf_counter() + 0.2

        async def one(arrival: Arrival, record: Record) -> None:
            this = turns[(arrival.conversation, arrival.turn)]
            try:
                await asyncio.sleep(max(0.0, start + arrival.at_s - time.perf_counter()))
                answers = await _earlier_answers(turns, arrival)
                if answers is None:
                    record.error = "an earlier turn failed"
                    return
                record.target = route(next(order), arrival)
                body = workload.body(arrival.conversation, arrival.turn, answers, model)
                this.answer = await _send(client, record, body, start)
            except Exception as exc:  # noqa: BLE001 (one failed request is counted, not fatal)
                record.error = record.error or f"{type(exc).__name__}: {exc}"
            finally:
                this.done.set()

        await asyncio.gather(*(one(a, r) for a, r in zip(workload.schedule, records, strict=True)))
    return records


async def _earlier_answers(turns: dict[tuple[int, int], _Turn],
                           arrival: Arrival) -> dict[tuple[int, int], str] | None:
    """The answers of the conversation's earlier turns, waiting for the last one if needed."""
    answers: dict[tuple[int, int], str] = {}
    for earlier in range(arrival.turn):
        turn = turns[(arrival.conversation, earlier)]
        await turn.done.wait()
        if turn.answer is None:
            return None
        answers[(arrival.conversation, earlier)] = turn.answer
    return answers


async def _send(client: httpx.AsyncClient, record: Record, body: dict[str, object],
                start: float) -> str | None:
    """Stream one answer into ``record``; its text, or None on an error."""
    record.sent_s = time.perf_counter() - start
    pieces: list[str] = []
    async with client.stream("POST", record.target + "/v1/chat/completions", json=body) as response:
        record.worker = response.headers.get("x-switchyard-worker") or response.headers.get("x-sim-worker", "")
        record.reason = response.headers.get("x-switchyard-route", "").split(";")[0]
        if response.status_code != 200:
            record.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            return None
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                record.error = str(chunk["error"])[:200]
                return None
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") or ""
                if text and record.ttft_s is None:
                    record.ttft_s = time.perf_counter() - start - record.sent_s
                pieces.append(text)
            usage = chunk.get("usage")
            if usage:
                record.prompt_tokens = usage.get("prompt_tokens", 0)
                details = usage.get("prompt_tokens_details") or {}
                record.cached_tokens = details.get("cached_tokens") or 0
    record.end_s = time.perf_counter() - start
    return "".join(pieces)
