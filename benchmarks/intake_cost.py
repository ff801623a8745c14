"""Per-callback cost of the service's own pipeline, in-process, without HTTP.

``Intake.handle`` (peek BizID, HMAC-SHA1 verify, decode, store, metrics, span) over distinct
pre-signed callbacks, with the tracer the service uses by default (no OTLP endpoint set: the
no-op tracer) and with tracing on (an SDK span per callback, handed to a BatchSpanProcessor
whose exporter discards it: what an OTLP endpoint costs in-process, minus the network). Log
level info, output to /dev/null. Explains the gap between the full service and the bare app.

    .venv/bin/python benchmarks/intake_cost.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from _fill import machine
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gme_recwatch import logging as log_setup
from gme_recwatch.intake import Accepted
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign
from gme_recwatch.simulate import SimConfig, make_plan

SECRET = "bench-secret-0123456789"


def bodies(n_rooms: int) -> list[tuple[bytes, str]]:
    plan = make_plan(
        SimConfig(
            rooms=n_rooms,
            users_per_room=4,
            segments_per_task=1,
            mixed_fraction=0,
            reorder_fraction=0,
            duplicate_fraction=0,
            drop_fraction=0,
            never_complete_fraction=0,
            never_upload_fraction=0,
            bad_signature_fraction=0,
            seed=2,
        )
    )
    out = []
    for s in plan.sends:
        b = plan.body(s, 1_700_000_000)
        out.append((b, sign(b, SECRET)))
    return out


class Discard(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def measure(traced: bool, reqs: list[tuple[bytes, str]]) -> float:
    from gme_recwatch.service import Service

    service = Service(Settings(secret_key=SECRET), span_exporter=Discard() if traced else None)
    assert (service.provider is not None) == traced
    handle = service.intake.handle
    run = asyncio.new_event_loop().run_until_complete
    t0 = time.perf_counter()
    for body, sig in reqs:
        assert isinstance(run(handle(body, sig, "127.0.0.1")), Accepted)
    dt = time.perf_counter() - t0
    if service.provider is not None:
        service.provider.shutdown()
    return dt / len(reqs) * 1e6


def main() -> int:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[k]
    log_setup.configure("info", "json", open(os.devnull, "w"))
    reqs = bodies(10_000)
    print(json.dumps({"machine": machine(), "callbacks": len(reqs)}))
    print("| tracer | µs per callback (Intake.handle) |")
    print("|---|---:|")
    for _ in range(2):  # alternate, report the second pass (warm)
        noop = measure(False, reqs)
        sdk = measure(True, reqs)
    print(f"| no-op (default: no OTLP endpoint set) | {noop:.1f} |")
    print(f"| OpenTelemetry SDK span, batch-exported to a discarding exporter (endpoint set) | {sdk:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
