"""Traces, metrics and access logs: what the gateway tells operators about each request."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider, Tracer

from gateway.telemetry.access_log import AccessLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import Phase, RequestRecord, finish_reasons, status_of
from gateway.telemetry.tracing import TracingConfigError, tracer_provider_from_env

__all__ = ["AccessLog", "Metrics", "Phase", "RequestRecord", "Telemetry", "TracingConfigError",
           "finish_reasons", "status_of"]


class Telemetry:
    """The process's tracer, metrics and access log.

    Args:
        tracer_provider: Where spans go; ``None`` disables tracing (no-op spans, no ids).
        access_log: Where access lines go.
    """

    def __init__(self, tracer_provider: TracerProvider | None, access_log: AccessLog) -> None:
        self.tracer_provider = tracer_provider
        self.tracer: Tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("switchyard")
        self.access_log = access_log
        self.metrics = Metrics()

    @classmethod
    def from_env(cls, access_log: str = "stdout", environ: Mapping[str, str] | None = None) -> Telemetry:
        """Tracing from the ``OTEL_*`` variables; access lines to ``access_log``."""
        return cls(tracer_provider_from_env(os.environ if environ is None else environ),
                   AccessLog(access_log))

    def shutdown(self) -> None:
        """Flush queued spans (bounded by the exporter's timeout) and close the access log."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        self.access_log.close()
