"""The soak's request mix, sent open loop: one request every 1/rate s, whatever came back.

Every kind of request the gateway serves differently is in the mix, so each code path runs
for the whole soak: plain and streamed chat, conversations that come back (cache-aware
routing finds their prefix), deterministic requests the response cache answers, legacy text
completions, and streams the client abandons after two chunks (the upstream request must be
closed and its slot released). Choices come from a seeded ``random.Random``: two runs send the
same sequence.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.overhead.loadgen import Recorder, send
from bench.overhead.stack import API_KEY, PUBLIC_MODEL

FILLER = ("The gateway routes each request to the worker most likely to hold its prefix, "
          "keeps budgets, and streams the answer back. ")

MIX: tuple[tuple[str, float], ...] = (
    ("chat", 0.30), ("chat_stream", 0.30), ("conversation_stream", 0.15), ("cached", 0.10),
    ("text", 0.10), ("abandoned_stream", 0.05))
"""Request kinds and their shares of the traffic."""


@dataclass(frozen=True, slots=True)
class Request:
    kind: str
    path: str
    body: dict[str, Any]
    stream: bool


def draw_request(rng: random.Random, sessions: int = 400) -> Request:
    """One request of the mix."""
    kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
    max_tokens = rng.randint(8, 32)
    if kind == "text":
        prompt = f"Complete request {rng.getrandbits(48):x}: " + FILLER * rng.randint(1, 4)
        return Request(kind, "/v1/completions", {"model": PUBLIC_MODEL, "prompt": prompt,
                                                  "max_tokens": max_tokens}, False)
    if kind == "conversation_stream":
        session = rng.randrange(sessions)  # a returning conversation: same opening, next turn
        turns = rng.randint(1, 4)
        messages: list[dict[str, str]] = [{"role": "system", "content": f"You help user {session}. " + FILLER}]
        for turn in range(turns):
            messages += [{"role": "user", "content": f"Question {turn} of user {session}: " + FILLER},
                         {"role": "assistant", "content": f"Answer {turn}. " + FILLER}]
        messages.append({"role": "user", "content": f"Question {turns} of user {session}?"})
    elif kind == "cached":
        messages = [{"role": "user", "content": f"Frequently asked question {rng.randrange(50)}?"}]
    else:
        messages = [{"role": "user", "content": f"Request {rng.getrandbits(48):x}. " + FILLER * rng.randint(1, 6)}]
    body: dict[str, Any] = {"model": PUBLIC_MODEL, "messages": messages, "max_tokens": max_tokens}
    if kind == "cached":
        body["temperature"] = 0
    stream = kind.endswith("stream")
    if stream:
        body["stream"] = True
    return Request(kind, "/v1/chat/completions", body, stream)


async def abandon(session: aiohttp.ClientSession, url: str, request: Request, recorder: Recorder) -> bool:
    """Read two chunks of a stream, then close the connection: a client that went away."""
    try:
        async with session.post(url, json=request.body) as response:
            chunks = 0
            async for line in response.content:
                chunks += line.startswith(b"data: {")
                if chunks >= 2:
                    break
            status = response.status
            response.close()  # drop the connection rather than return it to the pool mid-stream
    except (TimeoutError, aiohttp.ClientError) as exc:
        recorder.fail(time.perf_counter(), f"abandoned stream: {type(exc).__name__}: {exc}")
        return False
    if status != 200 or chunks < 2:
        recorder.fail(time.perf_counter(), f"abandoned stream: HTTP {status}, {chunks} chunks")
        return False
    return True


@dataclass
class Traffic:
    """Open-loop sender of the mix; ``sent``, ``kinds`` and the recorder say what happened."""

    url: str
    rate: float
    seed: int = 7
    sent: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    abandoned: int = 0
    """Streams the client cut after two chunks, as planned."""
    lag_max_s: float = 0.0
    """Latest any request was sent after its due time: the load generator keeping up."""

    async def run(self, session: aiohttp.ClientSession, recorder: Recorder, until: float,
                  on_tick: Callable[[], None] | None = None) -> None:
        """Send until ``until`` (perf_counter), then wait for every answer (bounded)."""
        rng = random.Random(self.seed)
        tasks: set[asyncio.Task[None]] = set()
        first = time.perf_counter()
        while True:
            due = first + self.sent / self.rate
            if due >= until:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.lag_max_s = max(self.lag_max_s, time.perf_counter() - due)
            request = draw_request(rng)
            self.kinds[request.kind] = self.kinds.get(request.kind, 0) + 1
            url = self.url + request.path
            if request.kind == "abandoned_stream":
                task = asyncio.create_task(self._abandon(session, url, request, recorder))
            else:
                body = json.dumps(request.body).encode()
                task = asyncio.create_task(send(session, url, body, request.stream, recorder))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
            if on_tick is not None:
                on_tick()
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    async def _abandon(self, session: aiohttp.ClientSession, url: str, request: Request,
                       recorder: Recorder) -> None:
        if await abandon(session, url, request, recorder):
            self.abandoned += 1


def new_session() -> aiohttp.ClientSession:
    """A client session sending the bench key, with a pool large enough never to queue."""
    connector = aiohttp.TCPConnector(limit=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60),
                                 headers={"authorization": f"Bearer {API_KEY}",
                                          "content-type": "application/json"})
