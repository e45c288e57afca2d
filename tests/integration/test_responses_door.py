"""The Responses door end to end: the real ``openai`` SDK against the gateway over SGLang,
OpenAI-compatible and Anthropic simulators, a difficulty route and a canary.

Every body and event the gateway sends is also checked against OpenAI's spec by the test
harness (``tests/contracts/openai/``: ``Response`` and ``ResponseStreamEvent``); here the
SDK's own types judge them too (``Response.model_validate``, the stream helper's state
machine, which raises on an event out of order).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.local_stack import ANTHROPIC_MODEL, AUTO_ROUTE, DEMO_KEY, LOCAL_MODEL, OPENAI_MODEL, TEAM_B_KEY
from gateway.telemetry import AccessLog, Telemetry
from tests.conftest import ThreadedStack
from tests.contracts.openai.hook import SpecLedger
from tests.redis_support import REDIS_URL, require_redis

MODELS = [LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL]
ACCESS = io.StringIO()
"""The canary stack's access lines."""
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}


def _client(url: str, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


def _sim_for(stack: ThreadedStack, model: str) -> str:
    stacked = stack.stack
    if model == OPENAI_MODEL:
        return stacked.openai.url
    if model == ANTHROPIC_MODEL:
        return stacked.anthropic.url
    raise ValueError(model)


def _last_upstream(stack: ThreadedStack, model: str, marker: str) -> dict[str, Any]:
    """The last request an upstream received whose body mentions ``marker``."""
    urls = [s.url for s in stack.stack.sglang] if model == LOCAL_MODEL else [_sim_for(stack, model)]
    found = [r["body"] for url in urls for r in stack.sim_requests(url) if marker in json.dumps(r["body"])]
    assert found, f"no upstream request mentions {marker!r}"
    return found[-1]  # type: ignore[no-any-return]


def _raw(client: openai.OpenAI, **body: Any) -> tuple[Any, Response]:
    raw = client.responses.with_raw_response.create(**body)
    parsed = Response.model_validate_json(raw.http_response.content)  # the SDK's type judges the JSON
    return raw.http_response, parsed


@pytest.mark.parametrize("model", MODELS)
def test_create_over_each_backend(stack: ThreadedStack, model: str) -> None:
    marker = uuid.uuid4().hex[:8]
    http, response = _raw(_client(stack.url), model=model, input=f"Say hello {marker}", instructions="Be brief.",
                          max_output_tokens=64, temperature=0.5, metadata={"case": marker},
                          extra_body={"sim_reply": "Hello there."})
    assert http.status_code == 200 and http.headers["x-switchyard-model"] == model
    assert response.status == "completed" and response.model == model and response.object == "response"
    assert response.output_text == "Hello there." and response.metadata == {"case": marker}
    assert response.instructions == "Be brief." and response.max_output_tokens == 64
    message = response.output[-1]
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    upstream = _last_upstream(stack, model, marker)
    if model == ANTHROPIC_MODEL:  # instructions became Claude's system prompt, the input its user turn
        assert upstream["system"] == "Be brief." and upstream["max_tokens"] == 64
    else:
        assert upstream["messages"][0] == {"role": "system", "content": "Be brief."}
        assert upstream["max_completion_tokens"] == 64


def _events(stream: Any) -> list[Any]:
    """Every event of a ``responses.stream`` (the SDK's state machine raises on one out of order)."""
    return list(stream)


def _raw_events(url: str, body: dict[str, Any]) -> list[Any]:
    """The events of a raw stream, each validated as the SDK's ``ResponseStreamEvent`` union."""
    with httpx.stream("POST", url + "/v1/responses", json={**body, "stream": True}, timeout=20,
                      headers={"authorization": f"Bearer {DEMO_KEY}"}) as response:
        text = "".join(response.iter_text())
    blocks = [block.split("\n") for block in text.split("\n\n") if block.strip()]
    assert all(lines[0].startswith("event: ") and lines[1].startswith("data: ") for lines in blocks)
    return [EVENTS.validate_json(lines[1][6:]) for lines in blocks]


@pytest.mark.parametrize("model", MODELS)
def test_stream_over_each_backend(stack: ThreadedStack, model: str, spec_checks: SpecLedger) -> None:
    pieces = ["Hel", "lo ", "the", "re."]
    with _client(stack.url).responses.stream(model=model, input="Greet me", instructions="Be brief.",
                                             extra_body={"sim_reply": pieces}) as stream:
        events = _events(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Hello there." == final.output_text
    assert final.status == "completed" and final.model == model and final.id == events[0].response.id
    assert final.usage is not None and final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    raw = _raw_events(stack.url, {"model": model, "input": "Greet me", "sim_reply": pieces})
    assert [e.type for e in raw] == kinds and raw[-1].response.output_text == "Hello there."
    assert not spec_checks.check()  # the harness judged every event by OpenAI's spec
    judged = {check.schema.rpartition("/")[2] for check in spec_checks.checks}
    assert {"ResponseCreatedEvent", "ResponseTextDeltaEvent", "ResponseCompletedEvent"} <= judged


@pytest.mark.parametrize("model", MODELS)
def test_function_tool_round_trip(stack: ThreadedStack, model: str) -> None:
    client = _client(stack.url)
    question: Any = [{"role": "user", "content": [{"type": "input_text", "text": "Please call get_weather for Paris"}]}]
    first = client.responses.create(model=model, input=question, tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"})
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "sim"}
    marker = uuid.uuid4().hex[:8]
    # tool_choice none: the sim would otherwise call again (it reads "call <name>" in the last user turn)
    # the SDK's own output items, passed back as they came, then the function's output
    follow_up: Any = [*question, *[item.model_dump(exclude_none=True) for item in first.output],
                      {"type": "function_call_output", "call_id": calls[0].call_id, "output": f"sunny {marker}"}]
    answer = client.responses.create(model=model, tools=[WEATHER], tool_choice="none", input=follow_up,
                                     extra_body={"sim_reply": "It is sunny."})
    assert answer.output_text == "It is sunny."
    upstream = _last_upstream(stack, model, marker)
    if model == ANTHROPIC_MODEL:  # the call and its result as Claude's tool_use / tool_result blocks
        use = [b for m in upstream["messages"] for b in m["content"] if isinstance(b, dict) and b["type"] == "tool_use"]
        result = upstream["messages"][-1]["content"][0]
        assert use[0]["id"] == calls[0].call_id and result["tool_use_id"] == calls[0].call_id
    else:
        assistant, tool = upstream["messages"][-2:]
        assert assistant["tool_calls"][0]["id"] == calls[0].call_id
        assert tool == {"role": "tool", "tool_call_id": calls[0].call_id, "content": f"sunny {marker}"}


def test_streamed_function_call(stack: ThreadedStack) -> None:
    with _client(stack.url).responses.stream(model=LOCAL_MODEL, input="call get_weather now", tools=[WEATHER],
                                             tool_choice={"type": "function", "name": "get_weather"}) as stream:
        events = _events(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    call = final.output[-1]
    assert call.type == "function_call" and call.arguments == done.arguments and json.loads(done.arguments)


class Forecast(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("model", MODELS)
def test_structured_output_via_text_format(stack: ThreadedStack, model: str) -> None:
    marker = uuid.uuid4().hex[:8]
    parsed = _client(stack.url).responses.parse(model=model, input=f"Forecast for Paris {marker}",
                                                text_format=Forecast,
                                                extra_body={"sim_reply": '{"city": "Paris", "celsius": 21}'})
    assert parsed.output_parsed == Forecast(city="Paris", celsius=21)
    assert parsed.text is not None and parsed.text.format is not None and parsed.text.format.type == "json_schema"
    upstream = _last_upstream(stack, model, marker)
    if model == ANTHROPIC_MODEL:
        schema = upstream["output_config"]["format"]["schema"]
    else:
        assert upstream["response_format"]["type"] == "json_schema"
        schema = upstream["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"city", "celsius"}


def test_previous_response_id_with_store(stack: ThreadedStack) -> None:
    client = _client(stack.url)
    marker = uuid.uuid4().hex[:8]
    first = client.responses.create(model=LOCAL_MODEL, input=f"My name is Ada {marker}", store=True,
                                    instructions="Remember names.", extra_body={"sim_reply": "Hello Ada."})
    # streamed, continuing from the first: stored before its last event reached us
    with client.responses.stream(model=LOCAL_MODEL, input="What is my name?", previous_response_id=first.id,
                                 store=True, extra_body={"sim_reply": ["You are ", "Ada."]}) as stream:
        second = stream.get_final_response()
    third = client.responses.create(model=OPENAI_MODEL, input="And again?", previous_response_id=second.id,
                                    extra_body={"sim_reply": "Ada."})
    assert second.previous_response_id == first.id and third.output_text == "Ada."
    upstream = _last_upstream(stack, OPENAI_MODEL, marker)
    turns = [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
             for m in upstream["messages"]]
    # instructions are not carried over (OpenAI's rule); every earlier turn is, in order
    assert turns == [("user", f"My name is Ada {marker}"), ("assistant", "Hello Ada."),
                     ("user", "What is my name?"), ("assistant", "You are Ada."), ("user", "And again?")]
    assert client.responses.retrieve(first.id).output_text == "Hello Ada."
    # not stored (the default), another tenant's, or never issued: 404 in OpenAI's shape
    unstored = client.responses.create(model=LOCAL_MODEL, input="hi")
    other = _client(stack.url, TEAM_B_KEY)
    for who, response_id in ((client, unstored.id), (other, first.id), (client, "resp_nope")):
        with pytest.raises(openai.NotFoundError) as caught:
            who.responses.create(model=LOCAL_MODEL, input="more", previous_response_id=response_id)
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)


def test_difficulty_route(stack: ThreadedStack) -> None:
    client = _client(stack.url)
    for tier, model in (("cheap", LOCAL_MODEL), ("strong", ANTHROPIC_MODEL)):
        raw = client.responses.with_raw_response.create(
            model=AUTO_ROUTE, input="Prove that there are infinitely many primes.",
            extra_headers={"x-switchyard-tier": tier}, extra_body={"sim_reply": "Done."})
        response = raw.parse()
        assert raw.headers["x-switchyard-tier"] == tier and response.model == model
        assert response.output_text == "Done."
    with client.responses.stream(model=AUTO_ROUTE, input="hi", extra_body={"sim_reply": ["a", "b"]}) as stream:
        final = stream.get_final_response()
    assert final.model in (LOCAL_MODEL, ANTHROPIC_MODEL) and final.output_text == "ab"


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"input": "hi"}, 400, "model"),
    ({"model": LOCAL_MODEL, "input": "hi", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
    ({"model": LOCAL_MODEL, "input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens"),
    ({"model": LOCAL_MODEL, "input": [{"type": "item_reference", "id": "x"}]}, 400, "input[0].type"),
    ({"model": LOCAL_MODEL, "input": "hi", "background": True}, 400, "background"),
    ({"model": "no-such-model", "input": "hi"}, 404, "model"),
])
def test_bad_input_in_openai_shape(stack: ThreadedStack, body: dict[str, Any], status: int, param: str) -> None:
    response = httpx.post(stack.url + "/v1/responses", json=body, headers={"authorization": f"Bearer {DEMO_KEY}"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def _sim_process(port: int) -> subprocess.Popen[bytes]:
    """An SGLang sim in its own process (a test kills it mid-stream)."""
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "--kind", "sglang", "--port", str(port),
                                "--model", "sim-brittle", "--base-ttft-ms", "1", "--itl-ms", "100"],
                               stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the sim did not start")


@pytest.fixture(scope="module")
def brittle_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def brittle(brittle_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """The sim of the ``brittle`` model, in a process of its own."""
    process = _sim_process(brittle_port)
    yield process
    process.kill()
    process.wait(5)


@pytest.fixture(scope="module")
def canary_stack(tmp_path_factory: pytest.TempPathFactory, brittle: Any, brittle_port: int) -> Iterator[ThreadedStack]:
    """A stack where the local model is in canary (v2 on the second SGLang worker, half the
    users), storing responses is off, and a model lives on a sim a test can kill."""
    port = brittle_port

    def edit(document: dict[str, Any]) -> None:
        local = document["backends"]["local"]
        first, second = local["workers"]
        local["workers"] = [first]
        document["backends"]["next"] = {**local, "workers": [second]}
        document["backends"]["brittle"] = {"kind": "sglang", "workers": [f"http://127.0.0.1:{port}"]}
        document["models"][LOCAL_MODEL] = {
            "versions": {"v1": {"deployments": [{"backend": "local", "model": "sim-llama"}]},
                         "v2": {"deployments": [{"backend": "next", "model": "sim-llama"}]}},
            "stable": "v1", "canary": {"version": "v2", "weight": 0.5}}
        document["models"]["brittle"] = {"deployments": [{"backend": "brittle", "model": "sim-brittle"}]}
        document["retries"] = {"max_attempts": 1}
        document["responses"] = {"store": False}
        document["moderation"] = {"models": {LOCAL_MODEL: {
            "input": {"categories": {}, "blocked_terms": ["forbidden launch codes"]},
            "output": {"categories": {}, "blocked_terms": ["project nightingale"]}}}}

    stack = ThreadedStack(tmp_path_factory.mktemp("responses-canary"), edit_policy=edit,
                          telemetry=Telemetry(None, AccessLog(ACCESS)))
    try:
        yield stack
    finally:
        stack.close()


def test_canary_versions(canary_stack: ThreadedStack) -> None:
    client = _client(canary_stack.url)
    seen: dict[str, set[str]] = {}
    for user in range(16):
        raw = client.responses.with_raw_response.create(
            model=LOCAL_MODEL, input="hi", extra_headers={"x-switchyard-session": f"user-{user}"},
            extra_body={"sim_reply": "ok"})
        assert raw.parse().output_text == "ok" and raw.parse().model == LOCAL_MODEL
        seen.setdefault(raw.headers["x-switchyard-model-version"], set()).add(raw.headers["x-switchyard-worker"])
    # both versions answer, each from its own deployment
    assert seen == {"v1": {"local/0"}, "v2": {"next/0"}}
    with client.responses.stream(model=LOCAL_MODEL, input="hi", extra_body={"sim_reply": ["o", "k"]},
                                 extra_headers={"x-switchyard-session": "user-3"}) as stream:
        assert stream.get_final_response().output_text == "ok"


def test_store_off_is_a_clear_400(canary_stack: ThreadedStack) -> None:
    client = _client(canary_stack.url)
    for asked in ({"store": True}, {"previous_response_id": "resp_abc"}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=LOCAL_MODEL, input="hi", **asked)
        assert "responses: {store: true}" in caught.value.message
        assert caught.value.body["param"] == next(iter(asked))  # type: ignore[index]
    assert client.responses.create(model=LOCAL_MODEL, input="hi", store=False).status == "completed"


def test_moderation_and_the_access_line(canary_stack: ThreadedStack) -> None:
    client = _client(canary_stack.url)
    pieces = ["The plan is called proj", "ect night", "ingale and it starts ", "tomorrow at dawn. ",
              "More details follow in a long paragraph that keeps going for a while."]
    events = list(client.responses.create(model=LOCAL_MODEL, input="go", stream=True,
                                          extra_body={"sim_reply": pieces}))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "night" not in text.lower() and events[-1].type == "response.incomplete"
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "content_filter"
    assert "night" not in final.output_text.lower()
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=LOCAL_MODEL, input="tell me the forbidden launch codes")
    deadline = time.monotonic() + 5
    while not (lines := [json.loads(x) for x in ACCESS.getvalue().splitlines() if '"output:' in x]):
        assert time.monotonic() < deadline, "no access line with the output verdict"
        time.sleep(0.02)
    assert lines[-1]["door"] == "responses" and lines[-1]["moderation"] == ["output:blocked_term:block"]


def test_a_broken_stream_ends_with_error_and_response_failed(canary_stack: ThreadedStack,
                                                             brittle: subprocess.Popen[bytes]) -> None:
    client = _client(canary_stack.url)
    stream = client.responses.create(model="brittle", input="hi", stream=True,
                                     extra_body={"sim_reply": ["a"] * 100})
    events: list[Any] = []
    for event in stream:
        events.append(event)
        if event.type == "response.output_text.delta" and len(events) == 5:
            brittle.kill()  # SIGKILL: the upstream socket resets mid-stream
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-2:] == ["error", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.id == events[0].response.id


def test_stored_responses_are_shared_through_redis(tmp_path: Path) -> None:
    """Two gateways sharing Redis: a response stored by one is continued and read on the other."""
    require_redis()
    stacks: list[ThreadedStack] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            stacks.append(ThreadedStack(tmp_path / name, sglang_workers=1, settings_overrides={"redis_url": REDIS_URL}))
        a, b = (_client(stack.url) for stack in stacks)
        marker = uuid.uuid4().hex[:8]
        first = a.responses.create(model=OPENAI_MODEL, input=f"Remember {marker}", store=True,
                                   extra_body={"sim_reply": "Noted."})
        second = b.responses.create(model=OPENAI_MODEL, input="What did I say?", previous_response_id=first.id,
                                    extra_body={"sim_reply": f"You said {marker}."})
        assert second.output_text == f"You said {marker}."
        upstream = _last_upstream(stacks[1], OPENAI_MODEL, marker)
        assert [m["content"] for m in upstream["messages"]] == [f"Remember {marker}", "Noted.", "What did I say?"]
        assert b.responses.retrieve(first.id).output_text == "Noted."
        with pytest.raises(openai.NotFoundError):
            _client(stacks[1].url, TEAM_B_KEY).responses.retrieve(first.id)
    finally:
        for stack in stacks:
            stack.close()


@pytest.mark.parametrize("model", [LOCAL_MODEL, ANTHROPIC_MODEL])
def test_reasoning_items_out_and_back(stack: ThreadedStack, model: str) -> None:
    client = _client(stack.url)
    question: Any = [{"role": "user", "content": "Think about the weather in Oslo"}]
    ask: Any = {"model": model, "reasoning": {"effort": "low"}}
    if model == ANTHROPIC_MODEL:
        # above the thinking budget, as Claude requires; a short reply, or the sim writes 4096 tokens
        ask.update(max_output_tokens=4096, extra_body={"sim_reply": "Mild."})
    first = client.responses.create(input=question, **ask)
    assert [item.type for item in first.output] == ["reasoning", "message"]
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.content and reasoning.content[0].text
    assert first.reasoning is not None and first.reasoning.effort == "low"
    with client.responses.stream(input=question, **ask) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert "response.reasoning_text.delta" in kinds and [i.type for i in streamed.output] == ["reasoning", "message"]
    assert streamed.output[0].type == "reasoning" and streamed.output[0].content == reasoning.content
    marker = uuid.uuid4().hex[:8]
    follow_up: Any = [*question, *[item.model_dump(exclude_none=True) for item in first.output],
                      {"role": "user", "content": f"And tomorrow? {marker}"}]
    client.responses.create(input=follow_up, **ask)
    upstream = _last_upstream(stack, model, marker)
    turn = next(m for m in upstream["messages"] if m["role"] == "assistant")
    if model == ANTHROPIC_MODEL:  # the signed thinking block goes back first in its assistant turn
        assert turn["content"][0]["type"] == "thinking" and turn["content"][0]["signature"]
        assert turn["content"][0]["thinking"] == reasoning.content[0].text
    else:
        assert turn["reasoning_content"] == reasoning.content[0].text
