"""The lifecycle state machine, with a fake clock: time moves, nothing sleeps."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gme_recwatch.events import Event
from gme_recwatch.tracker import FakeClock, Tracker, TrackerConfig, TrackerStats

CFG = TrackerConfig(max_recording_seconds=100, upload_grace_seconds=50, reorder_window_seconds=10,
                    retention_seconds=1000, max_segments=1000, max_apps=5)
BIZ = 1400000000
TASK = 446946705284000000


def ev(event_type: int, *, ts: int = 1_700_000_000, seq: int = 0, room: str = "r1",
       user: str = "u1", biz: int = BIZ, mode: int = 1, task: int = TASK) -> Event:
    return Event(biz_id=biz, room_id=room, user_id=user, task_id=task, seq_no=seq,
                 event_type=event_type, record_mode=mode, timestamp=ts)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> Tracker:
    return Tracker(CFG, clock)


def state_of(t: Tracker, seq: int = 0, room: str = "r1") -> str:
    views = [v for v in t.segments(room_id=room, limit=1000) if v.seq_no == seq]
    assert len(views) == 1
    return views[0].state


def assert_consistent(t: Tracker) -> None:
    """Every incrementally kept gauge equals a full recount of the tracked segments."""
    inc, full = t.stats(), t.recount()
    for name in ("active_recordings", "active_rooms", "stuck", "missing_uploads", "by_state",
                 "oldest_start"):
        assert getattr(inc, name) == getattr(full, name), name
    assert sum(inc.by_state.values()) == len(t)


def test_start_then_complete_then_upload_is_accepted_in_order(tracker: Tracker) -> None:
    results = [tracker.record(ev(e, ts=1000 + 10 * e)).result for e in (1, 2, 3)]
    assert results == ["accepted", "accepted", "accepted"]
    assert state_of(tracker) == "uploaded"
    assert_consistent(tracker)


def test_started_segment_is_recording_and_counts_an_active_room(tracker: Tracker) -> None:
    tracker.record(ev(1))
    s = tracker.stats()
    assert s.active_recordings[(str(BIZ), "mixed")] == 1
    assert s.active_rooms[str(BIZ)] == 1
    assert s.by_state["recording"] == 1


def test_duplicate_changes_nothing_but_its_counter(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1))
    before = tracker.stats()
    view_before = tracker.segments()[0]
    clock.advance(5)
    assert tracker.record(ev(1)).result == "duplicate"
    assert tracker.stats() == before
    assert tracker.segments()[0].expires_at == view_before.expires_at + 0  # TTL not refreshed
    assert tracker.segments()[0].first_received_at == view_before.first_received_at


def test_upload_before_start_is_counted_out_of_order(tracker: Tracker) -> None:
    assert tracker.record(ev(3)).result == "accepted"  # nothing to be out of order with yet
    assert tracker.record(ev(1)).result == "out_of_order"
    assert tracker.record(ev(2)).result == "out_of_order"
    assert state_of(tracker) == "uploaded"
    assert_consistent(tracker)


def test_recording_past_maximum_duration_becomes_stuck(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1))
    clock.advance(99)
    assert tracker.sweep() == []
    assert state_of(tracker) == "recording"
    clock.advance(1.5)
    moved = tracker.sweep()
    assert [(m.state, m.room_id, m.task_id) for m in moved] == [("stuck", "r1", TASK)]
    s = tracker.stats()
    assert s.stuck[str(BIZ)] == 1 and s.stuck_total[str(BIZ)] == 1
    assert s.active_recordings[(str(BIZ), "mixed")] == 1  # still recording, as far as we know
    assert_consistent(tracker)


def test_completion_of_stuck_segment_is_late_and_it_continues(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1, ts=1000))
    clock.advance(150)
    tracker.sweep()
    out = tracker.record(ev(2, ts=1150))
    assert out.result == "late" and out.duration == 150
    s = tracker.stats()
    assert s.stuck[str(BIZ)] == 0 and s.stuck_total[str(BIZ)] == 1
    assert state_of(tracker) == "completed"
    assert_consistent(tracker)


def test_completed_without_upload_within_grace_is_upload_missing(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1))
    tracker.record(ev(2))
    clock.advance(49)
    tracker.sweep()
    assert state_of(tracker) == "completed"
    clock.advance(2)
    assert [m.state for m in tracker.sweep()] == ["upload_missing"]
    s = tracker.stats()
    assert s.missing_uploads[str(BIZ)] == 1 and s.missing_uploads_total[str(BIZ)] == 1
    assert s.completed_total[str(BIZ)] == 1
    assert tracker.record(ev(3)).result == "late"
    assert tracker.stats().missing_uploads[str(BIZ)] == 0
    assert state_of(tracker) == "uploaded"
    assert_consistent(tracker)


def test_completion_whose_start_never_arrives_is_an_orphan(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(2))
    clock.advance(9)
    tracker.sweep()
    assert state_of(tracker) == "completed"
    assert tracker.stats().orphan_events == {"completed": 0, "uploaded": 0}
    clock.advance(2)
    assert [m.state for m in tracker.sweep()] == ["orphan"]
    assert tracker.stats().orphan_events == {"completed": 1, "uploaded": 0}
    assert tracker.record(ev(1)).result == "late"
    assert state_of(tracker) == "completed"
    assert_consistent(tracker)


def test_orphan_completion_still_alerts_on_its_missing_upload(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(2))
    clock.advance(51)
    tracker.sweep()
    assert state_of(tracker) == "upload_missing"
    assert tracker.stats().orphan_events["completed"] == 1


def test_upload_whose_start_never_arrives_is_an_orphan(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(3))
    clock.advance(11)
    tracker.sweep()
    assert state_of(tracker) == "orphan"
    assert tracker.stats().orphan_events == {"completed": 0, "uploaded": 1}


def test_start_within_reorder_window_is_not_an_orphan(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(3))
    clock.advance(5)
    assert tracker.record(ev(1)).result == "out_of_order"
    clock.advance(100)
    tracker.sweep()
    assert state_of(tracker) == "uploaded"
    assert tracker.stats().orphan_events == {"completed": 0, "uploaded": 0}


def test_durations_come_from_sender_timestamps(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1, ts=1000))
    clock.advance(3)  # our clock's gap must not matter
    out = tracker.record(ev(2, ts=1300))
    assert out.duration == 300.0
    assert tracker.record(ev(3, ts=1312)).upload_delay == 12.0


def test_durations_are_measured_whatever_the_arrival_order(tracker: Tracker) -> None:
    assert tracker.record(ev(3, ts=1312)).upload_delay is None
    assert tracker.record(ev(2, ts=1300)).upload_delay == 12.0
    assert tracker.record(ev(1, ts=1000)).duration == 300.0


def test_segments_expire_after_retention_and_are_counted(tracker: Tracker, clock: FakeClock) -> None:
    for e in (1, 2, 3):
        tracker.record(ev(e))
    tracker.record(ev(1, seq=1))
    clock.advance(1001)
    tracker.sweep()
    assert len(tracker) == 0
    s = tracker.stats()
    assert s.evictions[("ttl", "uploaded")] == 1 and s.evictions[("ttl", "stuck")] == 1
    assert s.active_rooms[str(BIZ)] == 0
    assert_consistent(tracker)


def test_retention_counts_from_the_last_event(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1))
    clock.advance(900)
    tracker.record(ev(2))
    clock.advance(900)
    tracker.sweep()
    assert len(tracker) == 1


def test_capacity_evicts_terminal_segments_first(clock: FakeClock) -> None:
    t = Tracker(TrackerConfig(max_segments=3, retention_seconds=10_000), clock)
    t.record(ev(1, seq=0))                    # oldest, live
    for e in (1, 2, 3):
        t.record(ev(e, seq=1))                # terminal
    t.record(ev(1, seq=2))
    t.record(ev(1, seq=3))                    # over capacity: the terminal one goes
    assert len(t) == 3
    assert sorted(v.seq_no for v in t.segments()) == [0, 2, 3]
    assert t.stats().evictions[("capacity", "uploaded")] == 1
    t.record(ev(1, seq=4))                    # no terminal left: the oldest goes
    assert sorted(v.seq_no for v in t.segments()) == [2, 3, 4]
    assert t.stats().evictions[("capacity", "recording")] == 1
    assert_consistent(t)


def test_app_labels_are_bounded_and_overflow_is_other(clock: FakeClock) -> None:
    t = Tracker(TrackerConfig(max_apps=2), clock)
    for biz in (1, 2, 3, 4):
        t.record(ev(1, biz=biz))
    s = t.stats()
    assert s.app_labels == ["1", "2", "other"]
    assert s.active_recordings[("other", "mixed")] == 2
    assert s.app_overflow == 2
    assert_consistent(t)


def test_active_rooms_count_rooms_not_segments(tracker: Tracker) -> None:
    tracker.record(ev(1, user="a"))
    tracker.record(ev(1, user="b"))
    tracker.record(ev(1, room="r2"))
    assert tracker.stats().active_rooms[str(BIZ)] == 2
    tracker.record(ev(2, user="a"))
    assert tracker.stats().active_rooms[str(BIZ)] == 2
    tracker.record(ev(2, user="b"))
    assert tracker.stats().active_rooms[str(BIZ)] == 1
    assert_consistent(tracker)


def test_oldest_recording_start_follows_the_oldest_live_segment(tracker: Tracker) -> None:
    tracker.record(ev(1, seq=0, ts=500))
    tracker.record(ev(1, seq=1, ts=700))
    assert tracker.stats().oldest_start[str(BIZ)] == 500
    tracker.record(ev(2, seq=0, ts=800))
    assert tracker.stats().oldest_start[str(BIZ)] == 700
    tracker.record(ev(2, seq=1, ts=900))
    assert tracker.stats().oldest_start[str(BIZ)] == 0


def test_record_mode_single_and_unknown_are_separate_label_values(tracker: Tracker) -> None:
    tracker.record(ev(1, mode=0, seq=0))
    tracker.record(ev(1, mode=7, seq=1))
    s = tracker.stats()
    assert s.active_recordings[(str(BIZ), "single")] == 1
    assert s.active_recordings[(str(BIZ), "unknown")] == 1


def test_snapshot_restores_state_and_deadlines_keep_running(clock: FakeClock) -> None:
    t = Tracker(CFG, clock)
    t.record(ev(1, seq=0))
    t.record(ev(2, seq=1))
    for e in (1, 2, 3):
        t.record(ev(e, seq=2))
    data = t.snapshot()
    clock.advance(30)  # "down" for 30 s: past the reorder window, short of grace and stuck
    t2 = Tracker(CFG, clock)
    assert t2.restore(data) == 3
    assert {v.seq_no: v.state for v in t2.segments()} == {0: "recording", 1: "orphan", 2: "uploaded"}
    assert_consistent(t2)
    clock.advance(71)
    t2.sweep()
    assert {v.seq_no: v.state for v in t2.segments()} == {0: "stuck", 1: "upload_missing", 2: "uploaded"}
    assert t2.segments()[0].task_id == TASK


@pytest.mark.parametrize("junk", [b"", b"not msgpack", b"\x93\x01\x02\x03", b"\xc1" * 10])
def test_corrupt_snapshot_is_refused_and_leaves_tracker_empty(junk: bytes, tracker: Tracker) -> None:
    with pytest.raises(ValueError):
        tracker.restore(junk)
    assert len(tracker) == 0


def test_segments_api_filters_and_orders_oldest_first(tracker: Tracker, clock: FakeClock) -> None:
    tracker.record(ev(1, room="a", seq=0))
    clock.advance(1)
    tracker.record(ev(1, room="b", seq=0))
    clock.advance(1)
    tracker.record(ev(2, room="a", seq=1))
    assert [v.room_id for v in tracker.segments()] == ["a", "b", "a"]
    assert [v.seq_no for v in tracker.segments(room_id="a")] == [0, 1]
    assert [v.room_id for v in tracker.segments(state="completed")] == ["a"]
    assert len(tracker.segments(limit=1)) == 1
    assert tracker.segments(app_id="999") == []


# ------------------------------------------------------------------ properties

EVENT_LISTS = st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=8)


def _final(events: list[int], gap: float) -> tuple[str, TrackerStats]:
    clock = FakeClock()
    t = Tracker(CFG, clock)
    for e in events:
        t.record(ev(e, ts=1000 + e))
        clock.advance(gap)
    clock.advance(1)  # let the sweep see what the clock says now
    t.sweep()
    assert_consistent(t)
    return t.segments()[0].state, t.stats()


@settings(max_examples=300, deadline=None)
@given(events=EVENT_LISTS, data=st.data())
def test_any_order_with_duplicates_ends_in_the_same_state(events: list[int], data: st.DataObject) -> None:
    """Permuting and duplicating a segment's events never changes where it ends up."""
    shuffled = data.draw(st.permutations(events))
    extra = data.draw(st.lists(st.sampled_from(sorted(set(events))), max_size=4))
    state_a, stats_a = _final(list(events), gap=0.5)
    state_b, stats_b = _final(list(shuffled) + extra, gap=0.5)
    assert state_a == state_b
    assert stats_a.by_state == stats_b.by_state
    assert stats_a.completed_total == stats_b.completed_total


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 5), st.integers(0, 3),
                              st.sampled_from(["ra", "rb", "rc"]), st.floats(0, 60)),
                    max_size=60),
       capacity=st.integers(2, 12))
