"""The simulated Tencent sender against the real service: the metrics agree with what was sent."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from gme_recwatch.simulate import SenderConfig, SimConfig, Summary, make_plan, run

from .conftest import RunningService

# Deadlines short enough to pass during the test, long enough that no genuine segment
# (at most 1.5 s of recording here) and no reordered event (at most 0.05 s late) reaches one.
DEADLINES = {
    "GME_RECWATCH_MAX_RECORDING_SECONDS": "4",
    "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "3",
    "GME_RECWATCH_REORDER_WINDOW_SECONDS": "3",
    "GME_RECWATCH_LOG_LEVEL": "info",
}

DISORDERLY = SimConfig(
    rooms=40, users_per_room=3, segments_per_task=2, mixed_fraction=0.3, rate=400, spread=150,
    duration_min=30, duration_max=150, upload_delay_min=5, upload_delay_max=40, time_scale=100,
    reorder_fraction=0.3, reorder_delay=5, duplicate_fraction=0.15, duplicate_delay=30,
    drop_fraction=0.1, never_complete_fraction=0.08, never_upload_fraction=0.08,
    bad_signature_fraction=0.05, seed=7,
)


def samples(svc: RunningService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(svc.metrics_text()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in m.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def expected_metrics(s: Summary) -> dict[str, float]:
    want: dict[str, float] = {}
    for et, c in s.events.items():
        want[f"distinct {et}"] = c.delivered
        want[f"duplicate {et}"] = c.duplicates
    want["signature mismatch"] = s.bad_signature_requests
    for state in ("recording", "completed"):
        want[f"tracked {state}"] = 0
    for state, n in s.expected_end_states.items():
        want[f"tracked {state}"] = n
    want["stuck_total"] = s.expected_end_states["stuck"]
    want["missing_uploads_total"] = s.expected_end_states["upload_missing"]
    want["orphan_events_total"] = s.orphan_segments
    want["segments_completed_total"] = s.completed_segments
    return want


def observed_metrics(svc: RunningService) -> dict[str, float]:
    m = samples(svc)
    got: dict[str, float] = {}
    for et in ("started", "completed", "uploaded"):
        got[f"distinct {et}"] = sum(
            total(m, "gme_recording_callbacks_total", event_type=et, result=r)
            for r in ("accepted", "out_of_order", "late"))
        got[f"duplicate {et}"] = total(m, "gme_recording_callbacks_total", event_type=et,
                                       result="duplicate")
    got["signature mismatch"] = total(m, "gme_recording_signature_failures_total", reason="mismatch")
    for state in ("recording", "completed", "uploaded", "stuck", "upload_missing", "orphan"):
        got[f"tracked {state}"] = total(m, "gme_recording_tracked_segments", state=state)
    got["stuck_total"] = total(m, "gme_recording_stuck_total")
    got["missing_uploads_total"] = total(m, "gme_recording_missing_uploads_total")
    got["orphan_events_total"] = total(m, "gme_recording_orphan_events_total")
    got["segments_completed_total"] = total(m, "gme_recording_segments_completed_total")
    return got


def test_service_counts_exactly_what_the_simulated_sender_delivered(service_factory) -> None:
    """Disorder, duplicates, drops, bad signatures and abandoned segments: nothing lost, nothing
    double-counted, and every segment ends in the state its delivered events imply."""
    svc: RunningService = service_factory(**DEADLINES)
    plan = make_plan(DISORDERLY)
    sender = SenderConfig(url=svc.callback_url, secret=svc.secret, timeout=5, retry_seconds=5,
                          backoff=0.2, concurrency=32)
    summary = asyncio.run(run(plan, sender))

    # The plan really exercises every kind of trouble, and the wire was clean.
    assert summary.transport_errors == summary.timeouts == summary.retries == 0
    assert all(c.undelivered == 0 for c in summary.events.values())
    assert summary.reordered_segments > 0 and summary.bad_signature_requests > 0
    assert all(c.duplicates > 0 and c.dropped > 0 for c in summary.events.values())
    assert all(n > 0 for n in summary.expected_end_states.values())
    assert summary.statuses == {"200": summary.requests - summary.bad_signature_requests,
                                "401": summary.bad_signature_requests}

    # Request counters are final as soon as the last answer arrived.
    got = observed_metrics(svc)
    want = expected_metrics(summary)
    for key in [k for k in want if k.startswith(("distinct", "duplicate", "signature"))]:
        assert got[key] == want[key], (key, got[key], want[key])

    # Deadline outcomes need the sweep to pass the longest deadline (4 s) plus a round.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = observed_metrics(svc)
        if got == want:
            break
        time.sleep(0.5)
    assert got == want
    assert "internal_error" not in svc.logs()
