"""Lifecycle scenarios against the real process, checked through /metrics, the API and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from .conftest import BIZ_ID, RunningService

FAST = {
    "GME_RECWATCH_MAX_RECORDING_SECONDS": "2",
    "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "2",
    "GME_RECWATCH_REORDER_WINDOW_SECONDS": "1",
    "GME_RECWATCH_SWEEP_INTERVAL_SECONDS": "0.2",
}
APP = str(BIZ_ID)


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_recording_past_its_maximum_is_stuck_with_a_log_line_naming_the_room(service_factory) -> None:  # type: ignore[no-untyped-def]
    svc: RunningService = service_factory(**FAST)
    assert svc.send(1, room="room-stuck").status_code == 200
    wait_for(lambda: svc.metric("gme_recording_stuck_recordings", app_id=APP) == 1)
    assert svc.metric("gme_recording_stuck_total", app_id=APP) == 1
    logged = [json.loads(ln) for ln in svc.logs().splitlines() if '"segment_stuck"' in ln]
    assert logged and logged[0]["room_id"] == "room-stuck" and logged[0]["task_id"] == "446946705284000001"
    segs = httpx.get(svc.admin_url + "/api/v1/segments", params={"state": "stuck"}).json()
    assert [s["room_id"] for s in segs["segments"]] == ["room-stuck"]
    # the completion arrives after all: counted late, the stuck gauge clears
    assert svc.send(2, room="room-stuck").status_code == 200
    assert svc.metric("gme_recording_callbacks_total", event_type="completed", result="late") == 1
    assert svc.metric("gme_recording_stuck_recordings", app_id=APP) == 0


def test_completed_without_upload_becomes_a_missing_upload(service_factory) -> None:  # type: ignore[no-untyped-def]
    svc: RunningService = service_factory(**FAST)
    svc.send(1, room="room-m")
    svc.send(2, room="room-m")
    wait_for(lambda: svc.metric("gme_recording_uploads_missing", app_id=APP) == 1)
    assert svc.metric("gme_recording_missing_uploads_total", app_id=APP) == 1
    assert svc.metric("gme_recording_segments_completed_total", app_id=APP) == 1
    assert '"segment_upload_missing"' in svc.logs()


def test_upload_whose_start_was_lost_is_an_orphan(service_factory) -> None:  # type: ignore[no-untyped-def]
    svc: RunningService = service_factory(**FAST)
    svc.send(3, room="room-o")
    wait_for(lambda: svc.metric("gme_recording_orphan_events_total", event_type="uploaded") == 1)
    assert svc.metric("gme_recording_tracked_segments", state="orphan") == 1
    assert '"segment_orphan"' in svc.logs()


def test_out_of_order_delivery_with_duplicates_ends_uploaded(service: RunningService) -> None:
    now = int(time.time())
    for et, ts in ((3, now), (1, now - 300), (3, now), (2, now - 20), (1, now - 300)):
        assert service.send(et, room="room-x", ts=ts).status_code == 200
    m = service.metric
    assert m("gme_recording_tracked_segments", state="uploaded") == 1
    assert m("gme_recording_callbacks_total", event_type="uploaded", result="accepted") == 1
    assert m("gme_recording_callbacks_total", event_type="started", result="out_of_order") == 1
    assert m("gme_recording_callbacks_total", event_type="completed", result="out_of_order") == 1
    assert m("gme_recording_callbacks_total", result="duplicate") == 2
    assert m("gme_recording_duration_seconds_sum", record_mode="mixed") == 280
    assert m("gme_recording_upload_delay_seconds_sum", record_mode="mixed") == 20
    assert m("gme_recording_active_recordings") == 0


def test_state_survives_a_restart(service_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state" / "recwatch.snapshot"
    env = {"GME_RECWATCH_STATE_FILE": str(state)}
    first: RunningService = service_factory(**env)
    first.send(1, room="keep-a")
    first.send(1, room="keep-b", seq=1)
    first.send(2, room="keep-b", seq=1)
    assert first.stop(signal.SIGTERM) == 0
    assert state.exists()
    second: RunningService = service_factory(**env)
    assert second.metric("gme_recording_tracked_segments", state="recording") == 1
    assert second.metric("gme_recording_tracked_segments", state="completed") == 1
    assert second.metric("gme_recording_snapshot_restored_segments") == 2
    assert second.metric("gme_recording_active_rooms", app_id=APP) == 1
    rooms = httpx.get(second.admin_url + f"/api/v1/rooms/{APP}/keep-b").json()
    assert rooms["count"] == 1 and rooms["segments"][0]["events_seen"] == ["started", "completed"]
    assert second.send(2, room="keep-a").json() == {"code": 0}
    assert second.metric("gme_recording_callbacks_total", event_type="completed", result="accepted") == 1


def test_corrupt_snapshot_is_counted_and_the_service_starts_empty(service_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "broken.snapshot"
    state.write_bytes(b"\x00garbage, not a snapshot")
    svc: RunningService = service_factory(GME_RECWATCH_STATE_FILE=str(state))
    assert svc.metric("gme_recording_snapshot_failures_total", operation="restore") == 1
    assert svc.metric("gme_recording_tracked_segments") == 0
    assert '"snapshot_restore_failed"' in svc.logs()
    assert svc.send(1).status_code == 200


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("gme-recwatch"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GME_RECWATCH_")}
    return subprocess.run([exe, "serve"], env={**clean, **env}, capture_output=True, text=True, timeout=30)


def test_serve_without_a_key_refuses_to_start_and_names_the_variable() -> None:
    r = _serve({})
    assert r.returncode == 2
    assert "GME_RECWATCH_SECRET_KEY" in r.stderr and "GME_RECWATCH_KEYS_FILE" in r.stderr


def test_invalid_setting_refuses_to_start_and_names_it_without_the_secret() -> None:
    r = _serve({"GME_RECWATCH_SECRET_KEY": "topsecret-value", "GME_RECWATCH_ADMIN_PORT": "99999"})
    assert r.returncode == 2 and "GME_RECWATCH_ADMIN_PORT" in r.stderr
    assert "topsecret-value" not in r.stderr + r.stdout