def test_gauges_always_equal_a_recount(ops: list[tuple[int, int, int, str, float]], capacity: int) -> None:
    """Across events, deadlines, TTL expiry and capacity eviction, tallies never drift."""
    clock = FakeClock()
    t = Tracker(TrackerConfig(max_recording_seconds=100, upload_grace_seconds=50,
                              reorder_window_seconds=10, retention_seconds=200,
                              max_segments=capacity, max_apps=2), clock)
    for event_type, seq, biz, room, dt in ops:
        t.record(ev(event_type, seq=seq, biz=biz, room=room))
        clock.advance(dt)
        t.sweep()
        assert len(t) <= capacity
        assert_consistent(t)


def test_every_state_is_reachable_in_the_property_space() -> None:
    """Guard for the property above: the configured deadlines do produce every state."""
    seen = set()
    for events in itertools.product([1, 2, 3], repeat=2):
        for gap in (0.5, 60, 150):
            seen.add(_final(list(events), gap)[0])
    assert seen == {"recording", "completed", "uploaded", "stuck", "upload_missing", "orphan"}


def test_budgeted_sweep_works_in_rounds_and_loses_nothing(clock: FakeClock) -> None:
    t = Tracker(CFG, clock)
    for seq in range(25):
        t.record(ev(1, seq=seq))
    clock.advance(101)
    assert t.has_due()
    rounds = []
    while t.has_due():
        rounds.append(len(t.sweep(budget=10)))
    assert rounds == [10, 10, 5]
    assert t.stats().stuck[str(BIZ)] == 25
    assert_consistent(t)


