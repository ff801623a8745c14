"""Blind windows of the real process: kill -9 and SIGTERM, restarted on its state file.

Callbacks "sent" while the process is down are simply not sent, as Tencent drops a callback
whose retries ran out. A crash is a blind window from the last snapshot; a clean restart
quicker than the sender's retry horizon is none, and paging goes on exactly as before.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import BIZ_ID, RunningService

Factory = Callable[..., RunningService]


def _windows(svc: RunningService) -> list[dict[str, Any]]:
    return svc.log_events("blind_window")


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _env(state: Path, **extra: str) -> dict[str, str]:
    return {
        "GME_RECWATCH_STATE_FILE": str(state),
        "GME_RECWATCH_SNAPSHOT_INTERVAL_SECONDS": "1",
        "GME_RECWATCH_MAX_RECORDING_SECONDS": "3",
        "GME_RECWATCH_LOG_LEVEL": "info",
        **extra,
    }


def _stuck(svc: RunningService) -> float:
    return svc.metric("gme_recording_tracked_segments", state="stuck")


def _unverified(svc: RunningService) -> float:
    return svc.metric("gme_recording_tracked_segments", state="unverified")


def _segments(svc: RunningService, state: str) -> list[dict[str, Any]]:
    reply = httpx.get(svc.admin_url + "/api/v1/segments", params={"state": state}, timeout=5)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["segments"])


def test_kill_9_opens_a_blind_window_at_the_last_snapshot(service_factory: Factory, tmp_path: Path) -> None:
    env = _env(tmp_path / "state")
    svc = service_factory(**env)
    assert svc.send(1, room="before").status_code == 200
    _wait(lambda: svc.metric("gme_recording_snapshot_last_success_timestamp_seconds") > 0)
    svc.stop(signal.SIGKILL)
    # Dropped: a completion sent while the process was down.
    restarted = service_factory(**env)
    [window] = _windows(restarted)
    assert window["cause"] == "restart_after_crash"
    assert window["blind_seconds"] > 0
    assert abs(window["end"] - window["start"] - window["blind_seconds"]) < 0.001
    assert (
        abs(
            restarted.metric("gme_recording_blind_seconds_total", cause="restart_after_crash")
            - window["blind_seconds"]
        )
        < 0.001
    )
    assert restarted.metric("gme_recording_blind_window_start_timestamp_seconds") == window["start"]
    assert restarted.send(1, room="after").status_code == 200
    # "before" may have completed while the process was down: not paged, unverified; "after"
    # started once it listened again: paged as usual.
    _wait(lambda: _stuck(restarted) == 1 and _unverified(restarted) == 1)
    unverified = _segments(restarted, "unverified")
    assert [s["room_id"] for s in unverified] == ["before"]
    assert unverified[0]["blind_window_start"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(window["start"])
    )
    assert [s["room_id"] for s in _segments(restarted, "stuck")] == ["after"]
    # The overview's "Unverified segments" links, for its standing count (no labels) and for
    # the new ones of an app, list it.
    from test_dashboards import api_links

    urls = api_links("unverified", {}, restarted.admin_url)
    urls += api_links("unverified", {"app_id": str(BIZ_ID)}, restarted.admin_url)
    assert urls
    for url in urls:
        listed = httpx.get(url, timeout=5).json()["segments"]
        assert [s["room_id"] for s in listed] == ["before"], url
    assert restarted.metric("gme_recording_unverified_total") == 1
    assert '"event": "segment_unverified"' in restarted.logs()


def test_clean_restart_within_the_retry_horizon_changes_no_paging(
    service_factory: Factory, tmp_path: Path
) -> None:
    env = _env(tmp_path / "state", GME_RECWATCH_SENDER_RETRY_SECONDS="60")
    svc = service_factory(**env)
    assert svc.send(1, room="before").status_code == 200
    assert svc.stop(signal.SIGTERM) == 0
    restarted = service_factory(**env)
    assert _windows(restarted) == []
    assert restarted.metric("gme_recording_blind_seconds_total") == 0
    assert restarted.send(1, room="after").status_code == 200
    _wait(lambda: _stuck(restarted) == 2)  # both paged, as without the restart


def test_clean_restart_beyond_the_retry_horizon_is_blind_for_the_excess(
    service_factory: Factory, tmp_path: Path
) -> None:
    env = _env(tmp_path / "state", GME_RECWATCH_SENDER_RETRY_SECONDS="0.5")
    svc = service_factory(**env)
    assert svc.stop(signal.SIGTERM) == 0
    time.sleep(1.0)
    restarted = service_factory(**env)
    [window] = _windows(restarted)
    assert window["cause"] == "restart_after_clean_stop"
    assert window["blind_seconds"] >= 0.5


def test_a_crash_soon_after_a_clean_restart_is_a_blind_window(service_factory: Factory, tmp_path: Path) -> None:
    """SIGTERM, restart, callbacks answered 200, kill -9 before the next periodic snapshot,
    restart: the final snapshot of the clean stop still says "clean", but the running mark the
    second process put on disk before it listened says it never stopped cleanly. What it
    acknowledged is lost, and the loss is a window covering those callbacks."""
    env = _env(tmp_path / "state", GME_RECWATCH_SNAPSHOT_INTERVAL_SECONDS="600")
    first = service_factory(**env)
    assert first.stop(signal.SIGTERM) == 0
    assert not (tmp_path / "state.running").exists()  # removed by the clean stop
    second = service_factory(**env)
    assert (tmp_path / "state.running").exists()  # on disk before the first 200
    sent_at = time.time()
    for room in ("a", "b", "c"):
        assert second.send(1, room=room).status_code == 200
    second.stop(signal.SIGKILL)
    third = service_factory(**env)
    [window] = _windows(third)
    assert window["cause"] == "restart_after_crash"
    assert window["start"] <= sent_at < window["end"]  # the three callbacks fell in it
    assert third.metric("gme_recording_blind_seconds_total", cause="restart_after_crash") > 0
