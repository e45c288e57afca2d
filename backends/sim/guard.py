"""Simulated guard models: a Llama Guard 3-style chat classifier and an OpenAI ``/v1/moderations``.

One aiohttp server answers both formats (``backends/guard.py`` describes them):

- ``POST /v1/chat/completions``: an OpenAI chat completion (as SGLang serves one) whose content is
  ``safe`` or ``unsafe\\nS1,S10``, judging the last message;
- ``POST /v1/moderations``: ``{"id", "model", "results": [{"flagged", "categories",
  "category_scores"}]}`` with every OpenAI category present.

What is unsafe is decided by ``rules``: a phrase (lower case) and the labels it raises, Llama
Guard codes (``S10``) or OpenAI categories (``hate``), each mapped to the other format.
``delay_s`` makes every answer late; ``calls`` counts the requests per path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

__all__ = ["GuardSim"]

_OPENAI = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
           "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
           "violence/graphic")
_TO_OPENAI = {"S1": "violence", "S3": "sexual", "S4": "sexual/minors", "S9": "violence", "S10": "hate",
              "S11": "self-harm", "S12": "sexual", "S2": "illicit"}
_TO_LLAMA = {"hate": "S10", "hate/threatening": "S10", "harassment": "S10", "violence": "S1",
             "violence/graphic": "S1", "self-harm": "S11", "sexual": "S12", "sexual/minors": "S4", "illicit": "S2"}


class GuardSim:
    """A guard server on ``127.0.0.1:<free port>``, run in a thread of its own.

    Args:
        rules: phrase -> labels (Llama Guard codes or OpenAI categories) it raises.
        delay_s: wait before every answer (to test timeouts).
        fail_status: answer every request with this HTTP status instead.
    """

    def __init__(self, rules: Mapping[str, Sequence[str]], *, delay_s: float = 0.0,
                 fail_status: int | None = None) -> None:
        self.rules = {phrase.lower(): tuple(labels) for phrase, labels in rules.items()}
        self.delay_s = delay_s
        self.fail_status = fail_status
        self.calls: Counter[str] = Counter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="guard-sim")

    def start(self) -> GuardSim:
        """Serve until ``close()``; returns once the port is bound."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def close(self) -> None:
        """Stop serving and end the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/moderations", self._moderations)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def _labels(self, text: str) -> list[str]:
        lowered = text.lower()
        return [label for phrase, labels in self.rules.items() if phrase in lowered for label in labels]

    async def _answer(self, path: str) -> web.Response | None:
        self.calls[path] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return web.json_response({"error": {"message": "simulated failure"}}, status=self.fail_status)
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        failed = await self._answer("chat")
        if failed is not None:
            return failed
        body: dict[str, Any] = await request.json()
        last = body["messages"][-1]["content"]
        codes = list(dict.fromkeys(_TO_LLAMA.get(label, label) for label in self._labels(str(last))))
        content = "unsafe\n" + ",".join(codes) if codes else "safe"
        return web.json_response({
            "id": "guard-sim", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "reasoning_content": None,
                                                 "tool_calls": None}, "logprobs": None, "finish_reason": "stop",
                         "matched_stop": 128009}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 3, "total_tokens": 203},
        })

    async def _moderations(self, request: web.Request) -> web.Response:
        failed = await self._answer("moderations")
        if failed is not None:
            return failed
        body: dict[str, Any] = await request.json()
        hits = {_TO_OPENAI.get(label, label) for label in self._labels(str(body["input"]))}
        categories = {name: name in hits for name in _OPENAI}
        scores = {name: (0.93 if hit else 0.001) for name, hit in categories.items()}
        return web.json_response({"id": "modr-sim", "model": body.get("model", "omni-moderation-latest"),
                                  "results": [{"flagged": bool(hits), "categories": categories,
                                               "category_scores": scores}]})
