"""The real ``openai`` SDK, sync and async, through the gateway to simulated upstreams."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.local_stack import (
    ANTHROPIC_MODEL,
    AUTO_ROUTE,
    DEMO_KEY,
    LOCAL_MODEL,
    OPENAI_MODEL,
    TEAM_B_KEY,
    UPSTREAM_OPENAI_KEY,
)
from tests.conftest import ThreadedStack

HELLO = [{"role": "user", "content": "Say hello to the integration test."}]


@pytest.fixture
def client(stack: ThreadedStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)


@pytest.mark.parametrize("model", [LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL])
def test_chat_streamed_and_not_agree(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=12)
    completion = raw.parse()
    assert completion.model == model
    assert raw.headers["x-switchyard-model"] == model
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    chunks = list(client.chat.completions.create(
        model=model, messages=HELLO, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content, "the simulators are deterministic"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == completion.usage.prompt_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == completion.choices[0].finish_reason


def test_stream_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=LOCAL_MODEL, messages=HELLO, max_tokens=5, stream=True))
    assert chunks and all(c.choices and c.usage is None for c in chunks)


def test_sglang_reports_cached_tokens_and_worker(client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "You answer questions about radix trees. " * 40}
    messages = [system, {"role": "user", "content": "What is a radix tree?"}]
    workers, cached = set(), []
    for _ in range(4):  # round robin over 2 workers: each sees the prefix twice
        raw = client.chat.completions.with_raw_response.create(model=LOCAL_MODEL, messages=messages, max_tokens=4)
        workers.add(raw.headers["x-switchyard-worker"])
        usage = raw.parse().usage
        assert usage is not None and usage.prompt_tokens_details is not None
        cached.append(usage.prompt_tokens_details.cached_tokens or 0)
    assert workers == {"local/0", "local/1"}
    assert cached[2] > 300 and cached[3] > 300


def test_legacy_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=LOCAL_MODEL, prompt="Once upon a time", max_tokens=6)
    assert completion.object == "text_completion" and completion.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=LOCAL_MODEL, prompt="Once upon a time", max_tokens=6, stream=True) if c.choices)
    assert streamed == completion.choices[0].text


async def test_async_client_stream_and_not(stack: ThreadedStack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0) as client:
        completion = await client.chat.completions.create(model=LOCAL_MODEL, messages=HELLO, max_tokens=8)
        stream = await client.chat.completions.create(model=LOCAL_MODEL, messages=HELLO, max_tokens=8, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == completion.choices[0].message.content


def test_unknown_fields_and_openai_params_pass_through(client: openai.OpenAI, stack: ThreadedStack) -> None:
    client.chat.completions.create(
        model=OPENAI_MODEL, messages=HELLO, max_tokens=4, n=1, stop=["zzz"], seed=11, logprobs=True,
        response_format={"type": "text"}, extra_body={"top_k": 7, "regex": "[a-z]+"})
    sent = stack.sim_requests(stack.stack.openai.url)[-1]
    body = sent["body"]
    assert body["model"] == "sim-gpt", "the upstream name replaces the public one"
    assert (body["top_k"], body["regex"], body["seed"], body["stop"]) == (7, "[a-z]+", 11, ["zzz"])
    assert body["logprobs"] is True and body["response_format"] == {"type": "text"}
    # the gateway's own upstream key goes upstream, never the client's
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"


def test_client_key_never_reaches_sglang(client: openai.OpenAI, stack: ThreadedStack) -> None:
    client.chat.completions.create(model=LOCAL_MODEL, messages=HELLO, max_tokens=2)
    sent = [r for s in stack.stack.sglang for r in stack.sim_requests(s.url)]
    assert sent and all(DEMO_KEY not in str(r["headers"]) for r in sent)


def test_anthropic_tool_call_round_trip(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Please use the tool for Paris."}]
    completion = client.chat.completions.create(model=ANTHROPIC_MODEL, messages=messages, tools=tools, max_tokens=50)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    follow_up = [*messages, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    answer = client.chat.completions.create(model=ANTHROPIC_MODEL, messages=follow_up, tools=tools, max_tokens=10)
    assert answer.choices[0].message.content

    chunks = list(client.chat.completions.create(
        model=ANTHROPIC_MODEL, messages=messages, tools=tools, max_tokens=50, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments


def test_models_list_follows_the_key(stack: ThreadedStack) -> None:
    everything = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY).models.list()
    assert {m.id for m in everything} == {LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL, AUTO_ROUTE}
    limited = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEAM_B_KEY).models.list()
    assert [m.id for m in limited] == [LOCAL_MODEL]


def test_models_retrieve_follows_the_key(stack: ThreadedStack) -> None:
    model = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY).models.retrieve(ANTHROPIC_MODEL)
    assert (model.id, model.object) == (ANTHROPIC_MODEL, "model")
    limited = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEAM_B_KEY, max_retries=0)
    for hidden in (ANTHROPIC_MODEL, "no-such-model"):  # not granted looks like not there
        with pytest.raises(openai.NotFoundError) as caught:
            limited.models.retrieve(hidden)
        assert caught.value.code == "model_not_found"


def test_probes(stack: ThreadedStack) -> None:
    assert httpx.get(stack.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(stack.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
