"""Spans and metrics checked against the OpenTelemetry GenAI semantic conventions (issue 14, 4d).

The source of truth is the conventions as their owners ship them: the attribute and metric
constants of ``opentelemetry-semantic-conventions`` (``opentelemetry.semconv._incubating``),
and the JSON schemas of captured messages in open-telemetry/semantic-conventions,
``docs/gen-ai/gen-ai-input-messages.json``, ``gen-ai-output-messages.json`` and
``gen-ai-system-instructions.json`` (Apache-2.0; written below as a small JSON Schema that
keeps their required fields and part types, not copied). Requests go through a real gateway
over every backend kind with the real ``openai`` SDK; spans are captured in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import ANTHROPIC_MODEL, DEMO_KEY, LOCAL_MODEL, OPENAI_MODEL
from gateway.telemetry import AccessLog, Telemetry
from tests.conftest import ThreadedStack

GENAI_ATTRIBUTES = {value for name, value in vars(genai).items() if name.startswith("GEN_AI_")}
"""Every ``gen_ai.*`` attribute name the conventions package defines."""
OPERATIONS = {v.value for v in genai.GenAiOperationNameValues}
USAGE = (genai.GEN_AI_USAGE_INPUT_TOKENS, genai.GEN_AI_USAGE_OUTPUT_TOKENS)
FINISH_REASONS = {"stop", "length", "content_filter", "tool_call", "error"}

_TEXT = {"type": "object", "required": ["type", "content"],
         "properties": {"type": {"const": "text"}, "content": {"type": "string"}}}
_REASONING = {"type": "object", "required": ["type", "content"],
              "properties": {"type": {"const": "reasoning"}, "content": {"type": "string"}}}
_TOOL_CALL = {"type": "object", "required": ["type", "name"],
              "properties": {"type": {"const": "tool_call"}, "id": {"type": ["string", "null"]},
                             "name": {"type": "string"}}}
_TOOL_CALL_RESPONSE = {"type": "object", "required": ["type", "response"],
                       "properties": {"type": {"const": "tool_call_response"}, "id": {"type": ["string", "null"]}}}
_GENERIC = {"type": "object", "required": ["type"],
            "properties": {"type": {"type": "string",
                                    "not": {"enum": ["text", "reasoning", "tool_call", "tool_call_response"]}}}}
_PART = {"anyOf": [_TEXT, _REASONING, _TOOL_CALL, _TOOL_CALL_RESPONSE, _GENERIC]}
_ROLE = {"type": "string"}  # system, user, assistant, tool, or any other string
INPUT_MESSAGES = {"type": "array", "items": {
    "type": "object", "required": ["role", "parts"],
    "properties": {"role": _ROLE, "parts": {"type": "array", "items": _PART}}}}
OUTPUT_MESSAGES = {"type": "array", "items": {
    "type": "object", "required": ["role", "parts", "finish_reason"],
    "properties": {"role": _ROLE, "parts": {"type": "array", "items": _PART},
                   "finish_reason": {"type": "string"}}}}
SYSTEM_INSTRUCTIONS = {"type": "array", "items": _PART}

# the conventions' advised explicit bucket boundaries (gen-ai-metrics.md)
DURATION_BUCKETS: list[float] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKEN_BUCKETS: list[float] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]

TOOL_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "You answer about the weather."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 12C"},
    {"role": "user", "content": [{"type": "text", "text": "And so?"}]},
]


def _capture(document: dict[str, Any]) -> None:
    document["observability"] = {"capture_content": True}


class Traced:
    def __init__(self, tmp: Path) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.stack = ThreadedStack(tmp, telemetry=Telemetry(provider, AccessLog("off")), edit_policy=_capture)
        self.client = openai.OpenAI(base_url=self.stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)

    def trace(self, request_id: str) -> list[ReadableSpan]:
        """The finished spans of the request whose root span carries ``request_id``."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            finished = self.spans.get_finished_spans()
            roots = [s for s in finished if (s.attributes or {}).get("switchyard.request_id") == request_id]
            if roots:
                trace_id = roots[0].context.trace_id
                return [s for s in finished if s.context.trace_id == trace_id]
            time.sleep(0.02)
        raise AssertionError(f"no trace for {request_id}")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    traced = Traced(tmp_path_factory.mktemp("otel"))
    yield traced
    traced.stack.close()


