"""The whole request path against an in-memory fake backend: no sockets, no simulators.

Like httpx's ``MockTransport``: the gateway app runs in-process (Litestar's test client), and
every worker of the policy's pool is an ``InMemoryBackend`` that answers from a script. The
stages run for real: authentication, admission (reserve, settle), routing, retries, moderation,
the relay's stream stages, the door's encoding and its error shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from litestar.exceptions import LitestarException
from litestar.testing import AsyncTestClient

from backends.errors import UpstreamUnavailableError
from backends.types import (
    ChatChoice,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChunkChoice,
    Delta,
    Health,
    PromptTokensDetails,
    ResponseMessage,
    TextRequest,
    TextResponse,
    Usage,
)
from gateway.app import create_app
from gateway.settings import Settings
from gateway.state import Gateway
from policies.keys import hash_key
from policies.scopes import tenant_scope

KEY = "sy-pipeline-key"
AUTH = {"authorization": f"Bearer {KEY}"}


class InMemoryBackend:
    """A worker that answers in memory: ``words`` as content, optionally failing first."""

    kind = "sglang"

    def __init__(self, name: str, address: str, words: list[str], *, fail: bool = False) -> None:
        self.name, self.address = name, address
        self.words, self.fail = words, fail
        self.received: list[ChatRequest] = []

    def _usage(self) -> Usage:
        return Usage(prompt_tokens=10, completion_tokens=len(self.words), total_tokens=10 + len(self.words),
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=4))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.received.append(request)
        if self.fail:
            raise UpstreamUnavailableError(f"{self.name} is down")
        message = ResponseMessage(content="".join(self.words))
        return ChatResponse(id="r1", created=1, model=request.upstream_model, usage=self._usage(),
                            choices=[ChatChoice(index=0, message=message, finish_reason="stop")])

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.received.append(request)
        if self.fail:
            raise UpstreamUnavailableError(f"{self.name} is down")

        def chunk(delta: Delta, finish: str | None = None) -> ChatChunk:
            return ChatChunk(id="s1", created=1, model=request.upstream_model,
                             choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)])

        yield chunk(Delta(role="assistant", content=""))
        for word in self.words:
            yield chunk(Delta(content=word))
        yield chunk(Delta(), "stop")
        yield ChatChunk(id="s1", created=1, model=request.upstream_model, choices=[], usage=self._usage())

    async def complete_text(self, request: TextRequest) -> TextResponse:
        raise NotImplementedError

    def stream_text(self, request: TextRequest) -> AsyncIterator[TextResponse]:
        raise NotImplementedError

    async def health(self) -> Health:
        return Health(ok=True, detail="in memory")

    async def aclose(self) -> None:
        return None


def _policy(path: Path) -> Path:
    document: dict[str, Any] = {
        "version": "pipeline-1",
        "backends": {"pool": {"kind": "sglang", "workers": ["http://in-memory-0", "http://in-memory-1"],
                              "selection": {"type": "round_robin"},
                              "resilience": {"circuit_breaker": {"enabled": False}}}},
        "models": {"m": {"deployments": [{"backend": "pool", "model": "upstream-m"}],
                         "prices": {"input": 1.0, "output": 2.0}}},
        "tenants": {"t": {"models": ["*"], "keys": [{"name": "k", "sha256": hash_key(KEY)}]}},
        "moderation": {"default": {"input": None,
                                   "output": {"categories": {}, "pii": {}, "blocked_terms": ["forbidden words"]}}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def words() -> list[str]:
    return ["Hello", " from", " memory"]


@pytest.fixture
def backends(words: list[str]) -> Iterator[list[InMemoryBackend]]:
    yield [InMemoryBackend("pool/0", "http://in-memory-0", words, fail=True),
           InMemoryBackend("pool/1", "http://in-memory-1", words)]


async def _started(client: AsyncTestClient[Any], fakes: list[InMemoryBackend]) -> Gateway:
    gateway: Gateway = client.app.state.gateway
    pool = gateway.runtime.pools["pool"]
    for worker, fake in zip(pool.workers, fakes, strict=True):
        worker.backend = fake  # the MockTransport move: every call now stays in memory
    await pool.check_health()
    return gateway


async def _charged(gateway: Gateway) -> list[Any]:
    """The tenant's usage rows once the background charge has landed."""
    for _ in range(100):
        report = await gateway.runtime.accounting.ledger.report(tenant_scope("t"), days=1)
        if report.rows:
            return report.rows
        await asyncio.sleep(0.01)
    return []


