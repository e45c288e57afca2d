"""Every failure answers with its status and an OpenAI-style body; none is a 500."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from backends.sim import SimConfig
from gateway.local_stack import ANTHROPIC_MODEL, DEMO_KEY, LOCAL_MODEL, OPENAI_MODEL, TEAM_B_KEY, UPSTREAM_OPENAI_KEY
from tests.conftest import ThreadedStack

AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


def chat_body(model: str = LOCAL_MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"] and error["type"]
    return error  # type: ignore[no-any-return]


def post(stack: ThreadedStack, body: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(stack.url + path, json=body if content is None else None, content=content,
                      headers=AUTH if headers is None else headers, timeout=30)


def test_every_error_carries_a_request_id(stack: ThreadedStack) -> None:
    for response in (post(stack, content=b"{not json"), post(stack, chat_body(), headers={}),
                     httpx.get(stack.url + "/v1/nowhere"), post(stack, chat_body("no-such-model"))):
        assert response.status_code >= 400
        assert len(response.headers["x-request-id"]) == 32, response.headers


def test_invalid_json_is_400(stack: ThreadedStack) -> None:
    assert_openai_error(post(stack, content=b"{not json"), 400, "invalid_json")
    assert_openai_error(post(stack, content=b'{"model": "\xff"}'), 400, "invalid_json")


def test_schema_error_names_the_field(stack: ThreadedStack) -> None:
    body = chat_body(messages=[{"role": "robot", "content": "hi"}])
    error = assert_openai_error(post(stack, body), 400, "invalid_request")
    assert error["param"] == "messages[0].role" and error["type"] == "invalid_request_error"
    error = assert_openai_error(post(stack, chat_body(max_tokens="many")), 400, "invalid_request")
    assert error["param"] == "max_tokens"


def test_missing_and_unknown_keys_are_401(stack: ThreadedStack) -> None:
    assert_openai_error(post(stack, chat_body(), headers={}), 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.url + "/v1", api_key="sy-nope", max_retries=0).chat.completions.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert_openai_error(httpx.get(stack.url + "/v1/models"), 401, "invalid_api_key")


def test_model_not_allowed_is_403_and_unknown_is_404(stack: ThreadedStack) -> None:
    limited = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEAM_B_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        limited.chat.completions.create(model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hi"}])
    error = assert_openai_error(post(stack, chat_body("no-such-model")), 404, "model_not_found")
    assert error["param"] == "model"


def test_unknown_route_and_method(stack: ThreadedStack) -> None:
    assert_openai_error(httpx.get(stack.url + "/v1/nothing-here"), 404, "not_found")
    assert_openai_error(httpx.get(stack.url + "/v1/chat/completions", headers=AUTH), 405, "method_not_allowed")


def test_body_over_the_limit_is_413(stack: ThreadedStack) -> None:
    huge = b'{"model": "x", "messages": [], "pad": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    assert_openai_error(post(stack, content=huge), 413, "request_too_large")


def test_upstream_429_passes_retry_after(stack: ThreadedStack) -> None:
    response = post(stack, chat_body(OPENAI_MODEL, sim_fail=429))
    assert_openai_error(response, 429, "upstream_rate_limited")
    assert response.headers["retry-after"].isdigit()
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"sim_fail": 429})


@pytest.mark.parametrize(("model", "fail", "status", "code"), [
    (LOCAL_MODEL, 500, 502, "upstream_error"),
    (OPENAI_MODEL, 503, 503, "upstream_unavailable"),
    (OPENAI_MODEL, 401, 502, "upstream_error"),
    (ANTHROPIC_MODEL, 529, 503, "upstream_unavailable"),
    (ANTHROPIC_MODEL, 500, 502, "upstream_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_are_translated(stack: ThreadedStack, model: str, fail: int, status: int,
                                          code: str, stream: bool) -> None:
    response = post(stack, chat_body(model, sim_fail=fail, stream=stream))
    error = assert_openai_error(response, status, code)
    assert UPSTREAM_OPENAI_KEY not in response.text and DEMO_KEY not in response.text
    assert "x-sim-worker" not in response.headers, "upstream headers are not relayed"
    assert error["message"]


def test_upstream_rejection_is_a_client_error(stack: ThreadedStack) -> None:
    assert_openai_error(post(stack, chat_body(OPENAI_MODEL, sim_fail=400)), 400, "upstream_rejected")


def test_legacy_completions_on_anthropic_is_a_clear_400(stack: ThreadedStack) -> None:
    response = post(stack, {"model": ANTHROPIC_MODEL, "prompt": "hi"}, path="/v1/completions")
    assert_openai_error(response, 400, "unsupported_operation")


# --- a stack with short timeouts and a model whose only worker is down --------------------


def shorten_timeouts_and_add_dead_model(document: dict[str, Any]) -> None:
    document["backends"]["local"]["timeouts"] = {"connect_s": 1, "first_byte_s": 0.5, "idle_s": 0.5}
    document["backends"]["dead"] = {"kind": "sglang", "workers": ["http://127.0.0.1:9"]}
    document["models"]["dead-model"] = {"deployments": [{"backend": "dead", "model": "x"}]}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    stack = ThreadedStack(tmp_path_factory.mktemp("faulty"), sglang_workers=1,
                          sim=dataclasses.replace(SimConfig(), itl_ms=1.0),
                          edit_policy=shorten_timeouts_and_add_dead_model)
    yield stack
    stack.close()


def test_no_healthy_worker_is_503_and_not_ready(faulty: ThreadedStack) -> None:
    response = post(faulty, chat_body("dead-model"))
    assert_openai_error(response, 503, "upstream_unavailable")
    assert response.headers["retry-after"] == "1"
    ready = httpx.get(faulty.url + "/readyz")
    assert ready.status_code == 503 and "dead-model" in ready.json()["detail"]


@pytest.mark.parametrize("stream", [False, True])
def test_slow_first_byte_is_504(faulty: ThreadedStack, stream: bool) -> None:
    response = post(faulty, chat_body(sim_delay_ms=2000, stream=stream))
    assert_openai_error(response, 504, "upstream_timeout")


def test_stream_hanging_after_headers_is_504_before_any_byte(faulty: ThreadedStack) -> None:
    response = post(faulty, chat_body(sim_hang_after_headers=True, stream=True))
    assert_openai_error(response, 504, "upstream_timeout")
