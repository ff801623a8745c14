"""OpenTelemetry set-up, configured only through the standard ``OTEL_*`` variables.

A span is made for every callback (so log lines carry trace and span ids), but nothing is
exported unless an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and neither ``OTEL_SDK_DISABLED=true`` nor
``OTEL_TRACES_EXPORTER=none`` says otherwise. Sampling follows ``OTEL_TRACES_SAMPLER``.
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


def make_provider(exporter: SpanExporter | None = None,
                  env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider for the service; None when ``OTEL_SDK_DISABLED=true``."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", "gme-recwatch"),
                                "service.version": __version__})
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
