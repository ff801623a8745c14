"""Several `gme-recwatch serve` replicas on one real redis-server: one truth, nothing that was
acknowledged lost when a replica dies, 503 (never a 200) while Redis is away."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from conftest import RedisServer

from gme_recwatch.simulate import SenderConfig, Summary, make_plan, run

from .conftest import RunningService, callback_body
from .test_simulator import (
    DEADLINES,
    DISORDERLY,
    assert_kept_pace,
    expected_metrics,
    pace_margin,
    samples,
    total,
)

STATES = ("recording", "completed", "uploaded", "stuck", "upload_missing", "orphan", "expected", "unannounced")


def redis_env(server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        **DEADLINES,
        "GME_RECWATCH_REDIS_URL": server.url,
        "GME_RECWATCH_REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}:",
        **extra,
    }


def shared_view(replicas: list[RunningService]) -> dict[str, float]:
    """Gauges as every live replica reports them (once the state settles they must agree: a
    disagreement shows as a value that is not one number), counters summed over the replicas."""
    per = [samples(r) for r in replicas if r.proc.poll() is None]
    got: dict[str, float] = {}
    for state in STATES:
        values = {total(m, "gme_recording_tracked_segments", state=state) for m in per}
        got[f"tracked {state}"] = values.pop() if len(values) == 1 else float("nan")
    for name in ("stuck_total", "missing_uploads_total", "orphan_events_total", "segments_completed_total"):
        got[name] = sum(total(m, f"gme_recording_{name}") for m in per)
    for et in ("started", "completed", "uploaded"):
        got[f"distinct {et}"] = sum(
            total(m, "gme_recording_callbacks_total", event_type=et, result=r)
            for m in per
            for r in ("accepted", "out_of_order", "late")
        )
        got[f"duplicate {et}"] = sum(
            total(m, "gme_recording_callbacks_total", event_type=et, result="duplicate") for m in per
        )
    got["signature mismatch"] = sum(
        total(m, "gme_recording_signature_failures_total", reason="mismatch") for m in per
    )
    return got


# Three replicas and a redis-server on 2 cores answer the sender up to 16.6 s behind its plan at
# load 12, and a replica killed mid-run makes it retry on the next one, seconds late by design
# (16 s at load 11): deadlines with room for that (a 29.6 s margin, pace_margin).
REPLICA_DEADLINES = {
    "GME_RECWATCH_MAX_RECORDING_SECONDS": "36",
    "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "30",
    "GME_RECWATCH_REORDER_WINDOW_SECONDS": "30",
}


def wait_for(
    want: dict[str, float], replicas: list[RunningService], keys: list[str], seconds: float = 60
) -> dict[str, float]:
    deadline = time.monotonic() + seconds  # the longest deadline and sweeps on a loaded machine
    while True:
        got = shared_view(replicas)
        if all(got[k] == want[k] for k in keys) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def spread_run(replicas: list[RunningService], retry_seconds: float = 5) -> Summary:
    sender = SenderConfig(
        url=replicas[0].callback_url,
        secret=replicas[0].secret,
        timeout=5,
        retry_seconds=retry_seconds,
        backoff=0.2,
        concurrency=32,
        also_urls=tuple(r.callback_url for r in replicas[1:]),
    )
    return asyncio.run(run(make_plan(DISORDERLY), sender))


def test_three_replicas_on_one_redis_count_what_a_single_process_would(
    service_factory: object, redis_server: RedisServer
) -> None:
    env = redis_env(redis_server, **REPLICA_DEADLINES)
    replicas = [service_factory(**env) for _ in range(3)]  # type: ignore[operator]
    summary = spread_run(replicas)
    assert_kept_pace(summary, pace_margin(deadlines=REPLICA_DEADLINES))
    assert summary.transport_errors == summary.timeouts == 0
    assert all(c.undelivered == 0 for c in summary.events.values())
    want = expected_metrics(summary)  # what test_simulator holds one in-memory process to
    got = wait_for(want, replicas, list(want), seconds=120)
    assert got == want
    # Each replica took part, and the drill-down API answers the same from any of them.
    for r in replicas:
        assert total(samples(r), "gme_recording_callbacks_total") > 0
    stuck = [
        sorted(
            (s["room_id"], s["user_id"], s["seq_no"])
            for s in httpx.get(r.admin_url + "/api/v1/segments?state=stuck&limit=1000").json()["segments"]
        )
        for r in replicas
    ]
    assert stuck[0] == stuck[1] == stuck[2] and len(stuck[0]) == want["tracked stuck"]
    for r in replicas:
        assert "internal_error" not in r.logs()


def test_a_replica_killed_mid_run_loses_no_acknowledged_callback(
    service_factory: object, redis_server: RedisServer
) -> None:
    env = redis_env(redis_server, **REPLICA_DEADLINES)
    replicas = [service_factory(**env) for _ in range(3)]  # type: ignore[operator]
    killer = threading.Timer(1.0, lambda: replicas[1].proc.send_signal(signal.SIGKILL))
    killer.start()
    # As Tencent does: retry what failed, for up to a minute. A retry goes to the next replica,
    # as a load balancer would send it once the dead one fails, so it takes one more attempt.
    summary = spread_run(replicas, retry_seconds=60)
    killer.join()
    assert_kept_pace(summary, pace_margin(deadlines=REPLICA_DEADLINES))  # retries included
    assert replicas[1].proc.poll() is not None  # it really died mid-run
    assert summary.transport_errors > 0  # deliveries really failed on the dead replica
    assert all(c.undelivered == 0 for c in summary.events.values())  # the retries got through
    want = expected_metrics(summary)
    survivors = [replicas[0], replicas[2]]
    tracked = [k for k in want if k.startswith("tracked")]
    got = wait_for(want, survivors, tracked, seconds=120)
    # The state holds every acknowledged event, whichever replica acknowledged it.
    assert {k: got[k] for k in tracked} == {k: want[k] for k in tracked}


def test_redis_away_means_503_and_not_ready_then_recovery_by_itself(
    service_factory: object, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    try:
        svc: RunningService = service_factory(
            **redis_env(  # type: ignore[operator]
                server, GME_RECWATCH_REDIS_TIMEOUT_SECONDS="0.5", GME_RECWATCH_STORE_UNREADY_AFTER_SECONDS="1"
            )
        )
        assert svc.send(1, room="before").status_code == 200
        server.kill()
        started = time.monotonic()
        r = svc.send(1, room="during")
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
        assert time.monotonic() - started < 2.5
        deadline = time.monotonic() + 10
        while httpx.get(svc.admin_url + "/readyz").status_code != 503:
            assert time.monotonic() < deadline, "/readyz stayed ready without Redis"
            time.sleep(0.2)
        assert svc.metric("gme_recording_backend_up") == 0
        assert svc.metric("gme_recording_backend_errors_total", operation="record") >= 1
        server.start()  # the AOF brings "before" back
        deadline = time.monotonic() + 10
        while httpx.get(svc.admin_url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "did not recover after Redis came back"
            time.sleep(0.2)
        assert svc.send(1, room="after").status_code == 200
        rooms = {
            s["room_id"] for s in httpx.get(svc.admin_url + "/api/v1/segments?limit=100").json()["segments"]
        }
        assert rooms == {"before", "after"}  # "during" was never acknowledged, nor stored
        assert svc.metric("gme_recording_backend_up") == 1
    finally:
        server.stop()


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "kill-9"])
def test_a_restarted_replica_sees_the_shared_state(
    service_factory: object, redis_server: RedisServer, kill: bool
) -> None:
    env = redis_env(redis_server, GME_RECWATCH_MAX_RECORDING_SECONDS="3600")
    first: RunningService = service_factory(**env)  # type: ignore[operator]
    for seq in range(5):
        assert first.post(callback_body(1, seq=seq)).status_code == 200
    first.stop(signal.SIGKILL if kill else signal.SIGTERM)
    second: RunningService = service_factory(**env)  # type: ignore[operator]
    assert second.metric("gme_recording_tracked_segments", state="recording") == 5


def test_redis_restarted_empty_under_two_replicas_is_one_reset_one_error_and_a_blind_window(
    service_factory: object, tmp_path: Path
) -> None:
    """A redis-server without persistence restarts under two replicas: exactly one of them
    counts the reset and logs `store_reset` at error level with the segments known before, the
    other logs that it saw it; the blind window is counted; the store works again at once."""
    server = RedisServer(tmp_path / "redis")  # no AOF, no RDB: a restart empties it
    try:
        env = redis_env(
            server, GME_RECWATCH_MAX_RECORDING_SECONDS="3600", GME_RECWATCH_REDIS_TIMEOUT_SECONDS="0.5"
        )
        replicas: list[RunningService] = [service_factory(**env) for _ in range(2)]  # type: ignore[operator]
        for seq in range(5):
            assert replicas[seq % 2].send(1, seq=seq).status_code == 200
        time.sleep(2)  # each replica has looked at the marker since
        server.kill()
        server.start()
        deadline = time.monotonic() + 20
        while sum(r.metric("gme_recording_store_resets_total") for r in replicas) < 1:
            assert time.monotonic() < deadline, "no replica noticed that Redis came back empty"
            time.sleep(0.2)
        time.sleep(3)  # both replicas have checked the store several times since
        resets = [r.metric("gme_recording_store_resets_total") for r in replicas]
        assert sorted(resets) == [0, 1]
        finder, other = (replicas[0], replicas[1]) if resets[0] else (replicas[1], replicas[0])
        found = [e for r in replicas for e in r.log_events("store_reset")]
        assert len(found) == 1 and found[0]["level"] == "error"
        assert found[0]["segments_before"] == 5
        assert len(other.log_events("store_reset_seen")) == 1
        assert finder.metric("gme_recording_blind_seconds_total", cause="store_reset") > 0
        assert other.metric("gme_recording_blind_seconds_total", cause="store_reset") == 0
        assert other.send(1, seq=9).status_code == 200
        for r in replicas:
            assert r.metric("gme_recording_tracked_segments", state="recording") == 1
            assert httpx.get(r.admin_url + "/readyz").status_code == 200
    finally:
        server.stop()


def test_after_redis_came_back_empty_recordings_in_progress_end_unverified_not_orphans(
    service_factory: object, tmp_path: Path
) -> None:
    """#27.3: recordings in progress when a redis-server without persistence restarts complete
    and upload afterwards, against a store that lost their starts. They end ``unverified`` with
    the reset's blind window, not ``orphan``: no start is counted lost (so neither the orphan
    alert nor Tencent's loss figure moves), and the API says which deadline and which window."""
    server = RedisServer(tmp_path / "redis")  # no AOF, no RDB: a restart empties it
    try:
        env = redis_env(
            server,
            GME_RECWATCH_MAX_RECORDING_SECONDS="3600",
            GME_RECWATCH_UPLOAD_GRACE_SECONDS="3600",
            GME_RECWATCH_REORDER_WINDOW_SECONDS="3",
            GME_RECWATCH_REDIS_TIMEOUT_SECONDS="0.5",
        )
        svc: RunningService = service_factory(**env)  # type: ignore[operator]
        for seq in range(4):
            assert svc.send(1, seq=seq).status_code == 200
        time.sleep(2)  # the replica has looked at the marker since
        server.kill()
        server.start()
        deadline = time.monotonic() + 20
        while svc.metric("gme_recording_store_resets_total") < 1:
            assert time.monotonic() < deadline, "the replica never noticed that Redis came back empty"
            time.sleep(0.2)
        for seq in range(4):  # the recordings go on: completions and uploads, no start
            for event in (2, 3) if seq % 2 else (2,):
                deadline = time.monotonic() + 10
                while (status := svc.send(event, seq=seq).status_code) != 200:  # 503 until it rejoins
                    assert status == 503 and time.monotonic() < deadline, status
                    time.sleep(0.2)
        deadline = time.monotonic() + 30  # the reorder window, and sweeps on a loaded machine
        while svc.metric("gme_recording_tracked_segments", state="unverified") < 4:
            assert time.monotonic() < deadline, svc.metrics_text()
            time.sleep(0.3)
        assert svc.metric("gme_recording_tracked_segments", state="orphan") == 0
        assert svc.metric("gme_recording_orphan_events_total") == 0
        page = httpx.get(svc.admin_url + "/api/v1/segments", params={"state": "unverified"}, timeout=5).json()
        (reset,) = svc.log_events("blind_window")
        assert len(page["segments"]) == 4
        for seg in page["segments"]:
            assert seg["deadline"] == "reorder_window_seconds"
            shown = [datetime.fromisoformat(seg[f"blind_window_{k}"]).timestamp() for k in ("start", "end")]
            assert shown == pytest.approx([reset["start"], reset["end"]], abs=1)  # shown to the second
    finally:
        server.stop()
