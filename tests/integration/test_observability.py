"""Traces, metrics and access lines of real requests through the gateway (openai SDK client)."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import ADMIN_KEY, AUTO_ROUTE, DEMO_KEY, LOCAL_MODEL
from gateway.telemetry import AccessLog, Telemetry
from tests.conftest import ThreadedStack, eventually

SECRET_PROMPT = "the-launch-code-is-zebra-4417"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


class Observed:
    def __init__(self, stack: ThreadedStack, spans: InMemorySpanExporter, access: io.StringIO) -> None:
        self.stack, self.spans, self.access = stack, spans, access
        self.client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)

    def access_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access.getvalue().splitlines()]

    def spans_of(self, trace_id: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]

    def metrics(self) -> dict[str, list[Any]]:
        text = httpx.get(self.stack.url + "/metrics").text
        return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _prices(document: dict[str, Any]) -> None:
    document["models"][LOCAL_MODEL]["prices"] = {"input": 1.0, "output": 2.0}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    access = io.StringIO()
    telemetry = Telemetry(provider, AccessLog(access))
    stack = ThreadedStack(tmp_path_factory.mktemp("observed"), telemetry=telemetry, edit_policy=_prices)
    yield Observed(stack, exporter, access)
    stack.close()


def test_a_streamed_request_is_one_trace_continuing_the_clients(observed: Observed) -> None:
    trace_id = os.urandom(16).hex()
    stream = observed.client.chat.completions.create(
        model=LOCAL_MODEL, stream=True, max_tokens=12, temperature=0.2,
        messages=[{"role": "user", "content": f"Remember {SECRET_PROMPT} and say hello."}],
        extra_headers={"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-01"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    spans = eventually(lambda: [s for s in observed.spans_of(trace_id) if s.kind == SpanKind.SERVER])
    (root,) = spans
    assert root.parent is not None and format(root.parent.span_id, "016x") == CLIENT_PARENT
    assert root.name == f"chat {LOCAL_MODEL}"
    attributes = dict(root.attributes or {})
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": LOCAL_MODEL,
        "gen_ai.request.max_tokens": 12, "gen_ai.request.temperature": 0.2,
        "switchyard.model": LOCAL_MODEL, "switchyard.upstream_model": "sim-llama",
        "switchyard.tenant": "demo", "switchyard.key": "demo-key", "switchyard.pool": "local",
        "switchyard.stream": True, "http.response.status_code": 200,
    }
    assert {k: attributes.get(k) for k in expected} == expected
    # usage and the response belong to the inference span, once per trace, not to the root
    assert not any(k.startswith(("gen_ai.usage.", "gen_ai.response.")) for k in attributes), attributes
    assert attributes["switchyard.worker"] in {"local/0", "local/1"}
    assert attributes["switchyard.worker.reason"] == "round_robin"
    assert len(str(attributes["switchyard.model.version"])) == 12
    assert attributes["switchyard.cost_usd"] > 0
    names = {s.name: s for s in observed.spans_of(trace_id)}
    assert {"switchyard.admission", "switchyard.select_worker", "chat sim-llama"} <= set(names)
    call = names["chat sim-llama"]
    assert call.kind == SpanKind.CLIENT and call.parent is not None
    assert call.parent.span_id == root.context.span_id
    inference = dict(call.attributes or {})
    assert {k: inference.get(k) for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                                          "gen_ai.request.max_tokens", "server.address")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "sglang", "gen_ai.request.model": "sim-llama",
        "gen_ai.request.max_tokens": 12, "server.address": "127.0.0.1"}
    input_tokens = inference["gen_ai.usage.input_tokens"]
    assert isinstance(input_tokens, int) and input_tokens > 0 and inference["gen_ai.usage.output_tokens"] == 12
    assert "gen_ai.usage.cache_read.input_tokens" in inference
    assert inference["gen_ai.response.finish_reasons"] == ("length",)
    assert inference["gen_ai.response.id"]
    assert 0 < float(inference["gen_ai.response.time_to_first_chunk"]) < 10  # type: ignore[arg-type]
    assert [e.name for e in call.events] == ["first_token"]
    # no prompt text anywhere by default
    for span in observed.spans_of(trace_id):
        assert not any(SECRET_PROMPT in str(v) for v in (span.attributes or {}).values()), span.name


def test_traceparent_reaches_the_worker_under_the_backend_call_span(observed: Observed) -> None:
    trace_id = os.urandom(16).hex()
    raw = observed.client.chat.completions.with_raw_response.create(
        model=LOCAL_MODEL, max_tokens=4, messages=[{"role": "user", "content": "propagate me"}],
        extra_headers={"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-01"})
    worker = raw.headers["x-switchyard-worker"]
    sim = observed.stack.stack.sglang[int(worker.split("/")[1])]
    sent = observed.stack.sim_requests(sim.url)[-1]["headers"]["traceparent"]
    _, sent_trace, sent_parent, _ = sent.split("-")
    call = eventually(lambda: [s for s in observed.spans_of(trace_id) if s.kind == SpanKind.CLIENT])
    assert sent_trace == trace_id
    assert sent_parent == format(call[0].context.span_id, "016x")


def test_a_difficulty_route_records_its_classification(observed: Observed) -> None:
    raw = observed.client.chat.completions.with_raw_response.create(
        model=AUTO_ROUTE, max_tokens=4, messages=[{"role": "user", "content": "hi there"}])
    tier = raw.headers["x-switchyard-tier"]
    line = eventually(lambda: [x for x in observed.access_lines() if x["request_id"] == raw.headers["x-request-id"]])
    spans = observed.spans_of(line[0]["trace_id"])
    root = next(s for s in spans if s.kind == SpanKind.SERVER)
    attributes = dict(root.attributes or {})
    assert attributes["switchyard.route"] == AUTO_ROUTE and attributes["switchyard.tier"] == tier
    assert attributes["switchyard.difficulty.score"] == pytest.approx(float(raw.headers["x-switchyard-difficulty"]),
                                                                      abs=1e-4)
    assert "switchyard.classify" in {s.name for s in spans}
    assert line[0]["route"] == AUTO_ROUTE and line[0]["tier"] == tier


def test_every_request_writes_one_access_line_without_text(observed: Observed) -> None:
    raw = observed.client.chat.completions.with_raw_response.create(
        model=LOCAL_MODEL, max_tokens=5, messages=[{"role": "user", "content": SECRET_PROMPT}])
    request_id = raw.headers["x-request-id"]
    (line,) = eventually(lambda: [x for x in observed.access_lines() if x["request_id"] == request_id])
    assert line["status"] == 200 and line["tenant"] == "demo" and line["model"] == LOCAL_MODEL
    assert line["worker"] == raw.headers["x-switchyard-worker"]
    usage = raw.parse().usage
    assert usage is not None
    assert line["completion_tokens"] == usage.completion_tokens and line["prompt_tokens"] == usage.prompt_tokens
    assert len(line["trace_id"]) == 32 and line["latency_ms"] > 0
    assert SECRET_PROMPT not in observed.access.getvalue()
    assert "request" not in line and "completion" not in line


def test_errors_are_counted_by_status_and_code(observed: Observed) -> None:
    with pytest.raises(openai.NotFoundError):
        observed.client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=observed.stack.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=LOCAL_MODEL, messages=[{"role": "user", "content": "x"}])
    samples = observed.metrics()["switchyard_requests"]
    codes = {(s.labels["status"], s.labels["code"]) for s in samples if s.name == "switchyard_requests_total"}
    assert {("404", "model_not_found"), ("401", "invalid_api_key"), ("200", "")} <= codes
    lines = observed.access_lines()
    assert any(x["status"] == 404 and x["code"] == "model_not_found" for x in lines)


def test_metrics_cover_latency_tokens_cost_routing_and_workers(observed: Observed) -> None:
    stream = observed.client.chat.completions.create(
        model=LOCAL_MODEL, stream=True, max_tokens=8, messages=[{"role": "user", "content": "count"}])
    for _ in stream:
        pass
    metrics = eventually(lambda: (m := observed.metrics()) and any(
        s.value > 0 for s in m["switchyard_time_to_first_token_seconds"] if s.name.endswith("_count")) and m)

    def total(name: str, suffix: str = "", **labels: str) -> float:
        return float(sum(s.value for s in metrics[name] if s.name == name + suffix
                         and all(s.labels.get(k) == v for k, v in labels.items())))

    assert total("switchyard_time_to_first_token_seconds", "_count", model=LOCAL_MODEL) >= 1
    assert total("switchyard_inter_token_seconds", "_count", model=LOCAL_MODEL) >= 7
    assert total("switchyard_request_duration_seconds", "_count", model=LOCAL_MODEL) >= 1
    assert total("switchyard_gateway_overhead_seconds", "_count") >= 1
    assert total("switchyard_tokens", "_total", model=LOCAL_MODEL, type="output") >= 8
    assert total("gen_ai_client_token_usage", "_sum", gen_ai_request_model="sim-llama",
                 gen_ai_token_type="output") >= 8
    assert total("gen_ai_client_operation_duration_seconds", "_count", gen_ai_provider_name="sglang") >= 1
    assert total("switchyard_routing_decisions", "_total", pool="local", reason="round_robin") >= 1
    assert total("switchyard_backend_healthy", worker="local/0") == 1
    assert total("switchyard_backend_healthy", worker="local/1") == 1
    assert total("switchyard_policy_info", version="local-stack") == 1
    # bounded labels: nothing derived from the request's text or ids
    for samples in metrics.values():
        for sample in samples:
            assert not any(len(v) == 32 for v in sample.labels.values()), sample


def test_tenant_spend_and_usage_are_behind_the_admin_key(observed: Observed) -> None:
    """``/metrics`` needs no credentials, so it names no tenant and no spend; ``/admin/metrics``
    has both, for the admin key only, and refuses anyone else in OpenAI's error shape."""
    observed.client.chat.completions.create(model=LOCAL_MODEL, max_tokens=3,
                                            messages=[{"role": "user", "content": "spend"}])
    public = httpx.get(observed.stack.url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(public)}
    assert "switchyard_requests" in families and "switchyard_cost_usd" not in families
    assert not [s for f in families.values() for s in f.samples if "tenant" in s.labels or "cost" in s.name]
    assert "demo" not in public
    for authorization in (None, f"Bearer {DEMO_KEY}", "Bearer wrong"):  # a tenant's own key is not enough
        refused = httpx.get(observed.stack.url + "/admin/metrics",
                            headers={"authorization": authorization} if authorization else {})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    admin = httpx.get(observed.stack.url + "/admin/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.status_code == 200 and admin.headers["content-type"].startswith("text/plain")
    samples = [s for f in text_string_to_metric_families(admin.text) for s in f.samples]
    spend = [s for s in samples if s.name == "switchyard_cost_usd_total" and s.labels["tenant"] == "demo"]
    assert spend and sum(s.value for s in spend) > 0
    assert any(s.name == "switchyard_tenant_tokens_total" and s.labels == {"tenant": "demo", "model": LOCAL_MODEL,
                                                                           "type": "output"} and s.value >= 3
               for s in samples)
    assert not any(s.name.startswith("switchyard_requests") for s in samples)  # no series served twice


def test_metrics_count_the_event_loops_asyncio_tasks(observed: Observed) -> None:
    """What the soak watches for leaked tasks: counted at scrape time, back down once the
    requests that ran tasks are over."""
    (idle,) = observed.metrics()["switchyard_asyncio_tasks"]
    assert idle.value >= 1 and idle.value == int(idle.value)  # the serving loop's own tasks at least
    for _ in range(10):
        for _ in observed.client.chat.completions.create(
                model=LOCAL_MODEL, stream=True, max_tokens=4, messages=[{"role": "user", "content": "hi"}]):
            pass
    settled = eventually(lambda: observed.metrics()["switchyard_asyncio_tasks"][0].value <= idle.value + 2)
    assert settled, "tasks of finished requests are still counted"


def test_a_client_gone_mid_stream_is_logged_as_499(observed: Observed) -> None:
    body = {"model": LOCAL_MODEL, "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "a long story"}]}
    with httpx.stream("POST", observed.stack.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {DEMO_KEY}"}, timeout=10) as response:
        request_id = response.headers["x-request-id"]
        for _ in response.iter_lines():
            break
    (line,) = eventually(lambda: [x for x in observed.access_lines() if x["request_id"] == request_id])
    assert line["status"] == 499 and line["code"] == "client_disconnected"
    assert line["completion_tokens"] < 400


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        _Receiver.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_are_exported_over_real_otlp_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "switchyard-test")
    telemetry = Telemetry.from_env(access_log="off")
    stack = ThreadedStack(tmp_path, telemetry=telemetry)
    try:
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
        client.chat.completions.create(model=LOCAL_MODEL, max_tokens=3, messages=[{"role": "user", "content": "x"}])
        assert telemetry.tracer_provider is not None
        telemetry.tracer_provider.force_flush()
    finally:
        stack.close()
        telemetry.shutdown()
        server.shutdown()
    spans = []
    for body in _Receiver.bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
            for scope in resource.scope_spans:
                spans += [(service, s.name, {a.key: a.value for a in s.attributes}) for s in scope.spans]
    root = [s for s in spans if s[1] == f"chat {LOCAL_MODEL}"]
    assert root and root[0][0] == "switchyard-test"
    assert root[0][2]["gen_ai.request.model"].string_value == LOCAL_MODEL
    call = [s for s in spans if s[1] == "chat sim-llama"]
    assert call and call[0][2]["gen_ai.usage.output_tokens"].int_value == 3
