"""Spec-shaped OpenAI answers and requests pass through the gateway intact (issue 14, points 5-7).

The upstream here is a real HTTP server answering with bodies built from OpenAI's spec (each
is validated against the vendored schema first), not from the gateway's types, plus SGLang
0.5.23's own output (``tests/contracts/sglang/fixtures``). The client is the ``openai`` SDK.
Every body the gateway answers with is also checked against the spec by the stack's hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from backends.sim import SimConfig
from gateway.local_stack import ADMIN_KEY, ANTHROPIC_MODEL, DEMO_KEY, TEAM_B_KEY
from tests.conftest import ThreadedStack
from tests.contracts.openai.hook import SpecLedger
from tests.contracts.openai.spec import validate

SGLANG_FIXTURES = Path(__file__).resolve().parent / "sglang" / "fixtures"

SPEC_MODEL, SGLANG_MODEL = "spec-gpt", "spec-sglang"
"""Public names: an OpenAI-compatible upstream answering the spec's shapes, and an SGLang one."""
UPSTREAM_SPEC, UPSTREAM_SGLANG = "spec-fields-2026-08-01", "Qwen/Qwen3-8B"
RATE_LIMITED, OVERLOADED, NULL_USAGE = "spec-429", "spec-503", "spec-null-usage"
RETRY_HEADERS = {"retry-after-ms": "1500", "retry-after": "2"}
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Find the TODOs in src/."}]


# --- the upstream --------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """One canned answer: status, content type, extra headers and the body bytes."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
        return cls(json.dumps(value).encode(), status, headers=dict(headers or {}))

    @classmethod
    def of_events(cls, events: list[Any]) -> Answer:
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return cls(text.encode(), content_type="text/event-stream")

    @classmethod
    def of_fixture(cls, name: str) -> Answer:
        meta = json.loads((SGLANG_FIXTURES / "index.json").read_text(encoding="utf-8"))["fixtures"][name]
        return cls((SGLANG_FIXTURES / name).read_bytes(), meta["status"], meta["content_type"])


@dataclass
class SpecUpstream:
    """An OpenAI-compatible server on 127.0.0.1:0 answering by (upstream model, stream)."""

    answers: dict[tuple[str, bool], Answer] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def received(self, model: str) -> list[dict[str, Any]]:
        """Bodies of the completion requests received for an upstream model, oldest first."""
        return [r for r in self.requests if r.get("model") == model]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path in ("/health", "/health_generate"):
            return web.Response(status=200)
        if request.method == "GET" and request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [
                {"id": UPSTREAM_SPEC, "object": "model", "created": 1, "owned_by": "spec"}]})
        if request.method != "POST" or request.path not in ("/v1/chat/completions", "/v1/completions"):
            return web.json_response({"error": {"message": "no route", "type": "invalid_request_error",
                                                "param": None, "code": None}}, status=404)
        body = await request.json()
        self.requests.append(body)
        answer = self.answers[(body["model"], bool(body.get("stream")))]
        response = web.StreamResponse(status=answer.status,
                                      headers={"Content-Type": answer.content_type, **answer.headers})
        await response.prepare(request)
        if answer.content_type.startswith("text/event-stream"):
            for event in answer.body.split(b"\n\n")[:-1]:  # one write per event, as servers do
                await response.write(event + b"\n\n")
                await asyncio.sleep(0.001)
        else:
            await response.write(answer.body)
        await response.write_eof()
        return response

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serve in a thread of its own; yields the base URL."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="spec-upstream", daemon=True)
        thread.start()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)

        async def start() -> int:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return int(runner.addresses[0][1])

        try:
            yield f"http://127.0.0.1:{asyncio.run_coroutine_threadsafe(start(), loop).result(10)}"
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


# --- spec-shaped bodies (issue 14 point 5) ---------------------------------------------------

VENDOR = {"x_vendor_trace": {"region": "eu-1", "shard": 7}}
"""A field the spec does not know, at the top, in a choice and in a message."""


def logprob(token: str) -> dict[str, Any]:
    data = list(token.encode())
    return {"token": token, "logprob": -0.25, "bytes": data,
            "top_logprobs": [{"token": token, "logprob": -0.25, "bytes": data}]}


