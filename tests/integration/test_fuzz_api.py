"""Fuzz the whole HTTP API with schemathesis: no 5xx, and every error in OpenAI's shape.

The schema is the gateway's own OpenAPI document, exactly what it serves at
``/schema/openapi.json`` (a test checks the two agree) but for ``model``, narrowed to the
stack's models. It describes the request bodies from the gateway's own wire types
(``backends.types``, through msgspec's JSON Schema; ``gateway/openapi.py``), so the fuzzer
knows every field and bound the gateway validates, and negative examples (a bound crossed, a
wrong type, a missing field) must be rejected with a 4xx in OpenAI's error shape.

Upstreams are zero-latency simulators, and every model clamps ``max_tokens`` to 16 (on both
endpoints), so a valid request with ``max_tokens: 2**31 - 1`` costs microseconds. Generation is
derandomized: the same examples run every time.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
)

from backends.sim import SimConfig
from gateway.app import create_app
from gateway.local_stack import (
    ADMIN_KEY,
    ANTHROPIC_MODEL,
    AUTO_ROUTE,
    DEMO_KEY,
    LOCAL_MODEL,
    OPENAI_MODEL,
)
from gateway.openapi import ERROR_SCHEMA, ERROR_SHAPES
from gateway.settings import Settings
from gateway.telemetry import AccessLog, Telemetry
from tests.conftest import ThreadedStack

MODELS = [LOCAL_MODEL, OPENAI_MODEL, ANTHROPIC_MODEL, AUTO_ROUTE]
MAX_EXAMPLES = 50
"""Per operation and generation mode; the whole module runs in ~30 s on a quiet 2-core machine."""

def clamp_outputs(document: dict[str, Any]) -> None:
    """Every model answers at most 16 tokens, whatever ``max_tokens`` the fuzzer picks."""
    for model in document["models"].values():
        model["context"] = {"context_window": 8192, "max_output_tokens": 16}


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    stack = ThreadedStack(tmp_path_factory.mktemp("fuzz"), sglang_workers=1,
                          sim=SimConfig(zero_latency=True), edit_policy=clamp_outputs,
                          telemetry=Telemetry(None, AccessLog(io.StringIO())))
    yield stack
    stack.close()


def fuzz_schema(served: dict[str, Any]) -> dict[str, Any]:
    """The served document, with ``model`` narrowed to the models the stack serves: a random
    string would only ever reach model_not_found."""
    document = copy.deepcopy(served)
    for name in ("ChatParams", "TextParams"):
        document["components"]["schemas"][name]["properties"]["model"] = {"enum": MODELS}
    return document


def app_schema() -> dict[str, Any]:
    """The OpenAPI document the app serves, built without a server: schemathesis needs it
    when pytest collects the module (its lazy fixture loader does not work on pytest 9)."""
    app = create_app(Settings(policy_path=Path("unused.yaml")), Telemetry(None, AccessLog("off")))
    return app.openapi_schema.to_schema()


schema = schemathesis.openapi.from_dict(fuzz_schema(app_schema()))
schema.config.update(request_timeout=20)
schema.config.generation.update(deterministic=True, max_examples=MAX_EXAMPLES, database="none")


def key_for(path: str) -> str:
    return ADMIN_KEY if path.startswith("/admin/") else DEMO_KEY


def assert_openai_error(response: Any, path: str) -> None:
    """A non-2xx answer is JSON in OpenAI's shape (``/readyz`` has its own documented body)."""
    if response.status_code < 300 or path == "/readyz":
        return
    content_type = response.headers.get("content-type", [""])[0]  # schemathesis: name -> values
    assert content_type.startswith("application/json"), response.content
    body = msgspec.json.decode(response.content)
    if path in ERROR_SHAPES:  # the Messages door answers in Anthropic's shape
        assert body.get("type") == "error" and set(body["error"]) == {"type", "message"}, (body, response.status_code)
        return
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert all(isinstance(error[k], str) and error[k] for k in ("message", "type", "code")), error


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_errors_are_openai_shaped(case: Any, fuzz_stack: ThreadedStack) -> None:
    path = case.operation.path
    response = case.call(base_url=fuzz_stack.url, headers={"authorization": f"Bearer {key_for(path)}"})
    # no 5xx at all: the simulators only fail when a request asks them to (sim_* fields)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance,
                                             negative_data_rejection])
    assert_openai_error(response, path)


def test_the_fuzzed_schema_is_the_served_one(fuzz_stack: ThreadedStack) -> None:
    served = httpx.get(fuzz_stack.url + "/schema/openapi.json", timeout=10).json()
    assert served == app_schema()


def test_served_schema_describes_bodies_and_openai_errors() -> None:
    served = app_schema()
    components = served["components"]["schemas"]
    assert components["Error"] == ERROR_SCHEMA
    for path, body in (("/v1/chat/completions", "ChatParams"), ("/v1/completions", "TextParams")):
        operation = served["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{body}"}
        assert "max_tokens" in components[body]["properties"]  # from the wire type itself
        assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "application/yaml" in served["paths"]["/admin/policy"]["post"]["requestBody"]["content"]
    for path, item in served["paths"].items():
        for method, operation in item.items():
            # Litestar's own {"status_code", "detail"} 400 is never sent: errors are the door's
            assert not any(code.startswith("4") for code in operation["responses"]), (path, method)
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{ERROR_SHAPES.get(path, 'Error')}"}, (path, method)
