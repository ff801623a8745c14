"""Per-callback cost of the service's own pipeline, in-process, without HTTP.

``Intake.handle`` (peek BizID, HMAC-SHA1 verify, decode, tracker, metrics, span) over distinct
pre-signed callbacks, with the OpenTelemetry SDK tracer the service uses by default (spans
made, nothing exported) and with ``OTEL_SDK_DISABLED=true`` (no-op tracer). Log level info,
output to /dev/null. Explains the gap between the full service and the bare app.

    .venv/bin/python benchmarks/intake_cost.py
"""

from __future__ import annotations

import json
import os
import sys
import time

from _fill import machine

from gme_recwatch import logging as log_setup
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign
from gme_recwatch.simulate import SimConfig, make_plan

SECRET = "bench-secret-0123456789"


def bodies(n_rooms: int) -> list[tuple[bytes, str]]:
    plan = make_plan(SimConfig(rooms=n_rooms, users_per_room=4, segments_per_task=1, mixed_fraction=0,
                               reorder_fraction=0, duplicate_fraction=0, drop_fraction=0,
                               never_complete_fraction=0, never_upload_fraction=0,
                               bad_signature_fraction=0, seed=2))
    out = []
    for s in plan.sends:
        b = plan.body(s, 1_700_000_000)
        out.append((b, sign(b, SECRET)))
    return out


def measure(otel_disabled: bool, reqs: list[tuple[bytes, str]]) -> float:
    from gme_recwatch.app import Service

    if otel_disabled:
        os.environ["OTEL_SDK_DISABLED"] = "true"
    else:
        os.environ.pop("OTEL_SDK_DISABLED", None)
    service = Service(Settings(secret_key=SECRET))
    handle = service.intake.handle
    t0 = time.perf_counter()
    for body, sig in reqs:
        r = handle(body, sig, "127.0.0.1")
        assert r.status == 200
    return (time.perf_counter() - t0) / len(reqs) * 1e6


def main() -> int:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[k]
    log_setup.configure("info", "json", open(os.devnull, "w"))
    reqs = bodies(10_000)
    print(json.dumps({"machine": machine(), "callbacks": len(reqs)}))
    print("| tracer | µs per callback (Intake.handle) |")
    print("|---|---:|")
    for _ in range(2):  # alternate, report the second pass (warm)
        sdk = measure(False, reqs)
        noop = measure(True, reqs)
    print(f"| OpenTelemetry SDK, nothing exported (default) | {sdk:.1f} |")
    print(f"| no-op (OTEL_SDK_DISABLED=true) | {noop:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