async def test_a_json_answer_runs_every_stage(tmp_path: Path, backends: list[InMemoryBackend]) -> None:
    app = create_app(Settings(policy_path=_policy(tmp_path / "policy.yaml"), access_log="off", policy_poll_s=0))
    async with AsyncTestClient(app) as client:
        gateway = await _started(client, backends)
        response = await client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "vendor_field": 7})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "m" and body["choices"][0]["message"]["content"] == "Hello from memory"
        assert body["choices"][0]["message"]["refusal"] is None
        assert response.headers["x-switchyard-worker"] == "pool/1"  # pool/0 failed: retried before 1st byte
        sent = backends[1].received[-1]
        assert sent.upstream_model == "upstream-m" and sent.extra == {"vendor_field": 7}
        rows = await _charged(gateway)
        assert [(r.model, r.input_tokens + r.cached_input_tokens, r.output_tokens) for r in rows] == [("m", 10, 3)]


async def test_a_stream_is_metered_moderated_and_encoded(tmp_path: Path, backends: list[InMemoryBackend]) -> None:
    backends[0].fail = False
    backends[0].words = backends[1].words = ["These ", "are ", "forbidden ", "words ", "here"]
    app = create_app(Settings(policy_path=_policy(tmp_path / "policy.yaml"), access_log="off", policy_poll_s=0))
    async with AsyncTestClient(app) as client:
        await _started(client, backends)
        response = await client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}})
        assert response.status_code == 200
        events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [msgspec.json.decode(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert "forbidden words" not in text  # the output guard held and blocked it
        assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
        assert all(c["model"] == "m" for c in chunks)


async def test_errors_leave_in_the_door_s_shape_and_refund(tmp_path: Path, backends: list[InMemoryBackend]) -> None:
    backends[1].fail = True  # every worker down
    app = create_app(Settings(policy_path=_policy(tmp_path / "policy.yaml"), access_log="off", policy_poll_s=0))
    async with AsyncTestClient(app) as client:
        gateway = await _started(client, backends)
        response = await client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
        assert response.status_code in (502, 503)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert len(response.headers["x-request-id"]) == 32
        accounting = gateway.runtime.accounting
        assert not accounting._live  # the reservation was refunded, nothing left in flight


def _chat_scope(body: bytes) -> tuple[dict[str, Any], Any]:
    """An ASGI HTTP scope posting ``body`` to the chat door, and its ``receive``."""
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"authorization", AUTH["authorization"].encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {}}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return scope, receive


_CHAT = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})


async def test_a_json_answer_is_sent_before_its_record_is_written(tmp_path: Path,
                                                                 backends: list[InMemoryBackend]) -> None:
    """The access line (the record's end) and the selector's bookkeeping wait for the body."""
    log = tmp_path / "access.jsonl"
    app = create_app(Settings(policy_path=_policy(tmp_path / "policy.yaml"), access_log=str(log), policy_poll_s=0))
    async with AsyncTestClient(app) as client:
        await _started(client, backends)
        scope, receive = _chat_scope(_CHAT)
        lines_when_sent: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                lines_when_sent.append(len(log.read_text().splitlines()) if log.exists() else 0)

        await app(scope, receive, send)  # type: ignore[arg-type]
        assert lines_when_sent == [0]  # nothing written while the answer went out
        (line,) = [msgspec.json.decode(x) for x in log.read_text().splitlines()]
        assert line["status"] == 200 and line["worker"] == "pool/1"


async def test_a_record_is_finished_when_sending_its_answer_fails(tmp_path: Path,
                                                                  backends: list[InMemoryBackend]) -> None:
    log = tmp_path / "access.jsonl"
    app = create_app(Settings(policy_path=_policy(tmp_path / "policy.yaml"), access_log=str(log), policy_poll_s=0))
    async with AsyncTestClient(app) as client:
        gateway = await _started(client, backends)
        scope, receive = _chat_scope(_CHAT)

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                raise ConnectionResetError("the client went away")

        with pytest.raises(LitestarException, match="after response started"):  # Litestar's wrapping
            await app(scope, receive, send)  # type: ignore[arg-type]
        (line,) = [msgspec.json.decode(x) for x in log.read_text().splitlines()]
        assert line["status"] == 200
        assert gateway.telemetry.metrics.in_flight._value.get() == 0  # the record left the gauge
        assert [(r.model, r.output_tokens) for r in await _charged(gateway)] == [("m", 3)]
