"""The vendored OpenAI spec subset and its validator: conventions, deviations, readable errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.contracts.openai.spec import (
    COMPLETION_CHUNK,
    DEVIATIONS,
    SPEC_FILE,
    SpecViolation,
    load_spec,
    validate,
)
from tests.contracts.openai.trim_spec import ROOTS, render

SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "contracts" / "openai-openapi" / "openapi.json"


def chunk(**choice: Any) -> dict[str, Any]:
    """A chat stream chunk as the spec's example shows one, with choice fields overridden."""
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": None,
                         "finish_reason": None, **choice}]}


def completion(**message: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "Hi", "refusal": None, **message}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def violation(schema: str, instance: Any) -> SpecViolation:
    with pytest.raises(SpecViolation) as caught:
        validate(schema, instance)
    return caught.value


@pytest.mark.skipif(not SOURCE.exists(), reason=f"the full spec is not beside the repository ({SOURCE})")
def test_the_committed_subset_is_what_the_script_cuts_from_the_source() -> None:
    source = json.loads(SOURCE.read_text(encoding="utf-8"))
    assert SPEC_FILE.read_text(encoding="utf-8") == render(source)


def test_every_root_and_every_reference_is_vendored() -> None:
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    assert set(ROOTS) <= schemas.keys()
    refs = {ref for ref in _strings_under(schemas, "$ref")}
    assert {ref.removeprefix("#/components/schemas/") for ref in refs} <= schemas.keys()
    assert document["info"]["version"] == "2.3.0"


def _strings_under(node: Any, key: str) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [s for v in node.values() for s in _strings_under(v, key)]
    if isinstance(node, list):
        return [s for v in node for s in _strings_under(v, key)]
    return []


def test_spec_shaped_bodies_pass() -> None:
    assert validate("CreateChatCompletionResponse", completion()) == "CreateChatCompletionResponse"
    assert validate("CreateChatCompletionStreamResponse", chunk()) == "CreateChatCompletionStreamResponse"
    assert validate("ErrorResponse", {"error": {"message": "m", "type": "invalid_request_error",
                                                "param": None, "code": None}}) == "ErrorResponse"
    assert validate("ListModelsResponse", {"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "openai"}]})


def test_openapi_30_nullable_means_or_null() -> None:
    # finish_reason and usage are "nullable: true" in the chunk schema, which 2020-12 ignores
    assert validate("CreateChatCompletionStreamResponse", {**chunk(finish_reason=None), "usage": None})
    bad = violation("CreateChatCompletionStreamResponse", chunk(finish_reason="done"))
    assert bad.path == "$.choices[0].finish_reason"


def test_openapi_31_null_is_allowed_only_where_the_spec_says() -> None:
    assert validate("CreateChatCompletionResponse", completion(content=None))
    bad = violation("CreateChatCompletionResponse", completion(role=None))
    assert (bad.schema, bad.path) == ("CreateChatCompletionResponse", "$.choices[0].message.role")


def test_missing_required_fields_are_named() -> None:
    body = completion()
    del body["choices"][0]["message"]["refusal"]
    bad = violation("CreateChatCompletionResponse", body)
    assert bad.path == "$.choices[0].message" and "'refusal' is a required property" in bad.reason


def test_every_problem_of_a_body_is_reported() -> None:
    body = {**completion(), "usage": None}
    del body["choices"][0]["message"]["refusal"]
    text = str(violation("CreateChatCompletionResponse", body))
    assert "$.usage" in text and "'refusal' is a required property" in text


def test_sglang_nulls_pass_in_stream_deltas_only() -> None:
    tool_delta = {"index": 0, "id": None, "type": "function", "function": {"name": None, "arguments": "{\""}}
    sglang_chunk = chunk(delta={"role": None, "content": None, "reasoning_content": None,
                                "tool_calls": [tool_delta]})
    assert validate("CreateChatCompletionStreamResponse", sglang_chunk)
    # the same nulls in a whole message are not relaxed
    call = {"id": None, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    bad = violation("CreateChatCompletionResponse", completion(tool_calls=[call]))
    assert bad.path.startswith("$.choices[0].message.tool_calls[0]")


def test_every_deviation_points_at_a_schema_of_the_spec() -> None:
    # a spec update that moves or removes a field must not leave a relaxation pointing at nothing
    raw = json.loads(SPEC_FILE.read_text(encoding="utf-8"))["components"]["schemas"]
    for deviation in DEVIATIONS:
        node: Any = raw[deviation.schema]
        for part in deviation.pointer.strip("/").split("/"):
            node = node[part]
        assert isinstance(node, dict) and node, deviation


def test_sglang_usage_nulls_pass() -> None:
    usage = {"prompt_tokens": 21, "total_tokens": 29, "completion_tokens": 8, "prompt_tokens_details": None,
             "reasoning_tokens": 0, "completion_tokens_details": None}
    assert validate("CreateChatCompletionResponse", {**completion(), "usage": usage})
    assert violation("CreateChatCompletionResponse", {**completion(), "usage": None}).path == "$.usage"


def test_completion_chunks_use_the_derived_schema() -> None:
    body = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": "Hi", "logprobs": None, "finish_reason": None}]}
    assert validate(COMPLETION_CHUNK, body) == COMPLETION_CHUNK
    assert validate(COMPLETION_CHUNK, {**body, "usage": None}) == COMPLETION_CHUNK
    assert violation("CreateCompletionResponse", body).path == "$.choices[0].finish_reason"


def test_recursive_reference_is_followed() -> None:
    leaf = {"type": "eq", "key": "region", "value": "eu"}
    spec = load_spec()
    assert spec.validate("CompoundFilter", {"type": "and", "filters": [{"type": "or", "filters": [leaf]}]})
    with pytest.raises(SpecViolation):
        spec.validate("CompoundFilter", {"type": "and", "filters": [{"type": "or", "filters": [{"type": "xor"}]}]})


def test_union_members_are_picked_by_their_type() -> None:
    bad = violation("ResponseStreamEvent", {"type": "response.output_text.delta", "sequence_number": 1})
    assert bad.schema == "ResponseStreamEvent/ResponseTextDeltaEvent"
    assert "required property" in bad.reason
    unknown = violation("ResponseStreamEvent", {"type": "response.bogus", "sequence_number": 1})
    assert unknown.schema == "ResponseStreamEvent"
