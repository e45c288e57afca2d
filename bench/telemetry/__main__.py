"""Cost of a request's telemetry: ``python -m bench.telemetry``.

Runs the whole ``RequestRecord`` lifecycle of one streamed request (root span, classify,
admission and selection phases, the backend-call span with its traceparent, first token,
``--chunks`` chunks, finish: attributes, metrics, access line) in a loop, under each
configuration, in one process and one run. The baseline is the same lifecycle with tracing
disabled and the access log off (metrics only); each configuration is reported as µs per
request and as the extra over that baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from backends.pool import Worker
from gateway.telemetry import AccessLog, RequestRecord, Telemetry
from policies.spend import Charge
from router.base import Selection


class _Discard(SpanExporter):
    """Exports into nothing, after encoding like OTLP would (protobuf), so the cost is real."""

    def export(self, spans):  # type: ignore[no-untyped-def]
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


@dataclass
class _FakeBackend:
    kind = "sglang"
    name = "local/0"
    address = "http://10.0.0.5:30000"


def _configs() -> dict[str, Telemetry]:
    exported = TracerProvider()
    exported.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1 << 16))
    return {
        "baseline: no tracing, no access log": Telemetry(None, AccessLog("off")),
        "default: unsampled spans + access log": Telemetry(TracerProvider(sampler=ALWAYS_OFF),
                                                           AccessLog(io.StringIO())),
        "exporting: sampled spans (OTLP encoding) + access log": Telemetry(exported, AccessLog(io.StringIO())),
    }


def one_request(telemetry: Telemetry, worker: Worker, chunks: int) -> None:
    record = RequestRecord(telemetry, "chat", {}, "0" * 32)
    record.tenant, record.key, record.request_model, record.stream = "demo", "demo-key", "llama", True
    with record.phase("switchyard.classify"):
        record.routed("auto", "cheap", 0.21)
    record.model, record.version = "llama", "29c27e47ae3d"
    with record.phase("switchyard.admission"):
        pass
    with record.phase("switchyard.select_worker"):
        pass
    record.selected(Selection(worker, "home_hit", {"local/0": 0.9}), "local")
    record.upstream_call(worker, "sim-llama", "chat")
    record.first_token()
    for _ in range(chunks):
        record.chunk()
    record.charge = Charge("0" * 32, "llama", 100, 300, chunks, 0.0012)
    record.finish_reasons = ["stop"]
    record.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--chunks", type=int, default=50, help="streamed chunks per request")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians reported")
    args = parser.parse_args()
    worker = Worker(_FakeBackend())  # type: ignore[arg-type]
    configs = _configs()
    timings: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, telemetry in configs.items():  # interleaved: machine noise hits every config alike
            started = time.perf_counter()
            for _ in range(args.requests):
                one_request(telemetry, worker, args.chunks)
            timings[name].append((time.perf_counter() - started) / args.requests * 1e6)
            if telemetry.tracer_provider is not None:
                telemetry.tracer_provider.force_flush()
    baseline = statistics.median(next(iter(timings.values())))
    rows = []
    for name, values in timings.items():
        median = statistics.median(values)
        rows.append({"config": name, "us_per_request": round(median, 1), "extra_us": round(median - baseline, 1),
                     "ratio": round(median / baseline, 2)})
    print(f"{'configuration':<56} {'µs/request':>10} {'extra µs':>9} {'ratio':>6}")
    for row in rows:
        print(f"{row['config']:<56} {row['us_per_request']:>10} {row['extra_us']:>9} {row['ratio']:>6}")
    print(json.dumps({"chunks": args.chunks, "requests": args.requests, "rounds": args.rounds, "rows": rows}))


if __name__ == "__main__":
    main()
