"""The Responses door end to end: the real ``openai`` SDK against the gateway over SGLang,
OpenAI-compatible and Anthropic simulators, a difficulty route and a canary.

Every body and event the gateway sends is also checked against OpenAI's spec by the test
harness (``tests/contracts/openai/``: ``Response`` and ``ResponseStreamEvent``); here the
SDK's own types judge them too (``Response.model_validate``, the stream helper's state
machine, which raises on an event out of order).
"""

from __future__ import annotations

import json
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
from tests.conftest import ThreadedStack

MODELS = [LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL]
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
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


def _raw(client: openai.OpenAI, **body: Any) -> tuple[httpx.Response, Response]:
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
