"""The real process explains a signature it rejects: a hex digest sent to a service configured
for Base64 is refused as before, and the log and /metrics say what would fix it."""

from __future__ import annotations

import json
import time

import pytest

from gme_recwatch.signature import sign

from .conftest import SECRET, RunningService, callback_body

pytestmark = pytest.mark.e2e


def _hint_lines(service: RunningService) -> list[dict[str, object]]:
    lines = []
    for raw in service.logs().splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("event") == "signature_hint":
                lines.append(line)
    return lines


def test_a_hex_signed_callback_to_a_base64_service_is_refused_and_explained(service_factory: object) -> None:
    service: RunningService = service_factory(  # type: ignore[operator]
        GME_RECWATCH_SIGNATURE_ENCODING="base64"
    )
    body = callback_body(1, room="r-hint")
    header = sign(body, SECRET, "hex")
    r = service.post(body, signature=header)
    assert r.status_code == 401 and r.json()["error"] == "mismatch"
    assert service.metric("gme_recording_signature_failures_total", reason="mismatch") == 1
    assert service.metric("gme_recording_signature_hints_total", hint="hex_encoding") == 1
    assert service.metric("gme_recording_tracked_segments") == 0

    deadline = time.monotonic() + 5
    while not _hint_lines(service) and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = _hint_lines(service)
    assert line["hint"] == "hex_encoding" and line["claimed_biz_id"] == 1400000000
    assert line["level"] == "warning"
    assert "set GME_RECWATCH_SIGNATURE_ENCODING=auto" in str(line["fix"])
    logs = service.logs()
    assert SECRET not in logs and header not in logs and header.upper() not in logs

    # The same callback correctly signed still goes through: the hint changed nothing.
    assert service.post(body).status_code == 200


FLOOD = 100


def test_a_flood_of_forged_signatures_is_diagnosed_only_at_the_rate(service_factory: object) -> None:
    service: RunningService = service_factory(  # type: ignore[operator]
        GME_RECWATCH_SIGNATURE_ENCODING="base64", GME_RECWATCH_SIGNATURE_HINTS_PER_SECOND="1"
    )
    body = callback_body(1, room="r-flood")
    header = sign(body, SECRET, "hex")
    started = time.monotonic()
    # 100 requests: far more than the burst (5) and the rate (1/s) allow back to back, and within
    # the test's timeout on a loaded machine (200 took over 120 s at load 25 on 2 cores).
    for _ in range(FLOOD):
        assert service.post(body, signature=header).status_code == 401
    elapsed = time.monotonic() - started
    hinted = service.metric("gme_recording_signature_hints_total", hint="hex_encoding")
    skipped = service.metric("gme_recording_signature_diagnoses_skipped_total")
    assert hinted + skipped == FLOOD
    assert hinted <= 5 + elapsed * 1 + 1
    # One line a minute for this hint and app: one, unless the requests took more than a
    # minute on a loaded machine, when each further minute begun may add one.
    assert 1 <= len(_hint_lines(service)) <= 1 + int(elapsed // 60), elapsed
