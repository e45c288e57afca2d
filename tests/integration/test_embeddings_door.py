"""``POST /v1/embeddings`` end to end: the real ``openai`` SDK against the gateway over an SGLang
embedding worker (``--is-embedding``) and the OpenAI-compatible simulator.

Every body the gateway sends on this route is checked against OpenAI's
``CreateEmbeddingResponse`` by the spec hook (``tests/contracts/openai``); float answers are
also validated strictly against the SDK's own ``CreateEmbeddingResponse``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse

from backends.sim import SimConfig
from gateway.doors.embeddings import base64_floats
from gateway.local_stack import (
    ADMIN_KEY,
    AUTO_ROUTE,
    DEMO_KEY,
    EMBED_LOCAL_MODEL,
    EMBED_OPENAI_MODEL,
    LOCAL_MODEL,
)
from gateway.telemetry import AccessLog, Telemetry
from policies.document import Policy, reference_problems
from policies.keys import hash_key
from tests.conftest import ThreadedStack, eventually

BUDGET_KEY = "sy-embed-budget-key"
BUDGET_TOKENS = 40
CANARY_MODEL = "embed-canary"
FAILOVER_MODEL = "embed-failover"
BLOCKED = "forbidden launch codes"
MODELS = [EMBED_LOCAL_MODEL, EMBED_OPENAI_MODEL]
TEMPLATE = SimConfig(zero_latency=True, enable_cache_report=True, enable_metrics=True)


def _policy(document: dict[str, Any]) -> None:
    from tests.integration.test_limits import free_port

    backends, models = document["backends"], document["models"]
    document["tenants"]["embed-budget"] = {
        "models": [EMBED_OPENAI_MODEL],
        "keys": [{"name": "embed-budget-key", "sha256": hash_key(BUDGET_KEY)}],
        "budgets": {"daily_tokens": BUDGET_TOKENS}}
    document["moderation"] = {"models": {EMBED_OPENAI_MODEL: {
        "input": {"categories": {}, "blocked_terms": [BLOCKED]}, "output": None}}}
    local = models[EMBED_LOCAL_MODEL]["deployments"]
    models[CANARY_MODEL] = {
        "kind": "embedding", "stable": "v1", "canary": {"version": "v2", "weight": 0.5},
        "versions": {"v1": {"deployments": local},
                     "v2": {"deployments": [{"backend": "openai", "model": "sim-embed-3"}]}}}
    # nothing listens on the first deployment's port: every request falls back to the second
    backends["nowhere"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                           "health_interval_s": 30.0}
    models[FAILOVER_MODEL] = {"kind": "embedding", "deployments": [
        {"backend": "nowhere", "model": "sim-embed-3"}, {"backend": "openai", "model": "sim-embed-3"}]}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedStack, io.StringIO]]:
    access = io.StringIO()
    stack = ThreadedStack(tmp_path_factory.mktemp("embeddings"), embeddings=True, sim=TEMPLATE,
                          edit_policy=_policy, telemetry=Telemetry(None, AccessLog(access)),
                          settings_overrides={"access_log": "on"})
    yield stack, access
    stack.close()


@pytest.fixture(scope="module")
def stack(embedded: tuple[ThreadedStack, io.StringIO]) -> ThreadedStack:
    return embedded[0]


def _client(stack: ThreadedStack, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def _raw(stack: ThreadedStack, body: dict[str, Any], key: str = DEMO_KEY) -> httpx.Response:
    return httpx.post(stack.url + "/v1/embeddings", json=body, headers={"authorization": f"Bearer {key}"},
                      timeout=10)


def _floats(stack: ThreadedStack, model: str, value: Any, **params: Any) -> CreateEmbeddingResponse:
    """A float answer, validated strictly against the SDK's type (its fields are all closed)."""
    response = _raw(stack, {"model": model, "input": value, "encoding_format": "float", **params})
    assert response.status_code == 200, response.text
    return CreateEmbeddingResponse.model_validate(response.json(), strict=True)


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


