"""The real process: both listeners over HTTP."""

from __future__ import annotations

import signal

import httpx

from .conftest import RunningService, callback_body


def test_signed_callback_is_accepted_and_tracked(service: RunningService) -> None:
    r = service.send(1, room="r-accept")
    assert r.status_code == 200 and r.json() == {"code": 0}
    assert service.metric("gme_recording_callbacks_total", event_type="started", result="accepted") == 1
    assert service.metric("gme_recording_active_recordings", app_id="1400000000", record_mode="mixed") == 1
    assert service.metric("gme_recording_active_rooms", app_id="1400000000") == 1


def test_metrics_are_never_served_on_the_callback_port(service: RunningService) -> None:
    base = f"http://127.0.0.1:{service.port}"
    for path in ("/metrics", "/readyz", "/api/v1/segments", "/schema/openapi.json"):
        assert httpx.get(base + path).status_code == 404, path
    assert httpx.get(base + "/healthz").status_code == 200


def test_sigterm_exits_cleanly(service: RunningService) -> None:
    service.send(1)
    assert service.stop(signal.SIGTERM) == 0
    assert '"event": "stopped"' in service.logs()


def test_bad_signature_is_rejected_and_counted(service: RunningService) -> None:
    r = service.post(callback_body(1), secret="wrong-key")
    assert r.status_code == 401 and r.json()["error"] == "mismatch"
    assert service.metric("gme_recording_signature_failures_total", reason="mismatch") == 1
    assert service.metric("gme_recording_tracked_segments") == 0
