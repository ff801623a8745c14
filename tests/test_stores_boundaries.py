"""Every deadline in every store, just before, exactly at and just after its time.

A deadline is reached *at* its time (``now >= deadline``); retention runs out at its time too
(``expires <= now``). The conformance suite (test_stores.py) crosses each deadline by whole
seconds; these pin the boundary itself, so that a ``>=`` turned into ``>`` in either copy of the
rules (lifecycle.py, redis_lifecycle.lua) fails a test. Each read is one sweep round, as the
service runs it: a segment left due makes ``more`` true.

The times: the fake clock starts at whole seconds and deadlines are whole seconds later, so
"exactly at" is exact in both stores; "just before" is a millisecond short, far above the float
resolution of the Redis store's Unix times (~2e-7 s near 1.7e9; see test_stores.py).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import test_stores
from conftest import SyncStore
from test_stores import BIZ, CFG, Make, ev, mark_blind, state_of

from gme_recwatch.clock import FakeClock

# The conformance suite's fixtures: each store, empty, on a fake clock.
backend, make, clock, store = test_stores.backend, test_stores.make, test_stores.clock, test_stores.store
EPS = 1e-3
APP = str(BIZ)
SIDES = pytest.mark.parametrize("offset", [-EPS, 0.0, EPS], ids=["before", "at", "after"])


def one_round(t: SyncStore) -> list[str]:
    """One sweep round: the states entered. Nothing may be left due."""
    done = t.sweep_round(1000)
    assert not done.more, "a segment was left due after the sweep handled it"
    return [m.state for m in done.transitions]


@SIDES
def test_a_recording_is_stuck_exactly_at_the_maximum_duration(
    store: SyncStore, clock: FakeClock, offset: float
) -> None:
    store.record(ev(1))
    clock.advance(CFG.max_recording_seconds + offset)
    reached = offset >= 0
    assert one_round(store) == (["stuck"] if reached else [])
    assert state_of(store) == ("stuck" if reached else "recording")
    s = store.stats()
    assert (s.stuck[APP], s.stuck_total[APP]) == (int(reached), int(reached))


@SIDES
def test_an_upload_is_missing_exactly_at_the_upload_grace(
    store: SyncStore, clock: FakeClock, offset: float
) -> None:
    store.record(ev(1))
    clock.advance(20)  # the grace runs from the completion, not the start
    store.record(ev(2))
    clock.advance(CFG.upload_grace_seconds + offset)
    reached = offset >= 0
    assert one_round(store) == (["upload_missing"] if reached else [])
    assert state_of(store) == ("upload_missing" if reached else "completed")
    s = store.stats()
    assert (s.missing_uploads[APP], s.missing_uploads_total[APP]) == (int(reached), int(reached))


@SIDES
@pytest.mark.parametrize(
    ("events", "deadline"), [((1,), "max_recording_seconds"), ((1, 2), "upload_grace_seconds")]
)
def test_a_segment_live_in_a_blind_window_is_unverified_exactly_at_its_deadline(
    store: SyncStore, clock: FakeClock, offset: float, events: tuple[int, ...], deadline: str
) -> None:
    for e in events:
        store.record(ev(e))
    assert mark_blind(store) == 1  # recording, or awaiting its upload: both were live
    clock.advance(getattr(CFG, deadline) + offset)
    reached = offset >= 0
    assert one_round(store) == (["unverified"] if reached else [])
    s = store.stats()
    assert (s.by_state["unverified"], s.stuck[APP], s.missing_uploads[APP]) == (reached, 0, 0)


@SIDES
@pytest.mark.parametrize(("event", "before"), [(2, "completed"), (3, "uploaded")])
def test_the_start_is_lost_exactly_at_the_reorder_window(
    store: SyncStore, clock: FakeClock, offset: float, event: int, before: str
) -> None:
    store.record(ev(event))
    clock.advance(CFG.reorder_window_seconds + offset)
    reached = offset >= 0
    assert one_round(store) == (["orphan"] if reached else [])
    assert state_of(store) == ("orphan" if reached else before)
    lost = {"completed": 0, "uploaded": 0}
    lost[before] = int(reached)  # counted by the settle at the window, once
    assert store.stats().orphan_events == lost
    clock.advance(100)
    one_round(store)
    assert store.stats().orphan_events == lost | {before: 1}


@SIDES
@pytest.mark.parametrize("events", [(1,), (1, 2, 3)], ids=["recording", "uploaded"])
def test_a_segment_is_forgotten_exactly_when_its_retention_runs_out(
    make: Make, clock: FakeClock, offset: float, events: tuple[int, ...]
) -> None:
    # A maximum duration past the retention, so a recording is forgotten recording (settings
    # refuse this; the stores must still obey each deadline on its own).
    t = make(replace(CFG, max_recording_seconds=5000), clock)
    for e in events:
        t.record(ev(e))
    clock.advance(CFG.retention_seconds + offset)
    reached = offset >= 0
    assert one_round(t) == []
    assert len(t) == (0 if reached else 1)
    state = "uploaded" if len(events) == 3 else "recording"
    assert t.stats().evictions[("ttl", state)] == int(reached)


def test_retention_counts_from_the_last_event_to_the_boundary(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    clock.advance(900)
    store.record(ev(2))
    clock.advance(CFG.retention_seconds - EPS)
    one_round(store)
    assert len(store) == 1
    clock.advance(EPS)
    one_round(store)
    assert len(store) == 0


# ------------------------------------------------------------------ #19.3: the spinning sweep

SHORT_GRACE = replace(CFG, upload_grace_seconds=5, reorder_window_seconds=60)


def test_a_completion_without_a_start_is_never_left_due_when_the_grace_is_shorter_than_the_window(
    make: Make, clock: FakeClock
) -> None:
    """The upload grace runs out inside the reorder window: the upload is missing then, and the
    segment is next looked at when the window ends (its start is lost), never before. The old
    rule gave it a next change already past, so every sweep round found it due again: the
    full sweep below fails after the test round cap instead of returning."""
    t = make(SHORT_GRACE, clock)
    t.record(ev(2))
    clock.advance(6)
    assert [m.state for m in t.sweep()] == ["upload_missing"]
    assert one_round(t) == []
    (v,) = t.segments()
    assert v.state == "upload_missing"
    assert v.next_deadline_at == pytest.approx(v.first_received_at + 60)
    assert t.stats().orphan_events["completed"] == 0
    clock.advance(54)
    assert one_round(t) == []  # already a problem: the lost start is counted, nothing entered
    assert t.stats().orphan_events["completed"] == 1
    assert state_of(t) == "upload_missing"
    assert t.stats().missing_uploads_total[APP] == 1


def test_a_start_within_the_window_after_the_short_grace_is_late_and_the_upload_still_missing(
    make: Make, clock: FakeClock
) -> None:
    t = make(SHORT_GRACE, clock)
    t.record(ev(2))
    clock.advance(6)
    t.sweep()
    assert t.record(ev(1)).result == "late"
    assert state_of(t) == "upload_missing"
    clock.advance(60)
    assert one_round(t) == []
    assert t.stats().orphan_events["completed"] == 0  # the start came
