"""OpenTelemetry set-up, configured only through the standard ``OTEL_*`` variables.

Tracing is on when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and neither ``OTEL_SDK_DISABLED=true`` nor
``OTEL_TRACES_EXPORTER=none`` says otherwise; then every callback gets a span and log lines
carry its trace and span ids. Otherwise the no-op tracer is used: a span nobody exports
cost about 16 us per callback, a third of the service's own work (see BENCHMARKS.md).
Sampling follows ``OTEL_TRACES_SAMPLER``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import __version__

TRACER_NAME = "gme_recwatch"


def export_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def make_provider(
    exporter: SpanExporter | None = None, env: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """A provider for the service, or None (no-op tracing) when there is nothing to export to."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if exporter is None and not export_enabled(env):
        return None
    resource = Resource.create(
        {SERVICE_NAME: env.get("OTEL_SERVICE_NAME", "gme-recwatch"), "service.version": __version__}
    )
    provider = TracerProvider(resource=resource)
    if exporter is None and export_enabled(env):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer(provider: TracerProvider | None) -> trace.Tracer:
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(TRACER_NAME, __version__)