@pytest.mark.parametrize("model", MODELS)
def test_every_input_form_through_the_sdk(stack: ThreadedStack, model: str) -> None:
    client = _client(stack)
    one = client.embeddings.create(model=model, input="the quick brown fox")  # the SDK asks for base64
    assert one.model == model and one.object == "list" and len(one.data) == 1
    assert one.usage.prompt_tokens == one.usage.total_tokens > 0
    vector = one.data[0].embedding
    assert len(vector) == TEMPLATE.embedding_dim and math.isclose(_norm(vector), 1.0, rel_tol=1e-5)

    many = client.embeddings.create(model=model, input=["alpha", "beta", "gamma"], encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    assert len({tuple(d.embedding) for d in many.data}) == 3  # each input its own vector

    tokens = stack.stack.openai.engine.encode("the quick brown fox")
    by_ids = client.embeddings.create(model=model, input=tokens, encoding_format="float")
    assert by_ids.data[0].embedding == pytest.approx(vector, abs=1e-6)  # base64 float32 vs float64
    assert by_ids.usage.prompt_tokens == len(tokens)

    arrays = client.embeddings.create(model=model, input=[tokens, [1, 2, 3]])
    assert len(arrays.data) == 2 and arrays.usage.prompt_tokens == len(tokens) + 3


@pytest.mark.parametrize("model", MODELS)
def test_both_encodings_agree_and_match_the_strict_sdk_type(stack: ThreadedStack, model: str) -> None:
    floats = _floats(stack, model, ["one", "two"])
    encoded = _raw(stack, {"model": model, "input": ["one", "two"], "encoding_format": "base64"}).json()
    for as_float, as_base64 in zip(floats.data, encoded["data"], strict=True):
        assert isinstance(as_base64["embedding"], str)
        raw = base64.b64decode(as_base64["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(as_float.embedding, abs=1e-6)
    # OpenAI's usage: prompt and total tokens only (an SGLang worker also sends completion and
    # reasoning counts, which an embedding never has)
    assert set(encoded["usage"]) == {"prompt_tokens", "total_tokens"}


@pytest.mark.parametrize("model", MODELS)
def test_dimensions(stack: ThreadedStack, model: str) -> None:
    answer = _client(stack).embeddings.create(model=model, input="shorter", dimensions=8)
    assert len(answer.data[0].embedding) == 8
    assert math.isclose(_norm(answer.data[0].embedding), 1.0, rel_tol=1e-5)
    sent = [r["body"] for r in stack.sim_requests(_upstream(stack, model)) if r["path"] == "/v1/embeddings"]
    assert sent[-1]["dimensions"] == 8 and sent[-1]["model"] in ("sim-embed", "sim-embed-3")


def _upstream(stack: ThreadedStack, model: str) -> str:
    local = stack.stack.embedder
    assert local is not None
    return local.url if model == EMBED_LOCAL_MODEL else stack.stack.openai.url


def test_base64_is_encoded_by_the_gateway_when_the_upstream_only_does_floats(tmp_path: Any) -> None:
    floats_only = dataclasses.replace(TEMPLATE, embedding_float_only=True)
    stack = ThreadedStack(tmp_path, embeddings=True, sim=floats_only, sglang_workers=1)
    try:
        for model in MODELS:
            plain = _floats(stack, model, "little-endian float32").data[0].embedding
            response = _raw(stack, {"model": model, "input": "little-endian float32", "encoding_format": "base64"})
            assert response.json()["data"][0]["embedding"] == base64_floats(plain)
            sdk = _client(stack).embeddings.create(model=model, input="little-endian float32")
            assert sdk.data[0].embedding == pytest.approx(plain, abs=1e-6)
    finally:
        stack.close()


def test_base64_floats_is_openai_s_encoding() -> None:
    assert base64_floats([1.0, -2.5]) == base64.b64encode(struct.pack("<2f", 1.0, -2.5)).decode()
    assert base64_floats([1.0]) == "AACAPw=="  # 0x3f800000, little-endian


def _usage(stack: ThreadedStack, tenant: str) -> dict[str, Any]:
    response = httpx.get(stack.url + "/admin/usage", params={"tenant": tenant, "days": 1},
                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _charged(stack: ThreadedStack, tenant: str, model: str, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:  # charges are written by a task of their own, just after the answer
        rows: list[dict[str, Any]] = [r for r in _usage(stack, tenant)["rows"] if r["model"] == model]
        if (rows and rows[0]["input_tokens"] >= at_least) or time.monotonic() > deadline:
            assert rows, _usage(stack, tenant)
            return rows[0]
        time.sleep(0.05)


def test_charged_by_input_tokens_and_a_spent_budget_refuses(stack: ThreadedStack) -> None:
    client = _client(stack, BUDGET_KEY)
    used = 0
    text = "budgeted words " * 3
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(BUDGET_TOKENS):
            used += client.embeddings.create(model=EMBED_OPENAI_MODEL, input=text).usage.prompt_tokens
    assert 0 < used <= BUDGET_TOKENS
    assert refused.value.status_code == 429
    row = _charged(stack, "embed-budget", EMBED_OPENAI_MODEL, used)
    assert (row["input_tokens"], row["output_tokens"]) == (used, 0)
    assert row["cost_usd"] == pytest.approx(used * 0.02 / 1e6)


def _error(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    return error


@pytest.mark.parametrize("value", ["", [], [""], [[]], 5, [1, "a"], [["a"]], [-1], [2**31], None, {"text": "x"}])
def test_bad_input_is_refused_in_openai_s_shape(stack: ThreadedStack, value: Any) -> None:
    error = _error(_raw(stack, {"model": EMBED_LOCAL_MODEL, "input": value}), 400, "input")
    assert error["type"] == "invalid_request_error"


def test_bad_fields_and_a_missing_input(stack: ThreadedStack) -> None:
    assert "`input`" in _error(_raw(stack, {"model": EMBED_OPENAI_MODEL}), 400, None)["message"]
    _error(_raw(stack, {"model": EMBED_OPENAI_MODEL, "input": "x", "encoding_format": "int8"}), 400,
           "encoding_format")
    _error(_raw(stack, {"model": EMBED_OPENAI_MODEL, "input": "x", "dimensions": 0}), 400, "dimensions")
    _error(_raw(stack, {"model": "no-such-model", "input": "x"}), 404, "model")


def test_models_of_the_other_kind_are_refused_naming_the_model(stack: ThreadedStack) -> None:
    for chat in (LOCAL_MODEL, AUTO_ROUTE):
        with pytest.raises(openai.BadRequestError) as caught:
            _client(stack).embeddings.create(model=chat, input="hello")
        assert caught.value.status_code == 400 and "is a chat model" in caught.value.message
        assert LOCAL_MODEL in caught.value.message and "embeddings" in caught.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        _client(stack).chat.completions.create(model=EMBED_LOCAL_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert f"'{EMBED_LOCAL_MODEL}' is an embedding model" in refused.value.message
    assert refused.value.body["param"] == "model"  # type: ignore[index]
    # every other door refuses it the same way, in its own error shape
    text = _client(stack).completions.with_raw_response
    with pytest.raises(openai.BadRequestError) as legacy:
        text.create(model=EMBED_OPENAI_MODEL, prompt="hi")
    assert "'embed-openai' is an embedding model: it does not serve completions requests" in legacy.value.message
    with pytest.raises(openai.BadRequestError) as responses:
        _client(stack).responses.create(model=EMBED_LOCAL_MODEL, input="hi")
    assert "does not serve responses requests" in responses.value.message
    messages = httpx.post(stack.url + "/v1/messages", json={
        "model": EMBED_LOCAL_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"})
    assert messages.status_code == 400 and messages.json()["type"] == "error"
    assert "does not serve messages requests" in messages.json()["error"]["message"]


def test_an_input_over_the_window_is_refused(stack: ThreadedStack) -> None:
    long = "word " * 600  # embed-local's window is 512 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        _client(stack).embeddings.create(model=EMBED_LOCAL_MODEL, input=["short", long])
    assert caught.value.code == "context_length_exceeded"
    assert "input[1]" in caught.value.message and caught.value.body["param"] == "input"  # type: ignore[index]


def test_input_moderation_reads_every_input(stack: ThreadedStack) -> None:
    response = _raw(stack, {"model": EMBED_OPENAI_MODEL, "input": ["fine", f"the {BLOCKED}"]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_policy_violation"
    assert response.json()["error"]["param"] == "input[1]"


def test_anthropic_cannot_serve_an_embedding_model() -> None:
    document = {"backends": {"claude": {"kind": "anthropic"}},
                "models": {"e": {"kind": "embedding", "deployments": [{"backend": "claude", "model": "c"}]}}}
    assert reference_problems(document) == [
        ("models.e.deployments[0].backend", "anthropic deployments cannot serve an embedding model")]
    Policy.model_validate(document)  # the schema itself is fine: the reference check refuses it


def test_canary_versions_fallback_and_the_access_line(embedded: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, access = embedded
    versions: dict[str, str] = {}
    for session in range(40):
        response = httpx.post(stack.url + "/v1/embeddings", timeout=10, json={"model": CANARY_MODEL, "input": "v"},
                              headers={"authorization": f"Bearer {DEMO_KEY}", "x-switchyard-session": str(session)})
        assert response.status_code == 200, response.text
        versions[response.headers["x-switchyard-model-version"]] = response.headers["x-switchyard-worker"]
        CreateEmbeddingResponse.model_validate(response.json())
    assert {v.split(":")[-1] for v in versions} == {"v1", "v2"}, versions
    assert sorted(versions.values()) == ["local-embed/0", "openai"]

    failover = _client(stack).embeddings.with_raw_response.create(model=FAILOVER_MODEL, input="again")
    assert failover.headers["x-switchyard-worker"] == "openai"
    assert len(failover.parse().data) == 1

    def embedded_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in access.getvalue().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("door") == "embeddings"]

    # an access line is written once its response has gone out: wait for the failover's
    request_id = failover.headers["x-request-id"]
    (line,) = eventually(lambda: [x for x in embedded_lines() if x["request_id"] == request_id])
    assert (line["model"], line["status"]) == (FAILOVER_MODEL, 200)
    assert all(line["operation"] == "embeddings" for line in embedded_lines())
