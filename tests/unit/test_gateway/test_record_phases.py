"""The phase spans of a request record: children of a recorded request, nothing for one nobody records."""

from __future__ import annotations

import io
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased

from gateway.telemetry import AccessLog, RequestRecord, Telemetry

SAMPLED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
UNSAMPLED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}


class CountingTracer:
    """The provider's tracer, counting the spans started through it."""

    def __init__(self, tracer: Any) -> None:
        self._tracer, self.started = tracer, 0

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        self.started += 1
        return self._tracer.start_span(*args, **kwargs)


def _record(provider: TracerProvider, headers: dict[str, str]) -> tuple[RequestRecord, CountingTracer]:
    telemetry = Telemetry(provider, AccessLog(io.StringIO()))
    tracer = CountingTracer(telemetry.tracer)
    telemetry.tracer = tracer  # type: ignore[assignment]
    return RequestRecord(telemetry, "chat", headers, "r1", "chat.completions"), tracer


def test_a_recorded_request_gets_its_phases_as_child_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    record, tracer = _record(provider, SAMPLED)
    with record.phase("switchyard.admission") as span:
        span.set_attribute("switchyard.step", 1)
    record.finish()
    assert tracer.started == 2
    spans = {s.name: s for s in exporter.get_finished_spans()}
    admission = spans["switchyard.admission"]
    assert admission.parent is not None and admission.parent.span_id == record.span.get_span_context().span_id
    assert dict(admission.attributes or {}) == {"switchyard.step": 1}


def test_a_request_nobody_records_starts_no_phase_span() -> None:
    # the gateway's own default with no exporter, and a parent-based sampler told "not sampled"
    for provider, headers in ((TracerProvider(sampler=ALWAYS_OFF), {}), (TracerProvider(), UNSAMPLED)):
        record, tracer = _record(provider, headers)
        assert not record.span.is_recording()
        with record.phase("switchyard.admission") as span:
            span.set_attribute("switchyard.step", 1)  # accepted and dropped
            assert not span.is_recording()
        try:
            with record.phase("switchyard.select_worker"):
                raise RuntimeError("no worker")
        except RuntimeError:
            pass
        record.finish()
        assert tracer.started == 1  # the request's own span only
        assert record.trace_id != "0" * 32  # the access line and traceparent still carry the trace


def test_a_ratio_sampler_decides_a_phase_as_its_request() -> None:
    # not parent-based: the child is decided by the trace id it shares with the request
    sampler = TraceIdRatioBased(0.5)
    outcomes = set()
    for trace_id in ("00000000000000000000000000000001", "ffffffffffffffffffffffffffffffff"):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        record, _ = _record(provider, {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        recorded = record.span.is_recording()
        with record.phase("switchyard.admission"):
            pass
        record.finish()
        names = {s.name for s in exporter.get_finished_spans()}
        assert ("switchyard.admission" in names) == recorded == ("chat" in names)
        outcomes.add(recorded)
    assert outcomes == {True, False}  # one trace id of each kind
