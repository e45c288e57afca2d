"""The Anthropic Messages door end to end: the real ``anthropic`` SDK against the gateway over
SGLang, OpenAI-compatible and Anthropic simulators, a difficulty route and a canary.

Every response body and stream event the door sends is validated against the SDK's own types
(``Message``, ``RawMessageStreamEvent``, strictly: no field the SDK does not know), and every
body the Anthropic simulator received against ``MessageCreateParams``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import msgspec
import pytest
from anthropic.types import Message, MessageCreateParams, RawMessageStreamEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

from backends.errors import UpstreamError
from backends.types import ChatChunk, ChunkChoice, Delta
from gateway.doors.anthropic import ANTHROPIC_MESSAGES
from gateway.doors.anthropic_wire import parse_messages
from gateway.local_stack import (
    ANTHROPIC_MODEL,
    AUTO_ROUTE,
    DEMO_KEY,
    LOCAL_MODEL,
    OPENAI_MODEL,
    TEAM_B_KEY,
    stack_policy,
)
from policies.document import Policy
from tests.conftest import ThreadedStack

CANARY_MODEL = "canary-chat"
TERM = "project nightingale"
CLAUDE_CODE_NAMES = ("claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022")
MODELS = (LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL)
_EVENT = TypeAdapter(RawMessageStreamEvent)
_PARAMS = TypeAdapter(MessageCreateParams)
WEATHER: Any = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _edit(document: dict[str, Any]) -> None:
    models = document["models"]
    models[ANTHROPIC_MODEL]["aliases"] = ["claude-sonnet-*", "claude-opus-*"]
    models[LOCAL_MODEL]["aliases"] = ["claude-3-5-haiku-*"]
    document["moderation"] = {"models": {ANTHROPIC_MODEL: {
        "input": {"categories": {}, "pii": {"email": {"action": "redact"}}, "blocked_terms": ["forbidden launch codes"]},
        "output": {"categories": {}, "pii": {"email": {"action": "redact"}}, "blocked_terms": [TERM]}}}}
    # a canary splitting users between two backend kinds: both must answer in Anthropic's shape
    models[CANARY_MODEL] = {"versions": {"v1": {"deployments": [{"backend": "local", "model": "sim-llama"}]},
                                         "v2": {"deployments": [{"backend": "claude", "model": "sim-claude"}]}},
                            "stable": "v1", "canary": {"version": "v2", "weight": 0.5}}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    threaded = ThreadedStack(tmp_path_factory.mktemp("messages"), edit_policy=_edit)
    yield threaded
    try:
        _anthropic_bodies(threaded)  # every body the Anthropic sim received (its last 100) fits the SDK's params
    finally:
        threaded.close()


def _client(stack: ThreadedStack, key: str = DEMO_KEY, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0, timeout=20, **options)


def _strict(model: BaseModel, where: str = "") -> None:
    """Fail on any field the SDK's (closed) types do not declare, at any depth."""
    extra = model.model_extra or {}
    assert not extra, f"{where or type(model).__name__}: fields the SDK does not know: {sorted(extra)}"
    for name, value in model:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, BaseModel):
                _strict(item, f"{where}.{name}")


def _message(data: dict[str, Any]) -> Message:
    message = Message.model_validate(data)
    _strict(message)
    return message


