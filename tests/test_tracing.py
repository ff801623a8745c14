"""Traces: one span per callback with app, room, task, event type and outcome."""

from __future__ import annotations

import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_app import SECRET, Harness, body

from gme_recwatch import tracing
from gme_recwatch.app import build_apps
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings


def harness_with(exporter: InMemorySpanExporter) -> Harness:
    service = Service(Settings(secret_key=SECRET), span_exporter=exporter)
    service.ready = True
    cb, admin = build_apps(service)
    return Harness(service, cb, admin)


def spans(h: Harness, exporter: InMemorySpanExporter) -> list:  # type: ignore[type-arg]
    assert h.service.provider is not None
    h.service.provider.force_flush()
    return list(exporter.get_finished_spans())


def test_each_callback_gets_a_span_with_its_identity_and_outcome() -> None:
    exporter = InMemorySpanExporter()
    h = harness_with(exporter)
    h.post(body(2, room="room-9", task=2**60 + 1, ts=int(time.time())))
    (span,) = spans(h, exporter)
    a = span.attributes
    assert span.name == "gme.callback"
    assert a["gme.biz_id"] == 1400000000 and a["gme.room_id"] == "room-9"
    assert a["gme.task_id"] == str(2**60 + 1) and a["gme.event_type"] == "completed"
    assert a["gme.outcome"] == "accepted"


def test_rejected_callback_span_has_no_unverified_identity() -> None:
    exporter = InMemorySpanExporter()
    h = harness_with(exporter)
    h.post(body(1, room="forged-room"), sig="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    (span,) = spans(h, exporter)
    assert span.attributes["gme.outcome"] == "mismatch"
    assert "gme.room_id" not in span.attributes
    assert span.status.status_code.name == "ERROR"


def test_export_is_off_unless_an_otlp_endpoint_is_configured() -> None:
    assert not tracing.export_enabled({})
    assert tracing.export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.export_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.export_enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert not tracing.export_enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )


def test_sdk_disabled_gives_no_provider_and_callbacks_still_work() -> None:
    assert tracing.make_provider(env={"OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.make_provider(env={}) is None  # nothing to export to: no-op tracing
    provider = tracing.make_provider(
        env={"OTEL_SERVICE_NAME": "recwatch-eu", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "recwatch-eu"
