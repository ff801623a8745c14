"""Segments Tencent never announced (#28), end to end: a real `gme-recwatch serve` with a COS
bucket on moto's S3 server, callbacks sent by hand as Tencent's sender would, files put in the
bucket as GME would write them. Four recording streams, each a case of the issue:

* a middle segment with no callback and its file in COS: found by listing its stream's folder,
  uploaded, every callback counted lost, no page;
* a middle segment with no callback and no file: a confirmed missing recording, in the delivery
  SLO (``problem_segments_total{state="unannounced", confirmed="true"}``);
* a stream's lost last segment: found by the folder listing once the stream is quiet;
* an app configured without start callbacks: completions and uploads, no orphan.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from conftest import S3Server

from gme_recwatch.events import encode_callback

from .conftest import BIZ_ID, RunningService
from .test_reconcile import cos_service, log_lines, simulate

TASK = 446946705284000123
OTHER_APP = BIZ_ID + 1


def send(svc: RunningService, event: int, room: str, seq: int, file_name: str, *, biz: int = BIZ_ID) -> None:
    body = encode_callback(
        biz_id=biz,
        room_id=room,
        user_id="u1",
        task_id=TASK,
        seq_no=seq,
        event_type=event,
        record_mode=0,
        timestamp=int(time.time()),
        file_name=file_name,
    )
    assert svc.post(body).status_code == 200


def spec_name(room: str, seq: int) -> str:
    """Tencent's sample layout: no SeqNo in the name, only the segment's start stamp."""
    return f"{BIZ_ID}_{room}_u1/2026-12-08-10-00-{10 + seq:02d}_{TASK}_audio.mp3"


def seq_name(room: str, seq: int) -> str:
    """The layout with the SeqNo in the name (the simulator's)."""
    return f"{BIZ_ID}_{room}_u1/2026-12-08-10-00-{10 + seq:02d}_{TASK}_{seq}_audio.mp3"


def segments(svc: RunningService, **params: str) -> list[dict[str, Any]]:
    got = httpx.get(svc.admin_url + "/api/v1/segments", params={"limit": "1000", **params}, timeout=5)
    return list(got.json()["segments"])


def state_of(svc: RunningService, room: str, seq: int) -> dict[str, Any]:
    (seg,) = [s for s in segments(svc, room_id=room) if s["seq_no"] == seq]
    return seg


def test_segments_no_callback_announced_are_found_in_cos_or_confirmed_missing(
    service_factory: Any, s3_server: S3Server
) -> None:
    rooms = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in ("found", "missing", "tail", "nostart")}
    files = {
        # SeqNo 1 of "found" reached COS; no callback of it did.
        **{f"recordings/{spec_name(rooms['found'], s)}": b"audio" for s in (0, 1, 2)},
        # SeqNo 1 of "missing" never reached COS either.
        **{f"recordings/{seq_name(rooms['missing'], s)}": b"audio" for s in (0, 2)},
        # The last segment of "tail" (SeqNo 1) reached COS; no later SeqNo will ever reveal it.
        **{f"recordings/{spec_name(rooms['tail'], s)}": b"audio" for s in (0, 1)},
    }
    bucket = s3_server.bucket(f"unannounced-{uuid.uuid4().hex[:8]}", files)
    svc = cos_service(
        service_factory,
        s3_server,
        bucket,
        s3_server.url,
        GME_RECWATCH_COS_TAIL_QUIET_SECONDS="3",
        GME_RECWATCH_APPS_WITHOUT_START_CALLBACKS=str(OTHER_APP),
    )
    for seq in (0, 2):
        for event in (1, 2, 3):
            send(svc, event, rooms["found"], seq, spec_name(rooms["found"], seq))
            send(svc, event, rooms["missing"], seq, seq_name(rooms["missing"], seq))
    for event in (1, 2, 3):
        send(svc, event, rooms["tail"], 0, spec_name(rooms["tail"], 0))
    nostart_sent = time.monotonic()
    for seq in (0, 1):  # custom recording: completion status only, no start
        for event in (2, 3):
            send(
                svc,
                event,
                rooms["nostart"],
                seq,
                f"{OTHER_APP}_{rooms['nostart']}_u1/x_{TASK}_{seq}_audio.mp3",
                biz=OTHER_APP,
            )
    assert state_of(svc, rooms["found"], 1)["state"] == "expected"

    # The reorder window (8 s), the lookups, and the tail's quiet time (3 s), on a loaded machine.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = (
            state_of(svc, rooms["found"], 1)["state"] == "uploaded"
            and state_of(svc, rooms["missing"], 1)["state"] == "unannounced"
            and any(s["seq_no"] == 1 for s in segments(svc, room_id=rooms["tail"]))
        )
        if done:
            break
        time.sleep(0.5)
    found = state_of(svc, rooms["found"], 1)
    assert (found["state"], found["events_seen"], found["lost_events"]) == (
        "uploaded",
        [],
        ["started", "completed", "uploaded"],
    )
    missing = state_of(svc, rooms["missing"], 1)
    assert (missing["state"], missing["confirmed"], missing["deadline"]) == (
        "unannounced",
        True,
        "reorder_window_seconds",
    )
    assert missing["reason"].startswith("no callback at all within 8 s of a later SeqNo of its stream")
    assert missing["reason"].endswith("its file is not in COS")
    tail = state_of(svc, rooms["tail"], 1)
    assert (tail["state"], tail["lost_events"]) == ("uploaded", ["started", "completed", "uploaded"])

    # Counted: Tencent lost every callback of the two found; one recording is missing, confirmed
    # (a delivery error of the SLO); no page-worthy stuck or missing upload anywhere.
    app = str(BIZ_ID)
    assert svc.metric("gme_recording_unannounced_segments_total", app_id=app, result="found") == 1
    assert svc.metric("gme_recording_unannounced_segments_total", app_id=app, result="tail_found") == 1
    assert svc.metric("gme_recording_unannounced_segments_total", app_id=app, result="missing") == 1
    for event in ("started", "completed", "uploaded"):
        assert svc.metric("gme_recording_callbacks_lost_total", event_type=event) == 2
    assert svc.metric("gme_recording_problem_segments_total", state="unannounced", confirmed="true") == 1
    assert svc.metric("gme_recording_stuck_total") == 0
    assert svc.metric("gme_recording_tail_listings_total", result="found") == 1
    # Each unannounced lookup is one check, counted by what it said of that segment (a listing
    # that holds files of the task is not "found" for a segment whose file is not among them).
    assert svc.metric("gme_recording_reconcile_checks_total", result="found") == 1
    assert svc.metric("gme_recording_reconcile_checks_total", result="not_found") == 1
    lines = log_lines(svc)
    reconciled = [x for x in lines if x.get("event") == "segment_reconciled"]
    assert sorted((x["room_id"], x["seq_no"], x.get("unannounced")) for x in reconciled) == sorted(
        [(rooms["found"], 1, True), (rooms["tail"], 1, True)]
    )
    assert [x["room_id"] for x in lines if x.get("event") == "segment_unannounced"] == [rooms["missing"]]

    # The app without start callbacks: past its reorder window, no orphan and no start lost.
    time.sleep(max(0.0, nostart_sent + 8 + 2 - time.monotonic()))  # its window, and a sweep
    assert [s["state"] for s in segments(svc, room_id=rooms["nostart"])] == ["uploaded", "uploaded"]
    assert svc.metric("gme_recording_orphan_events_total") == 0
    assert svc.metric("gme_recording_tracked_segments", state="orphan") == 0