def _events(raw: bytes) -> list[dict[str, Any]]:
    """Parse an SSE body and check each event against ``RawMessageStreamEvent`` and its name."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        data = msgspec.json.decode(lines["data"])
        assert lines["event"] == data["type"]
        if data["type"] not in ("error", "ping"):  # the SDK skips pings and raises errors
            _strict(_EVENT.validate_python(data))
        events.append(data)
    return events


def _post(stack: ThreadedStack, body: dict[str, Any], key: str = DEMO_KEY, path: str = "/v1/messages",
          **headers: str) -> httpx.Response:
    return httpx.post(stack.url + path, json=body, timeout=20,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01", **headers})


def _anthropic_bodies(stack: ThreadedStack) -> list[dict[str, Any]]:
    bodies = [r["body"] for r in stack.sim_requests(stack.stack.anthropic.url) if r["path"] == "/v1/messages"]
    for body in bodies:
        _PARAMS.validate_python(body)
    return bodies


@pytest.mark.parametrize("model", MODELS)
def test_create_over_every_backend_kind(door: ThreadedStack, model: str) -> None:
    client = _client(door)
    reply = client.messages.create(model=model, max_tokens=16, system="Be brief.",
                                   messages=[{"role": "user", "content": "Say hello"},
                                             {"role": "assistant", "content": "Hello"},
                                             {"role": "user", "content": "Again"}],
                                   metadata={"user_id": "u-1"})
    assert reply.type == "message" and reply.role == "assistant" and reply.model == model
    assert reply.content and reply.content[0].type == "text" and reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    raw = _post(door, {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 200, raw.text
    _message(raw.json())


@pytest.mark.parametrize("model", MODELS)
def test_stream_over_every_backend_kind(door: ThreadedStack, model: str) -> None:
    client = _client(door)
    with client.messages.stream(model=model, max_tokens=24,
                                messages=[{"role": "user", "content": "Tell me a story"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.model == model and final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    raw = _post(door, {"model": model, "max_tokens": 8, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    events = _events(raw.content)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert events[0]["message"]["model"] == model


@pytest.mark.parametrize("model", MODELS)
def test_tools_round_trip(door: ThreadedStack, model: str) -> None:
    client = _client(door)
    ask: Any = [{"role": "user", "content": "What is the weather in Paris? Please use the tool."}]
    first = client.messages.create(model=model, max_tokens=64, tools=[WEATHER],
                                   tool_choice={"type": "tool", "name": "get_weather"}, messages=ask)
    uses = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and uses and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict)
    followup: Any = [*ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21C"},
                                                  {"type": "text", "text": "Thanks, summarise it."}]}]
    with client.messages.stream(model=model, max_tokens=32, tools=[WEATHER], messages=followup) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens") and final.content[0].type == "text"
    # a streamed tool call arrives whole through input_json_delta
    with client.messages.stream(model=model, max_tokens=64, tools=[WEATHER],
                                tool_choice={"type": "any"}, messages=ask) as stream:
        streamed = stream.get_final_message()
    calls = [b for b in streamed.content if b.type == "tool_use"]
    assert streamed.stop_reason == "tool_use" and calls and isinstance(calls[0].input, dict) and calls[0].input


def test_count_tokens(door: ThreadedStack) -> None:
    client = _client(door)
    messages: Any = [{"role": "user", "content": "How many tokens is this sentence?"}]
    short = client.messages.count_tokens(model=LOCAL_MODEL, messages=messages)
    longer = client.messages.count_tokens(model=LOCAL_MODEL, messages=messages, system="You are terse. " * 20,
                                          tools=[WEATHER])
    assert 0 < short.input_tokens < longer.input_tokens
    assert client.messages.count_tokens(model=CLAUDE_CODE_NAMES[0], messages=messages).input_tokens > 0
    assert client.messages.count_tokens(model=AUTO_ROUTE, messages=messages).input_tokens >= short.input_tokens
    with pytest.raises(anthropic.PermissionDeniedError):
        _client(door, TEAM_B_KEY).messages.count_tokens(model=ANTHROPIC_MODEL, messages=messages)
    with pytest.raises(anthropic.AuthenticationError):
        _client(door, "sy-wrong").messages.count_tokens(model=LOCAL_MODEL, messages=messages)
    spent = door.sim_stats(door.stack.sglang[0].url)["requests_total"]
    client.messages.count_tokens(model=LOCAL_MODEL, messages=messages)
    assert door.sim_stats(door.stack.sglang[0].url)["requests_total"] == spent  # counted here, not upstream


def test_native_passthrough_keeps_cache_control_and_unknown_fields(door: ThreadedStack) -> None:
    long_system = "You are a careful assistant who answers questions about the weather. " * 40
    body: dict[str, Any] = {"model": ANTHROPIC_MODEL, "max_tokens": 16, "service_tier": "auto", "top_k": 5,
            "system": [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]}]}
    for stream in (False, True):
        response = _post(door, {**body, "stream": stream}, **{"anthropic-beta": "prompt-caching-2024-07-31"})
        assert response.status_code == 200, response.text
        sent = _anthropic_bodies(door)[-1]
        assert sent["model"] == "sim-claude" and sent["service_tier"] == "auto" and sent["top_k"] == 5
        assert sent["system"] == body["system"] and sent["messages"] == body["messages"]
        assert sent.get("stream", False) is stream
        if stream:
            events = _events(response.content)
            usage = events[0]["message"]["usage"]
        else:
            usage = _message(response.json()).usage.model_dump()
        # the sim writes the prompt to its cache only for a request that marks a block
        assert usage["cache_creation_input_tokens"] or usage["cache_read_input_tokens"]
    sdk_body = {k: v for k, v in body.items() if k not in ("top_k", "service_tier")}
    _client(door).messages.create(**sdk_body, extra_body={"top_k": 5})
    again = _client(door).messages.create(**sdk_body, extra_body={"top_k": 5})
    assert again.usage.cache_read_input_tokens  # the marked prefix was read back from the cache
    assert _anthropic_bodies(door)[-1]["messages"] == body["messages"]


def test_anthropic_beta_header_reaches_anthropic_backend_only(door: ThreadedStack) -> None:
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
    for model in (ANTHROPIC_MODEL, LOCAL_MODEL):
        response = _post(door, {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}, **beta)
        assert response.status_code == 200
    received = door.sim_requests(door.stack.anthropic.url)[-1]["headers"]
    assert received["anthropic-beta"] == beta["anthropic-beta"]
    assert received["anthropic-version"] == "2023-06-01"  # the backend's own version, whatever the client's


def test_thinking_signed_blocks_round_trip_natively(door: ThreadedStack) -> None:
    client = _client(door)
    ask: Any = [{"role": "user", "content": "What is the weather in Oslo? Please use the tool."}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=2048, thinking=thinking, tools=[WEATHER],
                                messages=ask) as stream:
        first = stream.get_final_message()
    assert first.content[0].type == "thinking" and first.content[0].signature
    uses = [b for b in first.content if b.type == "tool_use"]
    assert uses
    followup = [*ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Cold"}]}]
    second = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=2048, thinking=thinking, tools=[WEATHER],
                                    messages=followup)
    assert second.content[0].type == "thinking"


def test_claude_code_names_and_auto_route(door: ThreadedStack) -> None:
    client = _client(door)
    for name, model in zip(CLAUDE_CODE_NAMES, (ANTHROPIC_MODEL, LOCAL_MODEL), strict=True):
        with client.messages.stream(model=name, max_tokens=8, tools=[WEATHER],
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            final = stream.get_final_message()
        assert final.model == model
    tiers = set()
    for tier, expect in (("cheap", LOCAL_MODEL), ("strong", ANTHROPIC_MODEL)):
        raw = _post(door, {"model": AUTO_ROUTE, "max_tokens": 8, "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}, **{"x-switchyard-tier": tier})
        assert raw.headers["x-switchyard-model"] == expect
        assert _events(raw.content)[0]["message"]["model"] == expect
        tiers.add(raw.headers["x-switchyard-tier"])
        reply = client.messages.create(model=AUTO_ROUTE, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-switchyard-tier": tier})
        assert reply.model == expect
    assert tiers == {"cheap", "strong"}


def test_canary_versions_answer_alike(door: ThreadedStack) -> None:
    versions: dict[str, int] = {}
    for session in range(16):
        raw = _post(door, {"model": CANARY_MODEL, "max_tokens": 8, "stream": session % 2 == 1,
                           "messages": [{"role": "user", "content": "hi"}]}, **{"x-switchyard-session": f"s{session}"})
        assert raw.status_code == 200, raw.text
        version = raw.headers["x-switchyard-model-version"]
        versions[version] = versions.get(version, 0) + 1
        if session % 2:
            events = _events(raw.content)
            assert events[0]["message"]["model"] == CANARY_MODEL
        else:
            assert _message(raw.json()).model == CANARY_MODEL
    assert len(versions) == 2, versions


def test_stop_sequences_and_max_tokens(door: ThreadedStack) -> None:
    client = _client(door)
    cut = client.messages.create(model=LOCAL_MODEL, max_tokens=3, messages=[{"role": "user", "content": "Talk"}])
    assert cut.stop_reason == "max_tokens"
    reply = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=3, messages=[{"role": "user", "content": "Talk"}])
    assert reply.stop_reason == "max_tokens"
    stopped = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=30, stop_sequences=["END"],
                                     messages=[{"role": "user", "content": "Talk"}],
                                     extra_body={"sim_reply": "one two END three"})
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "END"
    assert _anthropic_bodies(door)[-1]["stop_sequences"] == ["END"]


def test_image_block_is_translated(door: ThreadedStack) -> None:
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    content: Any = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}},
                    {"type": "text", "text": "What is this?"}]
    reply = _client(door).messages.create(model=OPENAI_MODEL, max_tokens=8, messages=[{"role": "user", "content": content}])
    assert reply.content[0].type == "text"


@pytest.mark.parametrize(("body", "status", "kind"), [
    ({"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request_error"),
    ({"model": LOCAL_MODEL, "max_tokens": 5, "messages": []}, 400, "invalid_request_error"),
    ({"model": LOCAL_MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
     400, "invalid_request_error"),
    ({"model": LOCAL_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
     400, "invalid_request_error"),
    ({"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     404, "not_found_error"),
])
def test_bad_input_gets_anthropic_errors(door: ThreadedStack, body: dict[str, Any], status: int, kind: str) -> None:
    response = _post(door, body)
    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == kind and payload["error"]["message"]


def test_errors_as_the_sdk_raises_them(door: ThreadedStack) -> None:
    messages: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.AuthenticationError) as unauthorized:
        _client(door, "sy-wrong").messages.create(model=LOCAL_MODEL, max_tokens=4, messages=messages)
    assert unauthorized.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError):
        _client(door, TEAM_B_KEY).messages.create(model=ANTHROPIC_MODEL, max_tokens=4, messages=messages)
    with pytest.raises(anthropic.NotFoundError):
        _client(door).messages.create(model="nope", max_tokens=4, messages=messages)
    with pytest.raises(anthropic.BadRequestError):
        _client(door).messages.create(model=LOCAL_MODEL, max_tokens=4, messages=messages, extra_body={"top_p": 3})
    # not JSON at all, and a body over the gateway's limit
    bad = httpx.post(door.url + "/v1/messages", content=b"{", headers={"x-api-key": DEMO_KEY})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_upstream_errors_in_anthropic_shape(door: ThreadedStack) -> None:
    body: dict[str, Any] = {"model": ANTHROPIC_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    overloaded = _post(door, {**body, "sim_fail": 529})
    assert overloaded.status_code == 503 and overloaded.json()["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.InternalServerError):
        _client(door).messages.create(**body, extra_body={"sim_fail": 529})


def test_mid_stream_error_event_is_raised_by_the_sdk() -> None:
    """The bytes the encoder ends a broken stream with, read by the SDK itself."""
    call = parse_messages(msgspec.json.encode({"model": "m", "max_tokens": 8, "stream": True,
                                               "messages": [{"role": "user", "content": "x"}]}))
    encoder = ANTHROPIC_MESSAGES.stream(call)
    chunk = ChatChunk(id="c1", created=0, model="m", choices=[ChunkChoice(index=0, delta=Delta(content="Hel"))])
    body = encoder.chunk(chunk) + encoder.error(UpstreamError("the worker went away"))
    _events(body)

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    # the SDK's own HTTP client package, with a transport that answers with the encoder's bytes
    client = anthropic.Anthropic(api_key="k", base_url="http://door.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(reply)))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError, match="the worker went away"), client.messages.stream(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]) as stream:
        seen.extend(stream.text_stream)
    assert seen == ["Hel"]


def test_output_moderation_holds_over_native_streams_and_answers(door: ThreadedStack) -> None:
    client = _client(door)
    ask: Any = [{"role": "user", "content": "go"}]
    pieces = ["The plan is called proj", "ect night", "ingale and it starts ", "tomorrow at dawn. ", "More follows."]
    raw = _post(door, {"model": ANTHROPIC_MODEL, "max_tokens": 64, "stream": True, "messages": ask, "sim_reply": pieces})
    events = _events(raw.content)
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert "night" not in text.lower()
    assert [e for e in events if e["type"] == "message_delta"][-1]["delta"]["stop_reason"] == "refusal"
    assert events[-1]["type"] == "message_stop"
    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64, messages=ask,
                                extra_body={"sim_reply": ["Write to ", "jane.doe@exa", "mple.com for access. ", "Thanks."]}
                                ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == "Write to [REDACTED:EMAIL] for access. Thanks." and final.stop_reason == "end_turn"
    whole = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=ask,
                                   extra_body={"sim_reply": "Plans for project nightingale are attached."})
    assert whole.stop_reason == "refusal" and "nightingale" not in whole.model_dump_json()


def test_input_moderation_is_never_bypassed_by_the_native_body(door: ThreadedStack) -> None:
    system = [{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}]
    response = _post(door, {"model": ANTHROPIC_MODEL, "max_tokens": 8, "system": system,
                            "messages": [{"role": "user", "content": "Mail jane.doe@example.com please"}]})
    assert response.status_code == 200, response.text
    sent = _anthropic_bodies(door)[-1]
    # the redacted prompt goes out translated: the client's own body would carry the address
    assert "jane.doe" not in msgspec.json.encode(sent).decode() and "[REDACTED:EMAIL]" in str(sent["messages"])
    assert sent["system"] == "Be kind."
    blocked = _post(door, {"model": ANTHROPIC_MODEL, "max_tokens": 8,
                           "messages": [{"role": "user", "content": "the forbidden launch codes"}]})
    assert blocked.status_code == 400 and blocked.json()["error"]["type"] == "invalid_request_error"


def test_aliases_are_checked_and_resolved_in_order() -> None:
    document = stack_policy(["http://127.0.0.1:1"], "http://127.0.0.1:2", "http://127.0.0.1:3")
    document["models"][ANTHROPIC_MODEL]["aliases"] = ["claude-sonnet-4-5-20250929", "claude-*"]
    document["models"][LOCAL_MODEL]["aliases"] = ["claude-3-5-haiku-*"]
    document["routes"][AUTO_ROUTE]["aliases"] = ["best"]
    policy = Policy.model_validate(document)
    assert policy.model_named("claude-sonnet-4-5-20250929") == ANTHROPIC_MODEL
    # patterns in document order: the local model's comes first, Claude's takes the rest
    assert policy.model_named("claude-3-5-haiku-20241022") == LOCAL_MODEL
    assert policy.model_named("claude-opus-4-1-20250805") == ANTHROPIC_MODEL
    assert policy.model_named("best") == AUTO_ROUTE and policy.model_named(LOCAL_MODEL) == LOCAL_MODEL
    assert policy.model_named("gpt-5") == "gpt-5"  # unknown stays unknown: a 404 names it
    document["models"][OPENAI_MODEL]["aliases"] = ["best"]
    with pytest.raises(ValidationError, match="already an alias"):
        Policy.model_validate(document)
    document["models"][OPENAI_MODEL]["aliases"] = [LOCAL_MODEL]
    with pytest.raises(ValidationError, match="name of a model"):
        Policy.model_validate(document)
