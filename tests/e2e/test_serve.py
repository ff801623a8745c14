"""The real process: both listeners over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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


def test_port_in_use_fails_fast_with_a_clear_message(service: RunningService) -> None:
    env = {**os.environ, "GME_RECWATCH_SECRET_KEY": "k", "GME_RECWATCH_HOST": "127.0.0.1",
           # both ports are already held by `service`
           "GME_RECWATCH_PORT": str(service.port), "GME_RECWATCH_ADMIN_PORT": str(service.admin_port),
           "GME_RECWATCH_LOG_FORMAT": "json"}
    exe = str(Path(sys.executable).with_name("gme-recwatch"))
    r = subprocess.run([exe, "serve"], env=env, capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "address already in use" in out and "could not listen" in out
    assert "Task exception was never retrieved" not in out
