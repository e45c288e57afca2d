"""Tracing configured by the standard OTEL_* variables."""

from __future__ import annotations

import io
import json

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gateway.telemetry import AccessLog, TracingConfigError
from gateway.telemetry.tracing import tracer_provider_from_env


def test_disabled_sdk_means_no_tracing() -> None:
    assert tracer_provider_from_env({"OTEL_SDK_DISABLED": "true"}) is None


def test_without_an_exporter_spans_are_not_sampled_but_have_trace_ids() -> None:
    provider = tracer_provider_from_env({})
    assert provider is not None
    span = provider.get_tracer("t").start_span("x")
    assert not span.is_recording() and span.get_span_context().trace_id != 0
    assert provider.resource.attributes["service.name"] == "switchyard"


def test_an_endpoint_turns_otlp_export_on() -> None:
    provider = tracer_provider_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                         "OTEL_SERVICE_NAME": "edge"})
    assert provider is not None
    processors = provider._active_span_processor._span_processors
    assert [type(p) for p in processors] == [BatchSpanProcessor]
    assert provider.get_tracer("t").start_span("x").is_recording()
    provider.shutdown()


@pytest.mark.parametrize(("environ", "message"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unknown exporter"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only http/protobuf"),
])
def test_unsupported_settings_are_refused_clearly(environ: dict[str, str], message: str) -> None:
    with pytest.raises(TracingConfigError, match=message):
        tracer_provider_from_env(environ)


def test_none_exporter_means_unsampled() -> None:
    provider = tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "none"})
    assert provider is not None and not provider.get_tracer("t").start_span("x").is_recording()


def test_access_log_writes_one_json_line_per_record_and_off_writes_nothing() -> None:
    sink = io.StringIO()
    log = AccessLog(sink)
    log.write({"status": 200, "model": "m"})
    log.write({"status": 429, "model": "m"})
    assert [json.loads(line)["status"] for line in sink.getvalue().splitlines()] == [200, 429]
    off = AccessLog("off")
    assert not off.enabled
    off.write({"status": 200})


def test_serve_refuses_an_unsupported_tracing_setup_before_binding(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from gateway.cli import main

    policy = Path(str(tmp_path)) / "p.yaml"
    policy.write_text("backends: {o: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
                      "models: {m: {deployments: [{backend: o, model: x}]}}\n")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    assert main(["serve", "--policy", str(policy), "--port", "1"]) == 1
    assert "unknown exporter 'jaeger'" in capsys.readouterr().err


def test_metric_children_are_memoised_and_count_in_the_registry() -> None:
    from prometheus_client import generate_latest

    from gateway.telemetry.metrics import Metrics

    metrics = Metrics()
    first = metrics.child(metrics.requests, "m", "v1", "cheap", "200", "")
    assert metrics.child(metrics.requests, "m", "v1", "cheap", "200", "") is first
    assert metrics.child(metrics.requests, "m", "v1", "cheap", "500", "internal_error") is not first
    first.inc()
    metrics.child(metrics.requests, "m", "v1", "cheap", "200", "").inc()
    text = generate_latest(metrics.registry).decode()
    assert 'switchyard_requests_total{code="",model="m",status="200",tier="cheap",version="v1"} 2.0' in text
