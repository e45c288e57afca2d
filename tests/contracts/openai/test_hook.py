"""The spec-check middleware: what it records, what it flags, and that every stack has it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from openai.types.chat import ChatCompletionMessageParam

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL
from tests.conftest import ThreadedStack
from tests.contracts.openai.hook import (
    ERROR_SCHEMA,
    Receive,
    Scope,
    Send,
    SpecCheckMiddleware,
    SpecLedger,
)

GOOD_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
              "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
BAD_CHUNK = {**GOOD_CHUNK, "choices": [{"index": 0, "delta": {"role": "robot"}, "finish_reason": None}]}
ERROR = {"error": {"message": "boom", "type": "api_error", "param": None, "code": "upstream_error"}}


def sse(*payloads: Any) -> list[bytes]:
    return [b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads] + [b"data: [DONE]\n\n"]


async def fake_gateway(scope: Scope, receive: Receive, send: Send) -> None:
    """A tiny ASGI app answering like a gateway would, some of it wrongly."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/v1/chat/completions":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        events = b"".join(sse(GOOD_CHUNK, BAD_CHUNK, ERROR))
        # cut mid-event, as a network write may: the ledger must reassemble
        for piece in (events[:30], events[30:200], events[200:]):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    status, body = {
        "/v1/models": (200, {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x"}]}),
        "/v1/nothing": (404, {"detail": "not here"}),
        "/readyz": (503, {"ready": False}),
        "/admin/usage": (200, {"anything": True}),
    }[path]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.fixture
def served() -> Iterator[tuple[str, SpecLedger]]:
    """``fake_gateway`` behind the middleware, served by uvicorn on 127.0.0.1:0."""
    ledger = SpecLedger()
    server = uvicorn.Server(uvicorn.Config(SpecCheckMiddleware(fake_gateway, ledger), host="127.0.0.1",
                                           port=0, log_level="warning", lifespan="off"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", ledger
    server.should_exit = True
    thread.join(10)
    loop.close()


def test_the_middleware_changes_nothing_and_flags_what_the_spec_rejects(served: tuple[str, SpecLedger]) -> None:
    url, ledger = served
    with httpx.Client(base_url=url) as client:
        streamed = client.post("/v1/chat/completions", json={})
        assert streamed.content == b"".join(sse(GOOD_CHUNK, BAD_CHUNK, ERROR))
        models = client.get("/v1/models")
        assert models.json()["data"][0]["id"] == "m"
        for path in ("/v1/nothing", "/readyz", "/admin/usage"):
            client.get(path)
    problems = ledger.check()
    checked = [(c.path, c.schema, c.problem is None) for c in ledger.checks]
    assert checked == [
        ("/v1/chat/completions", "CreateChatCompletionStreamResponse", True),
        ("/v1/chat/completions", "CreateChatCompletionStreamResponse", False),
        ("/v1/chat/completions", ERROR_SCHEMA, True),   # an error event mid-stream
        ("/v1/models", "ListModelsResponse", False),    # "created" is missing
        ("/v1/nothing", ERROR_SCHEMA, False),            # not OpenAI's error shape
    ]  # /readyz and /admin/usage are not OpenAI bodies: not checked
    assert [p.problem.split(":")[0] for p in problems if p.problem] == [
        "$.choices[0].delta.role", "$.data[0]", "$"]
    assert "'created' is a required property" in str(problems[1])
    assert ledger.check() == []  # each body is checked once


def test_a_stream_is_checked_up_to_its_last_complete_event() -> None:
    ledger = SpecLedger()
    capture = ledger.open("POST", "/v1/chat/completions", 200, [(b"content-type", b"text/event-stream")])
    assert capture is not None
    event = sse(GOOD_CHUNK)[0]
    ledger.feed(capture, event + event[:20], more=True)
    assert ledger.check() == [] and len(ledger.checks) == 1
    ledger.feed(capture, event[20:], more=True)
    ledger.feed(capture, b"data: {not json}\n\n", more=False)
    problems = ledger.check()
    assert len(ledger.checks) == 3 and [p.problem for p in problems] == ["not JSON: '{not json}'"]


def test_a_body_cut_short_is_recorded_as_not_checked() -> None:
    ledger = SpecLedger()
    capture = ledger.open("GET", "/v1/models", 200, [(b"content-type", b"application/json")])
    assert capture is not None
    ledger.feed(capture, b'{"object": "li', more=True)
    assert ledger.check() == [] and ledger.checks == []  # still arriving: wait
    ledger.close(capture)  # the app returned without finishing (the client left)
    assert ledger.check() == []
    assert ledger.checks[0].schema.startswith("(not checked")


def test_every_stack_is_checked(stack: ThreadedStack, spec_checks: SpecLedger) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    message: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    client.models.list()
    client.chat.completions.create(model=LOCAL_MODEL, messages=message, max_tokens=4)
    for _ in client.chat.completions.create(model=LOCAL_MODEL, messages=message, max_tokens=2,
                                            stream=True):
        pass
    client.completions.create(model=LOCAL_MODEL, prompt="hello", max_tokens=2)
    for _ in client.completions.create(model=LOCAL_MODEL, prompt="hello", max_tokens=2, stream=True):
        pass
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=message)
    assert spec_checks.check() == []
    schemas = {check.schema for check in spec_checks.checks}
    assert schemas == {"ListModelsResponse", "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
                       "CreateCompletionResponse", "CreateCompletionResponse.chunk", ERROR_SCHEMA}
    streamed = [c for c in spec_checks.checks if c.schema == "CreateChatCompletionStreamResponse"]
    assert len(streamed) >= 2  # one check per event, not per response

