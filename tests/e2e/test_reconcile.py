"""Reconciliation end to end: the real service with a COS bucket (moto's S3 server), the
simulated sender writing its recordings to that bucket and losing callbacks on the way, as a
user would run both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import FailingProxy, S3Server

from .conftest import RunningService

# Room for a sender up to 7.8 s behind its plan (its longest planned interval is 35/200 s): the
# simulator's expectation is compared with what the service did, segment state by state.
DEADLINES = {
    "GME_RECWATCH_MAX_RECORDING_SECONDS": "10",
    "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "8",
    "GME_RECWATCH_REORDER_WINDOW_SECONDS": "8",
    "GME_RECWATCH_LOG_LEVEL": "info",
}
PROBLEMS = ("segment_stuck", "segment_upload_missing")


def log_lines(svc: RunningService) -> list[dict[str, Any]]:
    out = []
    for line in svc.logs().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def cos_service(
    service_factory: Any, s3_server: S3Server, bucket: str, endpoint: str, **env: str
) -> RunningService:
    """The service looking its files up in ``bucket`` at ``endpoint`` (moto, or a proxy)."""
    reader_id, reader_key = s3_server.keys["reader"]
    svc: RunningService = service_factory(
        **DEADLINES,
        GME_RECWATCH_COS_BUCKET=bucket,
        GME_RECWATCH_COS_REGION=s3_server.REGION,
        GME_RECWATCH_COS_ENDPOINT=endpoint,
        TENCENTCLOUD_SECRET_ID=reader_id,
        TENCENTCLOUD_SECRET_KEY=reader_key,
        GME_RECWATCH_COS_KEY_TEMPLATE="recordings/{file_name}",
        **env,
    )
    return svc


def simulate(svc: RunningService, s3_server: S3Server, bucket: str, *extra: str) -> dict[str, Any]:
    """The simulated sender: callbacks to the service (a quarter lost), files to the bucket;
    ``extra`` flags last (they win)."""
    writer_id, writer_key = s3_server.keys["writer"]
    exe = str(Path(sys.executable).with_name("gme-recwatch"))
    env = {**os.environ, "TENCENTCLOUD_SECRET_ID": writer_id, "TENCENTCLOUD_SECRET_KEY": writer_key}
    r = subprocess.run(
        [
            exe,
            "simulate",
            "--url",
            svc.callback_url,
            "--secret",
            svc.secret,
            "--rooms",
            "8",
            "--time-scale",
            "200",
            "--spread",
            "5",
            "--duration-min",
            "2",
            "--duration-max",
            "5",
            "--drop-fraction",
            "0.25",
            "--never-upload-fraction",
            "0.15",
            "--never-complete-fraction",
            "0.1",
            "--seed",
            "5",
            "--bad-signature-fraction",
            "0",
            "--retry-seconds",
            "2",
            "--s3-endpoint",
            s3_server.url,
            "--s3-bucket",
            bucket,
            "--s3-create-bucket",
            "--s3-key-template",
            "recordings/{file_name}",
            "--expected-file",
            "",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    summary: dict[str, Any] = json.loads(r.stdout)
    assert summary["max_lateness_seconds"] < 7.8, "the sender fell too far behind its plan"
    return summary


def test_files_whose_callbacks_were_lost_are_found_in_cos_and_only_missing_files_are_paged(
    service_factory: Any, s3_server: S3Server
) -> None:
    """Every segment that would have been paged was looked up first: those whose file is in the
    bucket are reconciled (counted as lost callbacks, never paged), the rest are paged with
    ``confirmed=true`` -- and which is which agrees with the bucket's contents."""
    bucket = f"rec-e2e-{uuid.uuid4().hex[:8]}"
    svc = cos_service(service_factory, s3_server, bucket, s3_server.url)
    summary = simulate(svc, s3_server, bucket)
    in_bucket = set(s3_server.keys_of(bucket))
    assert summary["uploaded_files_without_callback"] > 0

    # Past every deadline (10 s) and a few lookup rounds, nothing waits for a lookup any more and
    # every problem the simulator expects has been reported (a moment with nothing pending may
    # fall between the missing uploads' lookups and the stuck segments' deadlines).
    ends = summary["expected_end_states"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reported = svc.metric("gme_recording_stuck_total") + svc.metric("gme_recording_missing_uploads_total")
        if (
            svc.metric("gme_recording_reconcile_pending") == 0
            and reported >= ends["stuck"] + ends["upload_missing"]
            and svc.metric("gme_recording_segments_reconciled_total") >= summary["expected_reconciled"]
        ):
            time.sleep(1.5)  # one more sweep: nothing new may be held after this
            if svc.metric("gme_recording_reconcile_pending") == 0:
                break
        time.sleep(0.5)
    lines = log_lines(svc)
    reconciled = [x for x in lines if x.get("event") == "segment_reconciled"]
    problems = [x for x in lines if x.get("event") in PROBLEMS]

    # Found: the file is in the bucket, the upload callback (at least) was lost, nobody paged.
    assert 0 < len(reconciled) <= summary["uploaded_files_without_callback"]
    assert {x["object_key"] for x in reconciled} <= in_bucket
    assert all("uploaded" in x["lost_callbacks"] for x in reconciled)
    assert all({"biz_id", "room_id", "user_id", "task_id", "seq_no"} <= x.keys() for x in reconciled)
    assert svc.metric("gme_recording_callbacks_lost_total", event_type="uploaded") == len(reconciled)
    assert svc.metric("gme_recording_segments_reconciled_total") == len(reconciled)
    # Not found: paged, confirmed, and really not in the bucket.
    assert problems, "the plan abandons segments: some must be paged"
    assert all(x["confirmed"] is True for x in problems)
    assert not {x["object_key"] for x in problems} & in_bucket
    assert (svc.metric("gme_recording_stuck_total") + svc.metric("gme_recording_missing_uploads_total")) == len(
        problems
    )
    assert svc.metric("gme_recording_reconcile_checks_total", result="error") == 0
    assert svc.metric("gme_recording_reconcile_checks_total") == len(reconciled) + len(problems)
    # The API says the same.
    stuck = [s for state in ("stuck", "upload_missing") for s in svc_segments(svc, state)]
    assert stuck and all(s["confirmed"] is True for s in stuck)
    assert s3_server.keys["reader"][1] not in svc.logs()
    # The simulator expected exactly this of a service looking files up in its bucket.
    assert summary["expected_reconciled"] == len(reconciled)
    assert (ends["stuck"], ends["upload_missing"]) == (
        svc.metric("gme_recording_stuck_total"),
        svc.metric("gme_recording_missing_uploads_total"),
    )


def svc_segments(svc: RunningService, state: str) -> list[dict[str, Any]]:
    import httpx

    got = httpx.get(
        svc.admin_url + "/api/v1/segments", params={"state": state, "limit": 1000}, timeout=5
    ).json()
    return list(got["segments"])


def test_after_a_cos_outage_every_failed_lookup_is_retried_until_cos_answers(
    service_factory: Any, s3_server: S3Server
) -> None:
    """COS throttles every lookup (503) while the segments fall due, then recovers: meanwhile
    every problem stands unconfirmed (never paged, nothing reconciled); afterwards the retries
    end each one as the bucket says -- uploaded if its file is there, confirmed missing if not."""
    bucket = f"rec-e2e-{uuid.uuid4().hex[:8]}"
    proxy = FailingProxy(s3_server.url)
    try:
        svc = cos_service(
            service_factory,
            s3_server,
            bucket,
            proxy.url,
            GME_RECWATCH_COS_RETRY_MIN_SECONDS="1",
            GME_RECWATCH_COS_RETRY_MAX_SECONDS="3",
        )
        summary = simulate(svc, s3_server, bucket)
        ends = summary["expected_end_states"]
        missing = ends["stuck"] + ends["upload_missing"]
        looked_up = summary["expected_reconciled"] + missing
        assert summary["expected_reconciled"] > 0 and missing > 0

        def lines(event: str, **match: Any) -> list[dict[str, Any]]:
            return [x for x in svc.log_events(event) if all(x.get(k) == v for k, v in match.items())]

        def unconfirmed() -> list[dict[str, Any]]:
            return [x for e in PROBLEMS for x in lines(e, confirmed=False)]

        # The outage: every segment past its deadline stands unconfirmed, and waits for a retry.
        deadline = time.monotonic() + 60
        while len(unconfirmed()) < looked_up and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(unconfirmed()) == looked_up
        assert lines("segment_reconciled") == []
        assert [x for e in PROBLEMS for x in lines(e, confirmed=True)] == []
        time.sleep(4)  # a few retries, failed too
        retries_in_outage = svc.metric("gme_recording_reconcile_retries_total")
        assert retries_in_outage > looked_up
        assert svc.metric("gme_recording_reconcile_checks_total", result="error") >= retries_in_outage
        assert svc.metric("gme_recording_problem_segments_total", confirmed="true") == 0  # no page

        proxy.failing = False  # COS recovers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (
                len(lines("segment_reconciled")) == summary["expected_reconciled"]
                and len([x for e in PROBLEMS for x in lines(e, confirmed=True)]) == missing
            ):
                break
            time.sleep(0.5)
        time.sleep(4)  # past the longest wait: nothing more may change
        in_bucket = set(s3_server.keys_of(bucket))
        reconciled = lines("segment_reconciled")
        confirmed = [x for e in PROBLEMS for x in lines(e, confirmed=True)]
        assert len(reconciled) == summary["expected_reconciled"]
        assert {x["object_key"] for x in reconciled} <= in_bucket
        assert len(confirmed) == missing
        assert not {x["object_key"] for x in confirmed} & in_bucket
        # Every unconfirmed one ended one way or the other, each once.
        keys = [(x["room_id"], x["seq_no"]) for x in [*reconciled, *confirmed]]
        assert sorted(keys) == sorted((x["room_id"], x["seq_no"]) for x in unconfirmed())
        assert svc.metric("gme_recording_segments_reconciled_total") == len(reconciled)
        assert svc.metric("gme_recording_problem_segments_total", confirmed="true") == missing
        assert (
            svc.metric("gme_recording_stuck_recordings") + svc.metric("gme_recording_uploads_missing")
        ) == missing
        assert svc.metric("gme_recording_reconcile_checks_total", result="found") == len(reconciled)
        assert svc.metric("gme_recording_reconcile_checks_total", result="not_found") == missing
        stuck = [s for state in ("stuck", "upload_missing") for s in svc_segments(svc, state)]
        assert len(stuck) == missing and all(s["confirmed"] is True for s in stuck)
        assert proxy.failed > 0 and proxy.forwarded >= looked_up
    finally:
        proxy.stop()