def test_oldest_start_ignores_a_reused_slot(clock: FakeClock) -> None:
    t = Tracker(TrackerConfig(max_segments=2, retention_seconds=10_000), clock)
    t.record(ev(1, seq=0, ts=100))
    t.record(ev(1, seq=1, ts=200))
    t.record(ev(1, seq=2, ts=300))  # evicts seq 0 (oldest); its slot is reused
    assert t.stats().oldest_start[str(BIZ)] == 200
    assert_consistent(t)


def test_timer_wheel_stays_proportional_to_segments_under_a_flood(clock: FakeClock) -> None:
    """Stale wheel entries (evicted segments, moved deadlines) are compacted away."""
    t = Tracker(TrackerConfig(max_segments=100, retention_seconds=10_000), clock)
    for seq in range(20_000):
        t.record(ev(1, seq=seq))
    assert len(t) == 100
    assert t._bucket_entries <= 2 * len(t) + 1024
    assert sum(len(b) for b in t._buckets.values()) == t._bucket_entries
    clock.advance(30_000)
    t.sweep()
    assert len(t) == 0 and not t._buckets
    assert_consistent(t)


def test_snapshot_with_freed_slots_restores_only_live_segments(clock: FakeClock) -> None:
    t = Tracker(CFG, clock)
    for seq in range(6):
        t.record(ev(1, seq=seq))
    clock.advance(500)
    t.record(ev(2, seq=4))          # seq 4 keeps living; the rest expire
    clock.advance(600)
    t.sweep()
    assert len(t) == 1
    t.record(ev(3, seq=9))          # reuses a freed slot
    t2 = Tracker(CFG, clock)
    assert t2.restore(t.snapshot()) == 2
    assert sorted((v.seq_no, v.state) for v in t2.segments()) == [(4, "upload_missing"), (9, "uploaded")]
    assert_consistent(t2)