def _chat(traced: Traced, model: str, messages: list[dict[str, Any]], stream: bool = False) -> str:
    raw = traced.client.chat.completions.with_raw_response.create(
        model=model, max_tokens=6, messages=messages, stream=stream)  # type: ignore[arg-type]
    if stream:
        for _ in raw.parse():
            pass
    return str(raw.headers["x-request-id"])


def _check_conventions(spans: list[ReadableSpan], operation: str) -> ReadableSpan:
    """Every span's gen_ai.* names, the root and inference spans' kinds and names; returns the
    inference span that answered."""
    for span in spans:
        unknown = {k for k in (span.attributes or {}) if k.startswith("gen_ai.")} - GENAI_ATTRIBUTES
        assert not unknown, f"{span.name}: {unknown} are not in the GenAI conventions"
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER]
    root_attributes = dict(root.attributes or {})
    assert root.name == f"{root_attributes[genai.GEN_AI_OPERATION_NAME]} {root_attributes[genai.GEN_AI_REQUEST_MODEL]}"
    assert not [k for k in root_attributes if k.startswith(("gen_ai.usage.", "gen_ai.response."))], \
        "usage and response belong to the inference span"
    (call,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    attributes = dict(call.attributes or {})
    assert attributes[genai.GEN_AI_OPERATION_NAME] == operation and operation in OPERATIONS
    assert call.name == f"{operation} {attributes[genai.GEN_AI_REQUEST_MODEL]}"
    assert call.parent is not None and call.parent.span_id == root.context.span_id
    assert all(isinstance(v, int) and v > 0 for v in (attributes[k] for k in USAGE)), attributes
    assert set(attributes[genai.GEN_AI_RESPONSE_FINISH_REASONS]) <= {"stop", "length", "tool_calls"}  # type: ignore[arg-type]
    return call


def _messages(call: ReadableSpan) -> tuple[list[Any], list[Any], list[Any] | None]:
    attributes = dict(call.attributes or {})
    values = [attributes.get(k) for k in (genai.GEN_AI_INPUT_MESSAGES, genai.GEN_AI_OUTPUT_MESSAGES,
                                          genai.GEN_AI_SYSTEM_INSTRUCTIONS)]
    assert all(isinstance(v, str) for v in values[:2]), "captured messages are JSON strings"
    inputs, outputs = json.loads(str(values[0])), json.loads(str(values[1]))
    system = json.loads(str(values[2])) if values[2] is not None else None
    jsonschema.validate(inputs, INPUT_MESSAGES)
    jsonschema.validate(outputs, OUTPUT_MESSAGES)
    assert all(m["finish_reason"] in FINISH_REASONS for m in outputs)
    if system is not None:
        jsonschema.validate(system, SYSTEM_INSTRUCTIONS)
    return inputs, outputs, system


@pytest.mark.parametrize("stream", [False, True])
def test_sglang_chat_spans_follow_the_conventions(traced: Traced, stream: bool) -> None:
    request_id = _chat(traced, LOCAL_MODEL, [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "hello there"}], stream)
    call = _check_conventions(traced.trace(request_id), "chat")
    assert dict(call.attributes or {})[genai.GEN_AI_PROVIDER_NAME] == "sglang"
    inputs, outputs, system = _messages(call)
    # SGLang takes the system message in the history: it stays there, as sent
    assert inputs == [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                      {"role": "user", "parts": [{"type": "text", "content": "hello there"}]}]
    assert system is None
    (answer,) = outputs
    assert answer["role"] == "assistant" and answer["finish_reason"] == "length"
    assert answer["parts"][0]["type"] == "text" and answer["parts"][0]["content"]