def full_chat() -> dict[str, Any]:
    """A chat completion with every field of point 5, as the spec describes each."""
    return {
        "id": "chatcmpl-spec-1", "object": "chat.completion", "created": 1_780_000_000,
        "model": UPSTREAM_SPEC, "service_tier": "flex", "system_fingerprint": "fp_spec_1", **VENDOR,
        "choices": [{
            "index": 0, "finish_reason": "tool_calls", **VENDOR,
            "logprobs": {"content": [logprob("See"), logprob(" the"), logprob(" sources.")], "refusal": None},
            "message": {
                "role": "assistant", "content": "See the sources.", "refusal": None, **VENDOR,
                "annotations": [{"type": "url_citation", "url_citation": {
                    "start_index": 4, "end_index": 15, "url": "https://example.com/todo", "title": "TODO"}}],
                "audio": {"id": "audio_spec_1", "expires_at": 1_780_003_600, "data": "UklGRiQAAABXQVZF",
                          "transcript": "See the sources."},
                "function_call": {"name": "legacy_lookup", "arguments": "{\"path\": \"src/\"}"},
                "tool_calls": [
                    {"id": "call_custom_1", "type": "custom",
                     "custom": {"name": "grep", "input": "TODO src/"}},
                    {"id": "call_fn_1", "type": "function",
                     "function": {"name": "lookup", "arguments": "{\"q\": \"TODO\"}"}},
                ],
            },
        }],
        "usage": {"prompt_tokens": 14, "completion_tokens": 21, "total_tokens": 35,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 6,
                                                "accepted_prediction_tokens": 2,
                                                "rejected_prediction_tokens": 1}},
    }


def full_chunks() -> list[dict[str, Any]]:
    """The streamed counterpart: every point-5 field the spec's chunk schema has."""
    head = {"id": "chatcmpl-spec-2", "object": "chat.completion.chunk", "created": 1_780_000_000,
            "model": UPSTREAM_SPEC, "service_tier": "flex", "system_fingerprint": "fp_spec_1",
            "obfuscation": "Qx7", **VENDOR}

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "See"}, logprobs={"content": [logprob("See")], "refusal": None}),
        chunk({"content": " the sources."}, logprobs={"content": [logprob(" the sources.")], "refusal": None}),
        chunk({"function_call": {"name": "legacy_lookup", "arguments": ""}}),
        chunk({"function_call": {"arguments": "{\"path\": \"src/\"}"}}),
        chunk({"tool_calls": [{"index": 0, "id": "call_fn_1", "type": "function",
                               "function": {"name": "lookup", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": \"TODO\"}"}}]}),
        chunk({}, finish="tool_calls"),
        {**head, "choices": [], "usage": full_chat()["usage"]},
    ]


def openai_error(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def upstream_answers() -> dict[tuple[str, bool], Answer]:
    busy = openai_error("Slow down.", "requests", "rate_limit_exceeded")
    overloaded = openai_error("The engine is overloaded.", "server_error", "overloaded")
    return {
        (UPSTREAM_SPEC, False): Answer.of_json(full_chat()),
        (UPSTREAM_SPEC, True): Answer.of_events(full_chunks()),
        (UPSTREAM_SGLANG, False): Answer.of_fixture("chat_plain.json"),
        (UPSTREAM_SGLANG, True): Answer.of_fixture("chat_stream_tool_calls.sse"),
        (NULL_USAGE, False): Answer.of_json({
            "id": "chatcmpl-spec-3", "object": "chat.completion", "created": 1_780_000_000, "model": NULL_USAGE,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "Nothing to do.", "refusal": None}}],
            "usage": None}),
        (RATE_LIMITED, False): Answer.of_json(busy, 429, RETRY_HEADERS),
        (OVERLOADED, False): Answer.of_json(overloaded, 503, RETRY_HEADERS),
    }


# --- the stack -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[SpecUpstream, str]]:
    server = SpecUpstream(upstream_answers())
    with server.running() as url:
        yield server, url