def test_the_simulated_sender_s_silent_segments_end_as_its_expectation_says(
    service_factory: Any, s3_server: S3Server
) -> None:
    """`gme-recwatch simulate --silent-fraction` loses every callback of some segments (a task's
    last among them) and still writes their files: the service, looking in the same bucket,
    finds in COS exactly the gaps and tails the simulator expects, and confirms the others
    missing."""
    bucket = f"silent-{uuid.uuid4().hex[:8]}"
    svc = cos_service(
        service_factory, s3_server, bucket, s3_server.url, GME_RECWATCH_COS_TAIL_QUIET_SECONDS="3"
    )
    summary = simulate(
        svc, s3_server, bucket, "--segments-per-task", "4", "--silent-fraction", "0.3", "--drop-fraction", "0"
    )
    assert summary["silent_segments"] > 0
    assert summary["expected_unannounced_found"] > 0 and summary["expected_tail_found"] > 0
    app = str(BIZ_ID)
    want = {
        "found": summary["expected_unannounced_found"],
        "tail_found": summary["expected_tail_found"],
        "missing": summary["expected_unannounced"],
    }
    deadline = time.monotonic() + 60  # the reorder window (8 s), the tails' quiet (3 s), lookups
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        got = {r: svc.metric("gme_recording_unannounced_segments_total", app_id=app, result=r) for r in want}
        if got == want:
            break
        time.sleep(0.5)
    assert got == want
    assert svc.metric("gme_recording_tracked_segments", state="unannounced") == summary["expected_unannounced"]
    for event, n in summary["expected_lost_callbacks"].items():
        assert svc.metric("gme_recording_callbacks_lost_total", event_type=event) == n, event