def test_a_tool_conversation_is_captured_as_typed_parts(traced: Traced) -> None:
    request_id = _chat(traced, OPENAI_MODEL, TOOL_HISTORY)
    call = _check_conventions(traced.trace(request_id), "chat")
    assert dict(call.attributes or {})[genai.GEN_AI_PROVIDER_NAME] == genai.GenAiProviderNameValues.OPENAI.value
    inputs, _, _ = _messages(call)
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool", "user"]
    assert inputs[2]["parts"] == [{"type": "tool_call", "id": "call_1", "name": "weather",
                                   "arguments": {"city": "Paris"}}]
    assert inputs[3]["parts"] == [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 12C"}]
    assert inputs[4]["parts"] == [{"type": "text", "content": "And so?"}]
    assert '"tool_call_id"' not in str(dict(call.attributes or {})[genai.GEN_AI_INPUT_MESSAGES]), \
        "built from the parsed request, not the raw body"


def test_anthropic_takes_system_instructions_apart(traced: Traced) -> None:
    request_id = _chat(traced, ANTHROPIC_MODEL, [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "hello"}])
    call = _check_conventions(traced.trace(request_id), "chat")
    assert dict(call.attributes or {})[genai.GEN_AI_PROVIDER_NAME] == genai.GenAiProviderNameValues.ANTHROPIC.value
    inputs, _, system = _messages(call)
    assert system == [{"type": "text", "content": "Be brief."}]
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]


def test_text_completion_spans_follow_the_conventions(traced: Traced) -> None:
    raw = traced.client.completions.with_raw_response.create(model=LOCAL_MODEL, prompt="Once upon", max_tokens=4)
    call = _check_conventions(traced.trace(raw.headers["x-request-id"]), "text_completion")
    inputs, outputs, _ = _messages(call)
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "Once upon"}]}]
    assert outputs[0]["parts"][0]["content"] == raw.parse().choices[0].text


def _prometheus_name(name: str, unit: str) -> str:
    """OpenTelemetry's Prometheus naming: dots to underscores, a unit suffix, none for a
    unit in braces (an annotation such as ``{token}``)."""
    suffix = {"s": "_seconds"}.get(unit, "" if unit.startswith("{") else f"_{unit}")
    return name.replace(".", "_") + suffix


def test_metrics_parse_and_genai_metrics_follow_the_conventions(traced: Traced) -> None:
    _chat(traced, LOCAL_MODEL, [{"role": "user", "content": "count me"}])
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(traced.stack.url + "/metrics").text)}
    assert families, "the exposition parses"
    meter = MeterProvider().get_meter("conventions")
    expected: dict[Any, tuple[list[float], str]] = {
        gen_ai_metrics.create_gen_ai_client_operation_duration(meter): (DURATION_BUCKETS, ERROR_TYPE),
        gen_ai_metrics.create_gen_ai_client_token_usage(meter): (TOKEN_BUCKETS, genai.GEN_AI_TOKEN_TYPE),
    }
    common = {k.replace(".", "_") for k in (genai.GEN_AI_OPERATION_NAME, genai.GEN_AI_PROVIDER_NAME,
                                            genai.GEN_AI_REQUEST_MODEL)}
    for instrument, (buckets, extra) in expected.items():
        name = _prometheus_name(instrument.name, instrument.unit or "")
        family = families[name]
        assert family.type == "histogram"
        samples = [s for s in family.samples if s.labels.get("gen_ai_request_model") == "sim-llama"]
        assert samples, f"{name} has no series for the call just made"
        for sample in samples:
            assert set(sample.labels) - {"le"} <= common | {extra.replace(".", "_")}
        bounds = sorted({float(s.labels["le"]) for s in samples if s.name == name + "_bucket"} - {float("inf")})
        assert bounds == [float(b) for b in buckets]
    tokens = families[_prometheus_name(gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE, "{token}")]
    types = {s.labels["gen_ai_token_type"] for s in tokens.samples}
    assert types == {v.value for v in genai.GenAiTokenTypeValues}