@pytest.fixture(scope="module")
def gateway(upstream: tuple[SpecUpstream, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    _, url = upstream

    def add_spec_upstreams(document: dict[str, Any]) -> None:
        document["backends"]["spec"] = {"kind": "openai", "base_url": url + "/v1", "health_interval_s": 5.0}
        document["backends"]["spec-sglang"] = {"kind": "sglang", "workers": [url], "health_interval_s": 5.0}
        for public, backend, model in ((SPEC_MODEL, "spec", UPSTREAM_SPEC), (RATE_LIMITED, "spec", RATE_LIMITED),
                                       (OVERLOADED, "spec", OVERLOADED), (NULL_USAGE, "spec", NULL_USAGE),
                                       (SGLANG_MODEL, "spec-sglang", UPSTREAM_SGLANG)):
            document["models"][public] = {"deployments": [{"backend": backend, "model": model}]}

    stack = ThreadedStack(tmp_path_factory.mktemp("spec-passthrough"), sglang_workers=1,
                          sim=SimConfig(zero_latency=True), edit_policy=add_spec_upstreams)
    yield stack
    stack.close()


def client_of(stack: ThreadedStack, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def retries_counted(stack: ThreadedStack) -> float:
    """All failed upstream attempts the gateway has counted (``switchyard_retries``)."""
    text = httpx.get(stack.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "switchyard_retries" for sample in family.samples
               if sample.name.endswith("_total"))


def assert_within(expected: Any, actual: Any, path: str = "$") -> None:
    """Every field of ``expected`` is in ``actual`` with the same value (``actual`` may add)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} was dropped"
            assert_within(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for index, (want, got) in enumerate(zip(expected, actual)):
            assert_within(want, got, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def without_model(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "model"}  # the public name replaces it


# --- point 5: responses ----------------------------------------------------------------------

def test_the_upstream_bodies_are_what_the_spec_describes() -> None:
    # the fixtures must be right before the gateway is judged by them
    assert validate("CreateChatCompletionResponse", full_chat())
    for chunk in full_chunks():
        assert validate("CreateChatCompletionStreamResponse", chunk)


def test_every_field_of_a_spec_response_arrives_intact(gateway: ThreadedStack,
                                                       upstream: tuple[SpecUpstream, str]) -> None:
    server, _ = upstream
    before, retries = len(server.received(UPSTREAM_SPEC)), retries_counted(gateway)
    raw = client_of(gateway).chat.completions.with_raw_response.create(model=SPEC_MODEL, messages=PROMPT)
    assert raw.status_code == 200
    answer = raw.parse()
    assert_within(without_model(full_chat()), answer.to_dict())
    assert answer.model == SPEC_MODEL
    # and the SDK reads each of them as the typed field it is
    message = answer.choices[0].message
    custom = message.tool_calls[0] if message.tool_calls else None
    assert custom is not None and custom.type == "custom" and custom.custom.input == "TODO src/"
    assert message.audio is not None and message.audio.transcript == "See the sources."
    assert message.function_call is not None and message.function_call.name == "legacy_lookup"
    assert message.annotations and message.annotations[0].url_citation.url == "https://example.com/todo"
    assert answer.service_tier == "flex" and answer.system_fingerprint == "fp_spec_1"
    usage = answer.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.accepted_prediction_tokens == 2
    assert usage.completion_tokens_details.rejected_prediction_tokens == 1
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.audio_tokens == 4
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content and logprobs.content[0].token == "See"
    assert (answer.model_extra or {}).get("x_vendor_trace") == VENDOR["x_vendor_trace"]
    # one upstream attempt, and no failure counted against the worker
    assert len(server.received(UPSTREAM_SPEC)) == before + 1
    assert retries_counted(gateway) == retries


def test_every_field_of_a_spec_stream_arrives_intact(gateway: ThreadedStack,
                                                     upstream: tuple[SpecUpstream, str]) -> None:
    server, _ = upstream
    before, retries = len(server.received(UPSTREAM_SPEC)), retries_counted(gateway)
    stream = client_of(gateway).chat.completions.create(model=SPEC_MODEL, messages=PROMPT, stream=True,
                                                        stream_options={"include_usage": True})
    received = [chunk.to_dict() for chunk in stream]
    expected = full_chunks()
    assert len(received) == len(expected), [c.get("choices") for c in received]
    for index, (want, got) in enumerate(zip(expected, received)):
        assert_within(without_model(want), got, f"chunk[{index}]")
        assert got["model"] == SPEC_MODEL
    assert len(server.received(UPSTREAM_SPEC)) == before + 1
    assert retries_counted(gateway) == retries


# --- point 5: requests -----------------------------------------------------------------------

def test_request_features_of_the_spec_reach_the_upstream_as_sent(gateway: ThreadedStack,
                                                                 upstream: tuple[SpecUpstream, str]) -> None:
    server, _ = upstream
    features: dict[str, Any] = {
        "tools": [{"type": "custom", "custom": {
            "name": "grep", "description": "Search files.",
            "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "[A-Z]+ \\S+"}}}}],
        "audio": {"voice": "alloy", "format": "wav"},
        "modalities": ["text", "audio"],
        "prediction": {"type": "content", "content": "See the sources."},
        "web_search_options": {"search_context_size": "low", "user_location": {
            "type": "approximate", "approximate": {"country": "FR", "city": "Paris"}}},
    }
    before = len(server.received(UPSTREAM_SPEC))
    answer = client_of(gateway).chat.completions.create(model=SPEC_MODEL, messages=PROMPT, **features)
    assert answer.choices[0].message.content == "See the sources."
    sent = server.received(UPSTREAM_SPEC)[before:]
    assert len(sent) == 1
    assert {key: sent[0].get(key) for key in features} == features
    assert validate("CreateChatCompletionRequest", sent[0])


# --- point 6: one model ----------------------------------------------------------------------

def test_a_model_the_key_may_use_can_be_retrieved(gateway: ThreadedStack, spec_checks: SpecLedger) -> None:
    model = client_of(gateway).models.retrieve(SPEC_MODEL)
    assert (model.id, model.object) == (SPEC_MODEL, "model")
    spec_checks.check()
    assert [c.schema for c in spec_checks.checks] == ["Model"]


@pytest.mark.parametrize(("name", "key"), [("no-such-model", DEMO_KEY), (SPEC_MODEL, TEAM_B_KEY)])
def test_other_models_get_openais_404(gateway: ThreadedStack, name: str, key: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client_of(gateway, key).models.retrieve(name)
    error = caught.value
    assert (error.status_code, error.type, error.code, error.param) == (
        404, "invalid_request_error", "model_not_found", "model")


# --- point 7 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [SGLANG_MODEL, ANTHROPIC_MODEL])
def test_messages_from_other_sources_carry_refusal_null(gateway: ThreadedStack, model: str) -> None:
    raw = client_of(gateway).chat.completions.with_raw_response.create(model=model, messages=PROMPT,
                                                                        max_tokens=8)
    message = raw.http_response.json()["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None


def test_sglang_usage_null_is_not_relayed_to_a_client_that_did_not_ask(gateway: ThreadedStack) -> None:
    # SGLang dumps "usage": null on every chunk; OpenAI's chunk has usage "only present when
    # you set stream_options: {include_usage: true}"
    chunks = [c.to_dict() for c in client_of(gateway).chat.completions.create(
        model=SGLANG_MODEL, messages=PROMPT, stream=True)]
    assert chunks and all("usage" not in chunk for chunk in chunks), [c.get("usage") for c in chunks]


def test_sglang_usage_reaches_a_client_that_asked(gateway: ThreadedStack) -> None:
    chunks = list(client_of(gateway).chat.completions.create(
        model=SGLANG_MODEL, messages=PROMPT, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_whole_answer_with_usage_null_gets_the_usage_the_gateway_knows(gateway: ThreadedStack) -> None:
    # the spec has no null usage on a whole answer: the gateway fills in what it counted
    raw = client_of(gateway).chat.completions.with_raw_response.create(model=NULL_USAGE, messages=PROMPT)
    usage = raw.http_response.json().get("usage")
    assert isinstance(usage, dict) and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("make_error", [
    lambda c: c.chat.completions.create(model="no-such-model", messages=PROMPT),
    lambda c: c.models.retrieve("no-such-model"),
    lambda c: c.chat.completions.create(model=SPEC_MODEL, messages=[]),
    lambda c: c.chat.completions.create(model=RATE_LIMITED, messages=PROMPT),
    lambda c: openai.OpenAI(base_url=str(c.base_url), api_key="sy-wrong", max_retries=0).models.list(),
], ids=["unknown-model", "retrieve-unknown", "invalid-body", "upstream-429", "bad-key"])
def test_error_responses_carry_a_request_id(gateway: ThreadedStack, make_error: Any) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        make_error(client_of(gateway))
    assert caught.value.status_code >= 400
    assert caught.value.response.headers.get("x-request-id"), dict(caught.value.response.headers)


@pytest.mark.parametrize(("model", "status"), [(RATE_LIMITED, 429), (OVERLOADED, 503)])
def test_upstream_retry_after_is_relayed(gateway: ThreadedStack, model: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client_of(gateway).chat.completions.create(model=model, messages=PROMPT)
    headers = caught.value.response.headers
    assert caught.value.status_code == status
    assert (headers.get("retry-after-ms"), headers.get("retry-after")) == ("1500", "2")
