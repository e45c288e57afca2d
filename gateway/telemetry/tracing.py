"""The tracer provider, configured by the standard ``OTEL_*`` environment variables.

Supported: ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``;
comma-separated), ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` / ``_HEADERS`` / ``_TIMEOUT``
(read by the OTLP/HTTP exporter), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf``
only), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its
argument, and the batch processor's ``OTEL_BSP_*``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

log = logging.getLogger("switchyard.telemetry")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable asks for something this build cannot do."""


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        # the spec's default is otlp to localhost; exporting into nothing would log an error
        # every few seconds, so an endpoint must be named for OTLP to be on by default
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # reads the endpoint, headers and timeout from the environment


def check_tracing_env(environ: Mapping[str, str]) -> None:
    """Raise ``TracingConfigError`` if the ``OTEL_*`` variables ask for what is not supported."""
    for name in _exporter_names(environ):
        if name == "console":
            continue
        if name != "otlp":
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol not in (None, "http/protobuf"):
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is supported")


def tracer_provider_from_env(environ: Mapping[str, str]) -> TracerProvider | None:
    """The process's tracer provider, or ``None`` when ``OTEL_SDK_DISABLED`` is true.

    With no exporter configured, spans are not sampled (they cost ~5 µs each, not ~40) but
    still carry trace ids: the access log and the ``traceparent`` sent upstream continue the
    client's trace.
    """
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    check_tracing_env(environ)
    names = _exporter_names(environ)
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "switchyard"}))
    if not names:
        return TracerProvider(sampler=ALWAYS_OFF, resource=resource)
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    log.info("tracing: exporting spans via %s", ", ".join(names))
    return provider
