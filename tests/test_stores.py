"""The conformance suite: every store obeys the lifecycle rules the same way.

Each test runs against every backend (``backend`` fixture), with a fake clock: time moves,
nothing sleeps. What only one store has (snapshots, its internal bounds) is tested in that
store's own module.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import msgspec
import pytest
from conftest import SyncStore
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gme_recwatch import lifecycle
from gme_recwatch.clock import FakeClock
from gme_recwatch.events import Event
from gme_recwatch.lifecycle import (
    SEEN_BIT,
    STATE_NAMES,
    Backoff,
    Claim,
    Config,
    Reconciled,
    Retrying,
    State,
    Transition,
    classify,
    derive_state,
    key_of,
)
from gme_recwatch.settings import Settings
from gme_recwatch.stores import CheckNote, MemoryStore, SegmentView, StoreStats
from gme_recwatch.stores.redis import RedisStore

DEFAULTS = Settings().lifecycle()
CFG = replace(
    DEFAULTS,
    max_recording_seconds=100,
    upload_grace_seconds=50,
    reorder_window_seconds=10,
    retention_seconds=1000,
    max_segments=1000,
    max_apps=5,
)
BIZ = 1400000000
TASK = 446946705284000000
BACKENDS = ["memory", "redis"]

Make = Callable[..., SyncStore]


def ev(
    event_type: int,
    *,
    ts: int = 1_700_000_000,
    seq: int = 0,
    room: str = "r1",
    user: str = "u1",
    biz: int = BIZ,
    mode: int = 1,
    task: int = TASK,
) -> Event:
    return Event(
        biz_id=biz,
        room_id=room,
        user_id=user,
        task_id=task,
        seq_no=seq,
        event_type=event_type,
        record_mode=mode,
        timestamp=ts,
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(backend: str, request: pytest.FixtureRequest) -> Iterator[Make]:
    """Opens stores of the backend under test: ``make(config, clock)``, each one empty (a Redis
    store gets a key prefix of its own on the session's redis-server). A test's Redis stores
    share one connection pool: a pool's first connection costs ~4 ms, and a property test
    opens hundreds of stores."""
    loop = asyncio.new_event_loop()
    opened: list[SyncStore] = []

    def open_store(cfg: Config = CFG, clock: FakeClock | None = None) -> SyncStore:
        clock = clock or FakeClock()
        if backend == "memory":
            return SyncStore(MemoryStore(cfg, clock), clock, loop)
        prefix = f"t{uuid.uuid4().hex[:12]}:"
        if opened:
            store = RedisStore(opened[0].inner.client, cfg, prefix=prefix, clock=clock)
        else:
            server = request.getfixturevalue("redis_server")
            store = RedisStore.from_url(server.url, cfg, prefix=prefix, clock=clock)
        opened.append(t := SyncStore(store, clock, loop))
        return t

    yield open_store
    for t in opened:
        t.run(_drop(t.inner))
    if opened:
        opened[0].run(opened[0].inner.close())
    loop.close()


async def _drop(store: RedisStore) -> None:
    """Delete what one test's store wrote, so the session's Redis stays small."""
    keys = [k async for k in store.client.scan_iter(match=store.prefix + "*", count=1000)]
    for i in range(0, len(keys), 1000):
        await store.client.delete(*keys[i : i + 1000])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make: Make, clock: FakeClock) -> SyncStore:
    return make(CFG, clock)


def state_of(t: SyncStore, seq: int = 0, room: str = "r1") -> str:
    views = [v for v in t.segments(room_id=room, limit=1000) if v.seq_no == seq]
    assert len(views) == 1
    return str(views[0].state)


def assert_consistent(t: SyncStore) -> tuple[StoreStats, list[SegmentView]]:
    """Every incrementally kept gauge equals a full recount of the tracked segments.

    Returns what it read, the stats and every segment (oldest first), for the caller's own
    checks: each is read once per check (a Redis store's listing walks its keyspace)."""
    inc, views = t.stats(), t.segments(limit=10**9)
    full = t.recount(inc, views)
    for name in ("active_recordings", "active_rooms", "stuck", "missing_uploads", "by_state", "oldest_start"):
        assert getattr(inc, name) == getattr(full, name), name
    assert sum(inc.by_state.values()) == len(t) == len(views)
    return inc, views


def test_start_then_complete_then_upload_is_accepted_in_order(store: SyncStore) -> None:
    results = [store.record(ev(e, ts=1000 + 10 * e)).result for e in (1, 2, 3)]
    assert results == ["accepted", "accepted", "accepted"]
    assert state_of(store) == "uploaded"
    assert_consistent(store)


def test_started_segment_is_recording_and_counts_an_active_room(store: SyncStore) -> None:
    store.record(ev(1))
    s = store.stats()
    assert s.active_recordings[(str(BIZ), "mixed")] == 1
    assert s.active_rooms[str(BIZ)] == 1
    assert s.by_state["recording"] == 1


def test_duplicate_changes_nothing_but_its_counter(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    before = store.stats()
    view_before = store.segments()[0]
    clock.advance(5)
    assert store.record(ev(1)).result == "duplicate"
    assert store.stats() == before
    assert store.segments()[0].expires_at == view_before.expires_at + 0  # TTL not refreshed
    assert store.segments()[0].first_received_at == view_before.first_received_at


def test_upload_before_start_is_counted_out_of_order(store: SyncStore) -> None:
    assert store.record(ev(3)).result == "accepted"  # nothing to be out of order with yet
    assert store.record(ev(1)).result == "out_of_order"
    assert store.record(ev(2)).result == "out_of_order"
    assert state_of(store) == "uploaded"
    assert_consistent(store)


def test_recording_past_maximum_duration_becomes_stuck(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    clock.advance(99)
    assert store.sweep() == []
    assert state_of(store) == "recording"
    clock.advance(1.5)
    moved = store.sweep()
    assert [(m.state, m.room_id, m.task_id) for m in moved] == [("stuck", "r1", TASK)]
    s = store.stats()
    assert s.stuck[str(BIZ)] == 1 and s.stuck_total[str(BIZ)] == 1
    assert s.active_recordings[(str(BIZ), "mixed")] == 1  # still recording, as far as we know
    assert_consistent(store)


def test_completion_of_stuck_segment_is_late_and_it_continues(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1, ts=1000))
    clock.advance(150)
    store.sweep()
    out = store.record(ev(2, ts=1150))
    assert out.result == "late" and out.duration == 150
    s = store.stats()
    assert s.stuck[str(BIZ)] == 0 and s.stuck_total[str(BIZ)] == 1
    assert state_of(store) == "completed"
    assert_consistent(store)


def test_completed_without_upload_within_grace_is_upload_missing(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    store.record(ev(2))
    clock.advance(49)
    store.sweep()
    assert state_of(store) == "completed"
    clock.advance(2)
    assert [m.state for m in store.sweep()] == ["upload_missing"]
    s = store.stats()
    assert s.missing_uploads[str(BIZ)] == 1 and s.missing_uploads_total[str(BIZ)] == 1
    assert s.completed_total[str(BIZ)] == 1
    assert store.record(ev(3)).result == "late"
    assert store.stats().missing_uploads[str(BIZ)] == 0
    assert state_of(store) == "uploaded"
    assert_consistent(store)


def test_completion_whose_start_never_arrives_is_an_orphan(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(2))
    clock.advance(9)
    store.sweep()
    assert state_of(store) == "completed"
    assert store.stats().orphan_events == {"completed": 0, "uploaded": 0}
    clock.advance(2)
    assert [m.state for m in store.sweep()] == ["orphan"]
    assert store.stats().orphan_events == {"completed": 1, "uploaded": 0}
    assert store.record(ev(1)).result == "late"
    assert state_of(store) == "completed"
    assert_consistent(store)


def test_orphan_completion_still_alerts_on_its_missing_upload(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(2))
    clock.advance(51)
    store.sweep()
    assert state_of(store) == "upload_missing"
    assert store.stats().orphan_events["completed"] == 1


def test_upload_whose_start_never_arrives_is_an_orphan(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(3))
    clock.advance(11)
    store.sweep()
    assert state_of(store) == "orphan"
    assert store.stats().orphan_events == {"completed": 0, "uploaded": 1}


def test_start_within_reorder_window_is_not_an_orphan(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(3))
    clock.advance(5)
    assert store.record(ev(1)).result == "out_of_order"
    clock.advance(100)
    store.sweep()
    assert state_of(store) == "uploaded"
    assert store.stats().orphan_events == {"completed": 0, "uploaded": 0}


def test_durations_come_from_sender_timestamps(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1, ts=1000))
    clock.advance(3)  # our clock's gap must not matter
    out = store.record(ev(2, ts=1300))
    assert out.duration == 300.0
    assert store.record(ev(3, ts=1312)).upload_delay == 12.0


def test_durations_are_measured_whatever_the_arrival_order(store: SyncStore) -> None:
    assert store.record(ev(3, ts=1312)).upload_delay is None
    assert store.record(ev(2, ts=1300)).upload_delay == 12.0
    assert store.record(ev(1, ts=1000)).duration == 300.0


def test_segments_expire_after_retention_and_are_counted(store: SyncStore, clock: FakeClock) -> None:
    for e in (1, 2, 3):
        store.record(ev(e))
    store.record(ev(1, seq=1))
    clock.advance(1001)
    store.sweep()
    assert len(store) == 0
    s = store.stats()
    assert s.evictions[("ttl", "uploaded")] == 1 and s.evictions[("ttl", "stuck")] == 1
    assert s.active_rooms[str(BIZ)] == 0
    assert_consistent(store)


def test_retention_counts_from_the_last_event(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    clock.advance(900)
    store.record(ev(2))
    clock.advance(900)
    store.sweep()
    assert len(store) == 1


def test_capacity_evicts_terminal_segments_first(make: Make) -> None:
    t = make(replace(DEFAULTS, max_segments=3, retention_seconds=10_000))
    t.record(ev(1, seq=0))  # oldest, live
    for e in (1, 2, 3):
        t.record(ev(e, seq=1))  # terminal
    t.record(ev(1, seq=2))
    t.record(ev(1, seq=3))  # over capacity: the terminal one goes
    assert len(t) == 3
    assert sorted(v.seq_no for v in t.segments()) == [0, 2, 3]
    assert t.stats().evictions[("capacity", "uploaded")] == 1
    t.record(ev(1, seq=4))  # no terminal left: the oldest goes
    assert sorted(v.seq_no for v in t.segments()) == [2, 3, 4]
    assert t.stats().evictions[("capacity", "recording")] == 1
    assert_consistent(t)


def test_capacity_evicts_the_oldest_not_the_one_due_soonest(make: Make, clock: FakeClock) -> None:
    """No terminal segment: the oldest goes (an old recording), never the completed segment
    still waiting for its upload because its deadline is the soonest."""
    t = make(replace(DEFAULTS, max_segments=2, retention_seconds=100_000), clock)
    t.record(ev(1, seq=0))  # A: old, recording (its deadline is hours away)
    clock.advance(5)
    t.record(ev(1, seq=1))
    t.record(ev(2, seq=1))  # B: young, completed, awaiting its upload (due in minutes)
    clock.advance(5)
    t.record(ev(1, seq=2))  # C: over capacity
    assert [v.seq_no for v in t.segments()] == [1, 2]
    assert t.stats().evictions[("capacity", "recording")] == 1
    assert_consistent(t)


def test_registered_apps_past_the_bound_count_as_overflow(make: Make) -> None:
    t = make(replace(DEFAULTS, max_apps=2))
    t.register_apps([1, 2, 3, 4])
    s = t.stats()
    assert s.app_labels == ["1", "2", "other"]
    assert s.app_overflow == 2


def test_app_labels_are_bounded_and_overflow_is_other(make: Make) -> None:
    t = make(replace(DEFAULTS, max_apps=2))
    for biz in (1, 2, 3, 4):
        t.record(ev(1, biz=biz))
    s = t.stats()
    assert s.app_labels == ["1", "2", "other"]
    assert s.active_recordings[("other", "mixed")] == 2
    assert s.app_overflow == 2
    assert_consistent(t)


def test_active_rooms_count_rooms_not_segments(store: SyncStore) -> None:
    store.record(ev(1, user="a"))
    store.record(ev(1, user="b"))
    store.record(ev(1, room="r2"))
    assert store.stats().active_rooms[str(BIZ)] == 2
    store.record(ev(2, user="a"))
    assert store.stats().active_rooms[str(BIZ)] == 2
    store.record(ev(2, user="b"))
    assert store.stats().active_rooms[str(BIZ)] == 1
    assert_consistent(store)


def test_oldest_recording_start_follows_the_oldest_live_segment(store: SyncStore) -> None:
    store.record(ev(1, seq=0, ts=500))
    store.record(ev(1, seq=1, ts=700))
    assert store.stats().oldest_start[str(BIZ)] == 500
    store.record(ev(2, seq=0, ts=800))
    assert store.stats().oldest_start[str(BIZ)] == 700
    store.record(ev(2, seq=1, ts=900))
    assert store.stats().oldest_start[str(BIZ)] == 0


def test_record_mode_single_and_unknown_are_separate_label_values(store: SyncStore) -> None:
    store.record(ev(1, mode=0, seq=0))
    store.record(ev(1, mode=7, seq=1))
    s = store.stats()
    assert s.active_recordings[(str(BIZ), "single")] == 1
    assert s.active_recordings[(str(BIZ), "unknown")] == 1


def test_segments_api_filters_and_orders_oldest_first(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1, room="a", seq=0))
    clock.advance(1)
    store.record(ev(1, room="b", seq=0))
    clock.advance(1)
    store.record(ev(2, room="a", seq=1))
    assert [v.room_id for v in store.segments()] == ["a", "b", "a"]
    assert [v.seq_no for v in store.segments(room_id="a")] == [0, 1]
    assert [v.room_id for v in store.segments(state="completed")] == ["a"]
    assert len(store.segments(limit=1)) == 1
    assert store.segments(app_id="999") == []


def test_pages_walk_every_match_once_oldest_first_with_the_total(store: SyncStore, clock: FakeClock) -> None:
    for seq in range(7):
        # A stream each (its own user): no SeqNo below it is revealed as a gap.
        store.record(ev(1, seq=seq, room="a" if seq % 3 else "b", user=f"u{seq}"))
        clock.advance(0.5 if seq % 2 else 0)  # two segments share a receive time: key decides
    seen: list[int] = []
    after = None
    for _ in range(4):
        page = store.page(limit=3, after=after)
        assert page.total == 7 and len(page.segments) <= 3
        seen += [v.seq_no for v in page.segments]
        after = page.after
        if after is None:
            break
    assert seen == [1, 0, 2, 3, 4, 5, 6]  # a tie in time goes by key: room "a" before "b"
    a = store.page(room_id="a", limit=2)
    assert (a.total, [v.seq_no for v in a.segments]) == (4, [1, 2])
    rest = store.page(room_id="a", limit=10, after=a.after)
    assert ([v.seq_no for v in rest.segments], rest.total, rest.after) == ([4, 5], 4, None)


@pytest.mark.parametrize(
    ("events", "wait", "state", "deadline", "after"),
    [
        ((1,), 101, "stuck", "max_recording_seconds", 100),
        ((1, 2), 51, "upload_missing", "upload_grace_seconds", 50),
        ((3,), 11, "orphan", "reorder_window_seconds", 10),
    ],
)
def test_a_problem_segment_says_which_deadline_passed_and_since_when(
    store: SyncStore,
    clock: FakeClock,
    events: tuple[int, ...],
    wait: float,
    state: str,
    deadline: str,
    after: float,
) -> None:
    for e in events:
        store.record(ev(e))
    (before,) = store.segments()
    assert (before.deadline, before.state_since) == (None, None)
    clock.advance(wait)
    store.sweep()
    (v,) = store.segments()
    assert (v.state, v.deadline) == (state, deadline)
    assert v.state_since == pytest.approx(v.first_received_at + after)


def test_a_reconciled_segment_lists_as_seen_only_the_callbacks_received(make: Make, clock: FakeClock) -> None:
    t, c = stuck_and_claimed(make, clock)
    resolve(t, c.key, "found")
    v = view(t)
    assert (v.events_seen, v.lost_events) == (["started"], ["completed", "uploaded"])


def test_a_lookup_note_shows_while_its_answer_stands_and_goes_with_the_segment(
    make: Make, clock: FakeClock
) -> None:
    t, c = stuck_and_claimed(make, clock)
    resolve(t, c.key, "error")
    note = CheckNote(1_700_000_123.0, "error", "bkt-1250000000", "rec/0.mp3", "timeout", "5 s")
    t.run(t.inner.note_check(c.key, note))
    v = view(t)
    assert (v.check, v.state_since) == (note, note.checked_at)
    t.record(fev(2))  # a late completion: the lookup's answer no longer stands
    assert view(t).check is None
    clock.advance(CHECKING.retention_seconds + 1)
    t.sweep()
    assert t.segments() == []
    inner = t.inner
    if isinstance(inner, MemoryStore):
        assert inner._check_notes == {}
    else:  # its own key, which expires by itself: never a leak
        assert 0 < t.run(inner.client.ttl(inner.prefix + "ck:" + c.key)) <= (CHECKING.retention_seconds)


# ------------------------------------------------------------------ properties

EVENT_LISTS = st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=6)
# Every event of a delivery arrives within SPAN seconds, well inside the reorder window (10 s).
SPAN = 5.0
# When the outcome is read, relative to the first arrival: anywhere, except within SPAN after a
# deadline (reorder 10, grace 50, stuck 100, retention 1000), where arrival order legitimately
# decides which side of the deadline a segment is on. Reads stop a millisecond short of the next
# deadline: the Redis store keeps Unix times (~1.7e9), whose floats are ~2e-7 s apart, so
# 49.99999999999999 s after an arrival is the deadline itself there.
CHECK_TIMES = st.sampled_from(
    [(SPAN, 10), (10 + SPAN, 50), (50 + SPAN, 100), (100 + SPAN, 1000), (1000 + SPAN, 1500)]
).flatmap(lambda lo_hi: st.floats(lo_hi[0], lo_hi[1] - 1e-3))
PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@contextmanager
def _example(make: Make, cfg: Config = CFG, clock: FakeClock | None = None) -> Iterator[SyncStore]:
    """A store for one example of a property, whose keys are deleted when the example ends: a
    Redis listing SCANs the whole keyspace, so the leftovers of 200 examples made each check
    of the later ones several times slower."""
    t = make(cfg, clock)
    try:
        yield t
    finally:
        if isinstance(t.inner, RedisStore):
            t.run(_drop(t.inner))


def _deliver(
    make: Make, events: list[int], gaps: list[float], check_at: float
) -> tuple[str | None, StoreStats]:
    clock = FakeClock()
    with _example(make, CFG, clock) as t:
        start = clock.mono
        for e, gap in zip(events, gaps, strict=True):
            t.record(ev(e, ts=1000 + e))
            clock.advance(gap)
        clock.mono, clock.wall = start + check_at, clock.wall + (start + check_at - clock.mono)
        t.sweep()
        stats, views = assert_consistent(t)
        return (views[0].state if views else None), stats


@PROPERTY
@given(events=EVENT_LISTS, check_at=CHECK_TIMES, data=st.data())
def test_order_and_duplicates_within_the_reorder_window_do_not_change_the_outcome(
    make: Make, events: list[int], check_at: float, data: st.DataObject
) -> None:
    """While a segment's events all arrive within the reorder window, any permutation with any
    duplicates ends in the same state, with the same counts, as in-order delivery -- read at any
    time, across every deadline (except within the arrival spread of one, where the order
    decides which side of it the segment is on: see the next property)."""
    shuffled = data.draw(st.permutations(events))
    extra = data.draw(st.lists(st.sampled_from(sorted(set(events))), max_size=3))
    delivery = list(shuffled) + extra
    gaps = data.draw(
        st.lists(st.floats(0, SPAN / len(delivery)), min_size=len(delivery), max_size=len(delivery))
    )
    in_order = sorted(set(events))
    state_a, stats_a = _deliver(make, in_order, [0.0] * len(in_order), check_at)
    state_b, stats_b = _deliver(make, delivery, gaps, check_at)
    assert state_a == state_b
    for name in ("by_state", "completed_total", "stuck_total", "missing_uploads_total", "orphan_events"):
        assert getattr(stats_a, name) == getattr(stats_b, name), name


class _Oracle:
    """The documented rules, replayed step by step for one segment: what a store must say."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.seen = 0
        self.r_first = self.r_complete = self.expires = 0.0

    def state(self, now: float) -> str | None:
        if self.seen and now >= self.expires:
            self.seen = 0  # retention ran out: forgotten
        if not self.seen:
            return None
        return derive_state(self.seen, self.r_first, self.r_complete, now, self.cfg)[0].label

    def record(self, event_type: int, now: float) -> str:
        state = self.state(now)
        bit = SEEN_BIT[event_type]
        if state is None:
            self.r_first = self.r_complete = now
        result = classify(self.seen, bit, None if state is None else State[state.upper()])
        if result != "duplicate":
            self.seen |= bit
            if bit == SEEN_BIT[2]:
                self.r_complete = now
            self.expires = now + self.cfg.retention_seconds
        return str(result)


@PROPERTY
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3]),
            st.sampled_from([0, 1, 9, 10, 11, 49, 50, 51, 99, 100, 101, 999, 1000, 1001]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_across_deadlines_results_and_states_follow_the_documented_rules(
    make: Make, steps: list[tuple[int, int]]
) -> None:
    """Events separated by gaps that cross every deadline: each result (`late` after a deadline
    made the segment a problem, `out_of_order`, `duplicate`) and the state after each step are
    what the lifecycle rules say, replayed independently of any store."""
    clock = FakeClock()
    oracle = _Oracle(CFG)
    with _example(make, CFG, clock) as t:
        for event_type, gap in steps:
            clock.advance(gap)
            t.sweep()  # the service sweeps every second; gaps are whole seconds
            assert str(t.record(ev(event_type)).result) == oracle.record(event_type, clock.mono)
            _, views = assert_consistent(t)
            assert (views[0].state if views else None) == oracle.state(clock.mono)


@PROPERTY
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3]),
            st.integers(0, 5),
            st.integers(0, 3),
            st.sampled_from(["ra", "rb", "rc"]),
            st.floats(0, 60),
        ),
        max_size=40,
    ),
    capacity=st.integers(2, 12),
)
def test_gauges_always_equal_a_recount(
    make: Make, ops: list[tuple[int, int, int, str, float]], capacity: int
) -> None:
    """Across events, deadlines, TTL expiry and capacity eviction, tallies never drift."""
    with _example(make, replace(CFG, retention_seconds=200, max_segments=capacity, max_apps=2)) as t:
        for event_type, seq, biz, room, dt in ops:
            t.record(ev(event_type, seq=seq, biz=biz, room=room))
            t.clock.advance(dt)
            t.sweep()
            _, views = assert_consistent(t)
            assert len(views) <= capacity


def test_every_state_is_reachable_in_the_property_space(make: Make) -> None:
    """Guard for the first property: its check times do produce every state (but unverified,
    which needs a blind window: see the blind window tests)."""
    seen = set()
    for events in itertools.product([1, 2, 3], repeat=2):
        for check_at in (7.0, 30.0, 75.0, 500.0):
            seen.add(_deliver(make, list(events), [0.0, 0.0], check_at)[0])
    # (unverified needs a blind window, expected and unannounced a later SeqNo: see their tests)
    assert seen >= set(STATE_NAMES) - {"unverified", "expected", "unannounced"}


def test_budgeted_sweep_works_in_rounds_and_loses_nothing(make: Make, clock: FakeClock) -> None:
    t = make(CFG, clock)
    for seq in range(25):
        t.record(ev(1, seq=seq))
    clock.advance(101)
    rounds = []
    more = True
    while more and len(rounds) < 10:  # a sweep that keeps saying `more` would spin
        done = t.sweep_round(10)
        rounds.append(len(done.transitions))
        more = done.more
    assert rounds == [10, 10, 5]
    assert t.stats().stuck[str(BIZ)] == 25
    assert_consistent(t)


def test_oldest_start_ignores_a_reused_slot(make: Make) -> None:
    t = make(replace(DEFAULTS, max_segments=2, retention_seconds=10_000))
    t.record(ev(1, seq=0, ts=100))
    t.record(ev(1, seq=1, ts=200))
    t.record(ev(1, seq=2, ts=300))  # evicts seq 0 (oldest); its slot is reused
    assert t.stats().oldest_start[str(BIZ)] == 200
    assert_consistent(t)


# ------------------------------------------------------------------ COS checks (claim / resolve)

CHECKING = replace(CFG, check_in_cos=True)


def fev(event_type: int, *, seq: int = 0, **kw: object) -> Event:
    e = ev(event_type, seq=seq, **kw)  # type: ignore[arg-type]
    return msgspec.structs.replace(e, file_name=f"rec/{seq}.mp3")


def claim(t: SyncStore, limit: int = 100, lease: float = 60.0) -> list[Claim]:
    return list(t.run(t.inner.claim(limit, lease)))


def resolve(t: SyncStore, key: str, answer: str, backoff: Backoff | None = None) -> object:
    return t.run(t.inner.resolve(key, answer, backoff))


def stuck_and_claimed(make: Make, clock: FakeClock) -> tuple[SyncStore, Claim]:
    """A store with checks on, and one segment past its stuck deadline, held and claimed."""
    t = make(CHECKING, clock)
    t.record(fev(1))
    clock.advance(101)
    t.sweep()
    (c,) = claim(t)
    return t, c


def missing_and_claimed(make: Make, clock: FakeClock) -> tuple[SyncStore, Claim]:
    """A store with checks on, and one completed segment past its upload grace, held and claimed."""
    t = make(CHECKING, clock)
    t.record(fev(1))
    t.record(fev(2))
    clock.advance(51)
    t.sweep()
    (c,) = claim(t)
    return t, c


def view(t: SyncStore, seq: int = 0) -> SegmentView:
    (v,) = [v for v in t.segments(room_id="r1", limit=1000) if v.seq_no == seq]
    return v


def test_with_checks_a_deadline_holds_the_segment_until_its_file_is_looked_up(
    make: Make, clock: FakeClock
) -> None:
    t = make(CHECKING, clock)
    t.record(fev(1))
    clock.advance(101)
    assert t.sweep() == []  # no stuck transition, no count
    assert state_of(t) == "recording"
    s = t.stats()
    assert (s.stuck_total[str(BIZ)], s.stuck[str(BIZ)], s.checks_pending) == (0, 0, 1)
    (c,) = claim(t)
    assert (c.pending, c.file_name, c.app_id) == ("stuck", "rec/0.mp3", str(BIZ))
    assert claim(t) == []  # claimed once
    assert_consistent(t)


def test_a_file_found_makes_the_segment_uploaded_and_names_the_lost_callbacks(
    make: Make, clock: FakeClock
) -> None:
    t, c = stuck_and_claimed(make, clock)
    r = resolve(t, c.key, "found")
    assert isinstance(r, Reconciled)
    assert (r.lost, r.room_id, r.seq_no) == (("completed", "uploaded"), "r1", 0)
    v = view(t)
    assert (v.state, v.lost_events, v.completed_at, v.uploaded_at) == (
        "uploaded",
        ["completed", "uploaded"],
        None,
        None,
    )
    s = t.stats()
    assert (s.stuck_total[str(BIZ)], s.checks_pending) == (0, 0)
    assert t.record(fev(3)).result == "duplicate"  # a late upload changes nothing
    assert_consistent(t)


def test_a_completed_segment_whose_file_is_found_lost_only_its_upload(make: Make, clock: FakeClock) -> None:
    t, c = missing_and_claimed(make, clock)
    assert c.pending == "upload_missing"
    r = resolve(t, c.key, "found")
    assert isinstance(r, Reconciled) and r.lost == ("uploaded",)
    assert view(t).state == "uploaded"
    assert t.stats().missing_uploads_total[str(BIZ)] == 0


@pytest.mark.parametrize(("answer", "confirmed"), [("not_found", True), ("error", False)])
def test_a_file_not_found_or_not_looked_up_makes_the_problem_stand(
    make: Make, clock: FakeClock, answer: str, confirmed: bool
) -> None:
    t, c = stuck_and_claimed(make, clock)
    r = resolve(t, c.key, answer)
    assert isinstance(r, Transition)
    assert (r.state, r.confirmed, r.seq_no) == ("stuck", confirmed, 0)
    v = view(t)
    assert (v.state, v.confirmed) == ("stuck", confirmed)
    s = t.stats()
    assert (s.stuck_total[str(BIZ)], s.stuck[str(BIZ)], s.checks_pending) == (1, 1, 0)
    assert resolve(t, c.key, answer) is None  # answered once
    assert t.sweep() == []
    assert_consistent(t)


def test_an_answer_stands_while_a_late_event_leaves_the_segment_in_its_problem(
    make: Make, clock: FakeClock
) -> None:
    """A late start for a segment whose upload was confirmed missing: still missing, still
    confirmed (found by the property test below). A late upload then ends the problem."""
    t = make(CHECKING, clock)
    t.record(fev(2))
    clock.advance(60)
    t.sweep()
    (c,) = claim(t)
    resolve(t, c.key, "not_found")
    assert (view(t).state, view(t).confirmed) == ("upload_missing", True)
    assert t.record(fev(1)).result == "late"
    assert (view(t).state, view(t).confirmed) == ("upload_missing", True)
    assert t.stats().checks_pending == 0
    t.record(fev(3))
    assert (view(t).state, view(t).confirmed) == ("uploaded", None)
    assert_consistent(t)


def test_a_callback_during_a_check_applies_and_the_late_answer_is_ignored(make: Make, clock: FakeClock) -> None:
    t, c = stuck_and_claimed(make, clock)
    assert t.record(fev(3)).result == "accepted"  # the upload arrives meanwhile
    assert view(t).state == "uploaded"
    assert resolve(t, c.key, "not_found") is None
    s = t.stats()
    assert (view(t).state, s.stuck_total[str(BIZ)], s.checks_pending) == ("uploaded", 0, 0)
    assert_consistent(t)


def test_a_claim_whose_lease_runs_out_is_handed_out_again(make: Make, clock: FakeClock) -> None:
    t = make(CHECKING, clock)
    t.record(fev(1))
    clock.advance(101)
    t.sweep()
    (c,) = claim(t, lease=30)
    clock.advance(20)
    assert claim(t, lease=30) == []
    clock.advance(11)  # the claimant died: its lease ran out
    (again,) = claim(t, lease=30)
    assert again.key == c.key
    assert isinstance(resolve(t, again.key, "found"), Reconciled)


def test_claims_are_bounded_oldest_first_and_each_segment_once(make: Make, clock: FakeClock) -> None:
    t = make(CHECKING, clock)
    for seq in range(30):
        t.record(fev(1, seq=seq))
        clock.advance(0.01)
    clock.advance(101)
    t.sweep()
    assert t.stats().checks_pending == 30
    firsts = claim(t, limit=10)
    assert [c.file_name for c in firsts] == [f"rec/{i}.mp3" for i in range(10)]
    rest = claim(t, limit=100)
    assert len(rest) == 20 and not {c.key for c in firsts} & {c.key for c in rest}


def test_without_checks_nothing_is_ever_claimed(store: SyncStore, clock: FakeClock) -> None:
    store.record(fev(1))
    clock.advance(101)
    (tr,) = store.sweep()
    assert (tr.state, tr.confirmed) == ("stuck", None)
    assert claim(store) == []
    assert view(store).confirmed is None


# ------------------------------------------------------------------ retrying a failed lookup

BACKOFF = Backoff(10.0, 40.0, 1.0)  # the bound as the wait: exact times to test


def test_a_failed_lookup_is_retried_after_its_backoff_claimed_once_until_confirmed(
    make: Make, clock: FakeClock
) -> None:
    t, c = stuck_and_claimed(make, clock)  # 1 s past its deadline
    r = resolve(t, c.key, "error", BACKOFF)
    assert isinstance(r, Transition)  # reported once, unconfirmed, with when it is retried
    assert (r.state, r.confirmed, r.retry_in) == ("stuck", False, 10.0)
    assert (view(t).state, view(t).confirmed) == ("stuck", False)
    clock.advance(9.9)
    assert claim(t) == []  # not before its time
    clock.advance(0.2)
    again = claim(t)
    assert [(a.key, a.pending, a.file_name) for a in again] == [(c.key, "stuck", "rec/0.mp3")]
    assert claim(t) == []  # claimed once
    r = resolve(t, c.key, "error", BACKOFF)  # still no answer: 11.1 s waited, so 11.1 s more
    assert isinstance(r, Retrying) and r.retry_in == pytest.approx(11.1)
    assert (view(t).state, view(t).confirmed) == ("stuck", False)
    clock.advance(11.2)
    assert [a.key for a in claim(t)] == [c.key]
    r = resolve(t, c.key, "not_found", BACKOFF)
    assert isinstance(r, Transition)  # reported anew: confirmed now
    assert (r.state, r.confirmed, r.retry_in) == ("stuck", True, None)
    assert (view(t).state, view(t).confirmed) == ("stuck", True)
    s = t.stats()
    assert (s.stuck_total[str(BIZ)], s.stuck[str(BIZ)], s.checks_pending) == (1, 1, 0)  # one stuck
    clock.advance(1000)
    assert claim(t) == []  # the answer stands
    assert_consistent(t)


def test_a_retried_lookup_that_finds_the_file_makes_the_problem_uploaded(make: Make, clock: FakeClock) -> None:
    t, c = missing_and_claimed(make, clock)
    r = resolve(t, c.key, "error", BACKOFF)
    assert isinstance(r, Transition) and (r.state, r.confirmed) == ("upload_missing", False)
    assert t.stats().missing_uploads[str(BIZ)] == 1
    clock.advance(10)
    assert [a.key for a in claim(t)] == [c.key]
    r = resolve(t, c.key, "found", BACKOFF)
    assert isinstance(r, Reconciled) and r.lost == ("uploaded",)
    assert (view(t).state, view(t).confirmed, view(t).lost_events) == ("uploaded", None, ["uploaded"])
    s = t.stats()
    assert (s.missing_uploads[str(BIZ)], s.missing_uploads_total[str(BIZ)]) == (0, 1)
    clock.advance(100)
    assert claim(t) == []
    assert_consistent(t)


def test_the_wait_between_retries_grows_to_its_cap(make: Make, clock: FakeClock) -> None:
    t, c = stuck_and_claimed(make, clock)
    waits = []
    for _ in range(5):
        r = resolve(t, c.key, "error", BACKOFF)
        assert isinstance(r, Transition | Retrying) and r.retry_in is not None
        waits.append(r.retry_in)
        clock.advance(r.retry_in)
        assert [a.key for a in claim(t)] == [c.key]
    assert waits == pytest.approx([10, 11, 22, 40, 40])


def test_a_callback_or_the_end_of_retention_ends_the_retries(make: Make, clock: FakeClock) -> None:
    t = make(CHECKING, clock)
    for seq in (0, 1):
        t.record(fev(1, seq=seq))
    clock.advance(101)
    t.sweep()
    for c in claim(t):
        resolve(t, c.key, "error", BACKOFF)
    assert t.record(fev(3, seq=0)).result == "late"  # its upload: an answer of its own
    clock.advance(10)
    claimed = claim(t)
    assert [a.file_name for a in claimed] == ["rec/1.mp3"]
    resolve(t, claimed[0].key, "error", BACKOFF)
    clock.advance(CHECKING.retention_seconds)  # then forgotten by the sweep
    t.sweep()
    assert t.segments(room_id="r1", limit=10) == [] and claim(t) == []
    assert_consistent(t)


def test_a_failed_lookup_without_a_backoff_is_not_retried(make: Make, clock: FakeClock) -> None:
    t, c = stuck_and_claimed(make, clock)
    r = resolve(t, c.key, "error")  # no FileName: nothing to look up again
    assert isinstance(r, Transition) and (r.confirmed, r.retry_in) == (False, None)
    clock.advance(10_000)
    assert claim(t) == []


_EVENT = st.tuples(st.just("event"), st.sampled_from([1, 2, 3]), st.integers(0, 2))
_ANSWERS = st.sampled_from(["found", "not_found", "error"])
# Rounds of callbacks, then time passing (a zero step is none), then sweeps, claims, answers and
# more callbacks in any order; "lookup" is a reconciler's pass (sweep, claim every held segment,
# answer each). Flat lists of single operations reached a segment paged after a lookup in 0 to 8
# of 150 examples (0 when derandomised): the deadline, the sweep, the claim and a negative
# answer all had to come in that order. Rounds reached it in 14 to 46 of 150 (46 derandomised),
# and the guard (one in fifty) still failed about one fresh run in five on a loaded machine. So the
# strategy is steered: half the examples close with the deadlines passing and a negative lookup,
# which pages whatever the rounds left unfinished; the explicit examples reach each paged state.
_ROUNDS = st.lists(
    st.tuples(
        st.lists(_EVENT, max_size=3),
        st.sampled_from([0.0, 5.0, 30.0, 60.0, 120.0]),
        st.lists(
            st.one_of(
                st.tuples(st.just("sweep"), st.just(0), st.just(0)),
                st.tuples(st.just("claim"), st.integers(1, 3), st.just(0)),
                st.tuples(st.just("answer"), _ANSWERS, st.just(0)),
                st.tuples(st.just("lookup"), _ANSWERS, st.just(0)),
                _EVENT,
            ),
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=6,
).map(lambda rounds: [op for events, dt, then in rounds for op in (*events, ("advance", dt, 0), *then)])
_CLOSE = st.sampled_from(
    [(), *((("advance", 120.0, 0), ("lookup", answer, 0)) for answer in ("not_found", "error", "found"))]
)
OPS = st.tuples(_ROUNDS, _CLOSE).map(lambda parts: [*parts[0], *parts[1]])
CHECKS_EXAMPLES = 150
# Segments paged after a lookup, one per state and answer (hypothesis runs them first).
CHECKS_EXPLICIT = (
    [("event", 1, 0), ("advance", 120.0, 0), ("lookup", "not_found", 0)],  # stuck, confirmed
    [("event", 1, 0), ("event", 2, 0), ("advance", 120.0, 0), ("lookup", "error", 0)],  # missing
    [("event", 2, 1), ("advance", 60.0, 0), ("sweep", 0, 0), ("claim", 1, 0), ("answer", "not_found", 0)],
)


def test_checks_interleaved_with_callbacks_keep_every_tally_true(make: Make) -> None:
    """Any interleaving of callbacks, deadlines, claims and answers: the gauges equal a recount,
    a held segment is never a problem, and the pending count is the held segments. And not
    vacuously: enough examples reach a segment paged after a lookup answered, where the last
    assertion bites."""
    paged: list[int] = []

    @settings(max_examples=CHECKS_EXAMPLES, deadline=None)
    @given(ops=OPS)
    @example(ops=CHECKS_EXPLICIT[0])
    @example(ops=CHECKS_EXPLICIT[1])
    @example(ops=CHECKS_EXPLICIT[2])
    def check(ops: list[tuple[str, object, int]]) -> None:
        clock = FakeClock()
        claimed: list[Claim] = []
        reached = 0
        with _example(make, CHECKING, clock) as t:
            for op, a, b in ops:
                if op == "event":
                    t.record(fev(a, seq=b))  # type: ignore[arg-type]
                elif op == "advance":
                    clock.advance(a)  # type: ignore[arg-type]
                elif op == "sweep":
                    t.sweep()
                elif op == "claim":
                    claimed += claim(t, limit=a)  # type: ignore[arg-type]
                elif op == "lookup":
                    t.sweep()
                    claimed += claim(t)
                    while claimed:
                        resolve(t, claimed.pop(0).key, a)  # type: ignore[arg-type]
                elif claimed:
                    resolve(t, claimed.pop(0).key, a)  # type: ignore[arg-type]
                stats, views = assert_consistent(t)
                assert stats.checks_pending <= sum(
                    v.state in ("recording", "completed", "orphan", "expected") for v in views
                )
                for v in views:
                    if v.state in ("stuck", "upload_missing", "unannounced"):
                        assert v.confirmed is not None  # paged only after a lookup answered
                        reached += 1
        paged.append(reached)

    check()
    explicit, generated = paged[: len(CHECKS_EXPLICIT)], paged[len(CHECKS_EXPLICIT) :]
    assert all(explicit), f"an explicit example no longer reaches a paged segment: {explicit}"
    hits = sum(n > 0 for n in generated)
    # Half the generated examples close with a negative lookup; 36 to 54 of 150 reached a paged
    # segment in six fresh runs (mean about 45, sd about 5.6), so one in eight is a guard that
    # fails when the steering is lost, never by chance (the old strategy: 0 to 8 in flat lists).
    assert hits >= len(generated) // 8, (
        f"only {hits} of {len(generated)} generated examples reached a paged segment: the property is vacuous"
    )
    print(f"{hits} of {len(generated)} generated examples reached a paged segment")


# ------------------------------------------------------------------ blind windows

W = (1_700_000_100.0, 1_700_000_200.0)


def mark_blind(t: SyncStore) -> int:
    return int(t.run(t.inner.mark_blind(*W)))


def test_a_blind_window_marks_only_the_live_segments(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1, seq=0))  # recording
    store.record(ev(1, seq=1))
    store.record(ev(2, seq=1))  # awaiting its upload
    for e in (1, 2, 3):
        store.record(ev(e, seq=2))  # uploaded
    assert mark_blind(store) == 2
    assert (view(store, 0).blind_window_start, view(store, 0).blind_window_end) == W
    assert view(store, 1).blind_window_start == W[0]
    assert view(store, 2).blind_window_start is None


def test_a_marked_segment_whose_deadline_passes_is_unverified_not_paged(
    store: SyncStore, clock: FakeClock
) -> None:
    store.record(ev(1, seq=0))
    store.record(ev(1, seq=1))
    store.record(ev(2, seq=1))
    mark_blind(store)
    store.record(ev(1, seq=2))  # started after the window: paged as usual
    clock.advance(101)
    moved = sorted(store.sweep(), key=lambda t: t.seq_no)
    assert [(t.seq_no, t.state, t.blind_window) for t in moved] == [
        (0, "unverified", W),
        (1, "unverified", W),
        (2, "stuck", None),
    ]
    s = store.stats()
    assert (s.stuck[str(BIZ)], s.stuck_total[str(BIZ)], s.missing_uploads[str(BIZ)]) == (1, 1, 0)
    assert s.by_state["unverified"] == 2
    assert [v.seq_no for v in store.segments(state="unverified")] == [0, 1]
    assert store.sweep() == []  # once
    assert_consistent(store)


def test_after_a_store_reset_a_segment_that_may_have_lost_its_start_is_unverified_not_an_orphan(
    store: SyncStore, clock: FakeClock
) -> None:
    """#27.3: Redis came back empty (or a crash lost what was acknowledged): the completions and
    uploads of the recordings in progress arrive at a store that never heard their start. They
    end unverified -- ours to explain -- never orphans, and no start is counted lost; a
    segment first heard of longer after the window than any recording lasts is an orphan as
    before, and a late start makes the mark moot."""
    store.record(ev(3, seq=7, user="u7"))  # reached the emptied store before the reset was found
    window = (clock.time() - 30, clock.time())
    assert int(store.run(store.inner.mark_blind(*window))) == 0  # none live: the count is of live ones
    store.record(ev(2, seq=0))  # completed after the reset: its start may have been in the window
    store.record(ev(3, seq=1))  # uploaded after it
    store.record(ev(1, seq=2))  # a start after it: nothing is missing
    store.record(ev(2, seq=2))
    store.record(ev(2, seq=3))
    store.record(ev(1, seq=3))  # its start came after all (late, within the reorder window)
    clock.advance(11)
    moved = sorted(store.sweep(), key=lambda t: t.seq_no)
    assert [(t.seq_no, t.state, t.blind_window) for t in moved] == [
        (0, "unverified", window),
        (1, "unverified", window),
        (7, "unverified", window),
    ]
    s = store.stats()
    assert s.orphan_events == {"completed": 0, "uploaded": 0}
    assert (s.by_state["orphan"], s.by_state["unverified"]) == (0, 3)
    v = view(store, 0)
    assert (v.state, v.deadline, v.blind_window_start, v.blind_window_end) == (
        "unverified",
        "reorder_window_seconds",
        *window,
    )
    assert v.state_since == pytest.approx(v.first_received_at + CFG.reorder_window_seconds)
    # Its upload is still missing at the end of the grace: that is a problem of its own.
    clock.advance(40)
    assert sorted((t.seq_no, t.state) for t in store.sweep()) == [
        (0, "upload_missing"),
        (2, "upload_missing"),
        (3, "upload_missing"),
    ]
    assert store.stats().orphan_events == {"completed": 0, "uploaded": 0}
    # Longer after the window than a recording and its upload grace: Tencent's to explain again.
    clock.advance(CFG.max_recording_seconds + CFG.upload_grace_seconds)
    store.record(ev(2, seq=8, user="u8"))
    clock.advance(11)
    assert [(t.seq_no, t.state) for t in store.sweep()] == [(8, "orphan")]
    assert store.stats().orphan_events == {"completed": 1, "uploaded": 0}
    assert_consistent(store)


def mark_one(t: SyncStore, seq: int = 0, room: str = "r1") -> bool:
    return bool(t.run(t.inner.mark_segment(key_of(ev(1, seq=seq, room=room)), *W)))


def test_a_refused_callback_marks_only_the_live_segment_it_names(store: SyncStore, clock: FakeClock) -> None:
    """#26.2: a well-formed callback we refused marks the segment it names, and nothing else:
    not a segment we never heard of (no state is created), not a settled one, not its
    neighbours; the marked one becomes unverified at its deadline, the others page as usual."""
    store.record(ev(1, seq=0))  # recording
    store.record(ev(1, seq=1))  # recording, not named
    for e in (1, 2, 3):
        store.record(ev(e, seq=2))  # uploaded
    assert mark_one(store, 0)
    assert not mark_one(store, 2)  # settled: nothing to attribute
    assert not mark_one(store, 9)  # never heard of: a forger cannot create state
    assert len(store.segments(limit=1000)) == 3
    assert (view(store, 0).blind_window_start, view(store, 0).blind_window_end) == W
    assert view(store, 1).blind_window_start is None
    clock.advance(101)
    moved = sorted(store.sweep(), key=lambda t: t.seq_no)
    assert [(t.seq_no, t.state) for t in moved] == [(0, "unverified"), (1, "stuck")]
    assert_consistent(store)


def test_a_late_callback_resolves_an_unverified_segment_as_usual(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    mark_blind(store)
    clock.advance(101)
    store.sweep()
    assert store.record(ev(2)).result.value == "late"
    assert state_of(store) == "completed"
    assert view(store).blind_window_start is None
    assert store.record(ev(3)).result.value == "accepted"
    assert state_of(store) == "uploaded"
    assert_consistent(store)


def test_a_callback_after_the_window_clears_the_mark(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1))
    mark_blind(store)
    store.record(ev(2))  # heard from again: its missing upload is paged as usual
    clock.advance(51)
    assert [t.state for t in store.sweep()] == ["upload_missing"]


def test_with_checks_a_marked_segment_is_looked_up_in_cos(make: Make, clock: FakeClock) -> None:
    t = make(CHECKING, clock)
    t.record(fev(1))
    mark_blind(t)
    clock.advance(101)
    assert t.sweep() == []
    (c,) = claim(t)
    r = resolve(t, c.key, "not_found")
    assert isinstance(r, Transition)
    assert (r.state, r.confirmed) == ("stuck", True)


# ------------------------------------------------------------------ segments never announced (#28)


def test_a_later_seqno_reveals_a_segment_that_got_no_callback_and_it_ends_unannounced(
    store: SyncStore, clock: FakeClock
) -> None:
    """#28.1: SeqNo 0 and 2 of a stream are heard, 1 never: it is tracked as expected from then,
    and once its reorder window ends with no callback of its own it is unannounced (a problem,
    reported once, unconfirmed without COS), in the API with the deadline that made it."""
    for e in (1, 2, 3):
        store.record(ev(e, seq=0))
    clock.advance(5)
    store.record(ev(1, seq=2))
    assert state_of(store, 1) == "expected"
    assert view(store, 1).events_seen == []
    assert view(store, 1).first_received_at == pytest.approx(clock.time())
    clock.advance(CFG.reorder_window_seconds)
    (moved,) = store.sweep()
    assert (moved.seq_no, moved.state, moved.confirmed) == (1, "unannounced", None)
    v = view(store, 1)
    assert (v.state, v.deadline, v.events_seen, v.lost_events) == (
        "unannounced",
        "reorder_window_seconds",
        [],
        [],
    )
    assert store.stats().by_state["unannounced"] == 1
    assert store.sweep() == []  # once
    # Another stream (another user of the task) is its own: nothing revealed there.
    store.record(ev(1, seq=3, user="u2"))
    assert [v.seq_no for v in store.segments(room_id="r1") if v.user_id == "u2"] == [3]
    assert_consistent(store)


def test_a_revealed_segment_whose_callback_comes_within_the_window_is_an_ordinary_one(
    store: SyncStore, clock: FakeClock
) -> None:
    store.record(ev(1, seq=0))
    store.record(ev(1, seq=2))
    clock.advance(CFG.reorder_window_seconds - 1)
    assert store.record(ev(2, seq=1)).result.value == "accepted"  # not late: nothing was declared
    v = view(store, 1)
    assert (v.state, v.first_received_at) == ("completed", pytest.approx(clock.time()))
    clock.advance(CFG.reorder_window_seconds)  # its start window runs from its first callback
    assert [(t.seq_no, t.state) for t in store.sweep()] == [(1, "orphan")]
    assert_consistent(store)


def test_a_callback_of_an_unannounced_segment_is_late_and_settles_it_anew(
    store: SyncStore, clock: FakeClock
) -> None:
    store.record(ev(1, seq=0))
    store.record(ev(1, seq=2))
    clock.advance(CFG.reorder_window_seconds)
    store.sweep()
    assert store.record(ev(1, seq=1)).result.value == "late"
    assert state_of(store, 1) == "recording"
    assert_consistent(store)


def test_a_stream_first_heard_mid_task_reveals_nothing_below_it_until_tracking_covers_it(
    make: Make, clock: FakeClock
) -> None:
    """A service deployed (or a store emptied) in the middle of a recording never calls missing
    what it could not have heard: SeqNos below a stream's first are revealed only when the store
    has been tracking since before the first of them could have started."""
    t = make(CFG, clock)
    t.record(ev(1, seq=3))
    assert [v.seq_no for v in t.segments()] == [3]
    clock.advance(3 * CFG.max_recording_seconds)
    t.record(ev(1, seq=2, room="r2"))  # a new stream, long enough after the store began
    assert sorted(v.seq_no for v in t.segments(room_id="r2")) == [0, 1, 2]
    assert_consistent(t)


def test_one_callback_reveals_at_most_max_gap_segments(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1, seq=0))
    store.record(ev(1, seq=1_000_000))
    seqs = sorted(v.seq_no for v in store.segments(limit=10_000))
    assert seqs == [0, *range(1_000_000 - lifecycle.MAX_GAP, 1_000_001)]
    assert_consistent(store)


def test_with_checks_an_unannounced_segment_is_looked_up_by_its_stream_and_found_loses_every_callback(
    make: Make, clock: FakeClock
) -> None:
    """#28.2: held for a lookup like a stuck segment; the claim names the latest file of its
    stream and that file's SeqNo. Found: uploaded, every callback lost, no problem."""
    t = make(CHECKING, clock)
    for e in (1, 2, 3):
        t.record(fev(e, seq=0))
    t.record(fev(1, seq=2))
    clock.advance(CFG.reorder_window_seconds)
    assert t.sweep() == []  # held, not reported
    assert state_of(t, 1) == "expected"
    (c,) = claim(t)
    assert (c.pending, c.file_name, c.anchor_seq) == ("unannounced", "rec/2.mp3", 2)
    r = resolve(t, c.key, "found")
    assert isinstance(r, Reconciled)
    assert (r.seq_no, r.lost) == (1, ("started", "completed", "uploaded"))
    v = view(t, 1)
    assert (v.state, v.events_seen, v.lost_events, v.started_at) == (
        "uploaded",
        [],
        ["started", "completed", "uploaded"],
        None,
    )
    assert t.stats().orphan_events == {"completed": 0, "uploaded": 0}
    assert_consistent(t)


def test_with_checks_an_unannounced_segment_not_found_is_a_confirmed_missing_recording(
    make: Make, clock: FakeClock
) -> None:
    t = make(CHECKING, clock)
    t.record(fev(1, seq=0))
    t.record(fev(1, seq=2))
    clock.advance(CFG.reorder_window_seconds)
    t.sweep()
    (c,) = claim(t)
    r = resolve(t, c.key, "not_found")
    assert isinstance(r, Transition)
    assert (r.seq_no, r.state, r.confirmed) == (1, "unannounced", True)
    assert view(t, 1).confirmed is True
    assert_consistent(t)


def test_a_quiet_stream_is_listed_once_and_the_files_no_callback_announced_are_adopted(
    make: Make, clock: FakeClock
) -> None:
    """#28.3: a gap never reveals a lost last segment. A stream quiet for tail_quiet_seconds is
    claimed once for a listing; the files found of SeqNos no callback announced become uploaded
    segments, every callback lost; one a callback announced meanwhile is left alone."""
    cfg = replace(CHECKING, tail_quiet_seconds=60)
    t = make(cfg, clock)
    for e in (1, 2, 3):
        t.record(fev(e, seq=0))
    t.record(fev(1, seq=0, room="r2"))
    assert t.run(t.inner.claim_tails(10, 30)) == []  # not quiet yet
    clock.advance(61)
    t.sweep()
    tails = sorted(t.run(t.inner.claim_tails(10, 30)), key=lambda c: c.stream)
    assert [(c.next_seq, c.file_name, c.anchor_seq, c.record_mode) for c in tails] == [
        (1, "rec/0.mp3", 0, 1),
        (1, "rec/0.mp3", 0, 1),
    ]
    assert t.run(t.inner.claim_tails(10, 30)) == []  # claimed: once
    tail = tails[0]
    made = t.run(t.inner.adopt(tail.stream, [(0, "rec/0.mp3"), (1, "rec/1.mp3"), (2, "rec/2.mp3")]))
    assert [(r.seq_no, r.lost) for r in made] == [
        (1, ("started", "completed", "uploaded")),
        (2, ("started", "completed", "uploaded")),
    ]
    assert [(v.seq_no, v.state) for v in sorted(t.segments(room_id="r1"), key=lambda v: v.seq_no)] == [
        (0, "uploaded"),
        (1, "uploaded"),
        (2, "uploaded"),
    ]
    # A listing that failed is tried again after its delay, by one claimant.
    assert t.run(t.inner.adopt(tails[1].stream, [], 20.0)) == []
    assert t.run(t.inner.claim_tails(10, 30)) == []
    clock.advance(21)
    assert [c.stream for c in t.run(t.inner.claim_tails(10, 30))] == [tails[1].stream]
    assert t.run(t.inner.adopt(tails[1].stream, [])) == []  # listed: nothing no callback announced
    # Heard from again: armed again, listed again once quiet.
    t.record(fev(1, seq=3))
    clock.advance(61)
    t.sweep()
    assert [c.next_seq for c in t.run(t.inner.claim_tails(10, 30))] == [4]
    assert_consistent(t)


def test_without_checks_no_stream_is_ever_listed(store: SyncStore, clock: FakeClock) -> None:
    store.record(ev(1, seq=0))
    clock.advance(10 * CFG.retention_seconds)
    store.sweep()
    assert store.run(store.inner.claim_tails(10, 30)) == []


def test_an_app_without_start_callbacks_has_no_orphans_and_no_start_counted_lost(
    store: SyncStore, clock: FakeClock
) -> None:
    """#28.5: Tencent's custom recording pushes only completion status. An app configured so
    completes and uploads without orphans; another app still has them."""
    store.run(store.inner.register_apps([BIZ, BIZ + 1], frozenset({BIZ})))
    store.record(ev(2, seq=0))
    store.record(ev(3, seq=0))
    store.record(ev(2, seq=1))
    store.record(ev(2, seq=0, biz=BIZ + 1, room="r9"))
    clock.advance(CFG.reorder_window_seconds + 1)
    moved = store.sweep()
    assert [(t.biz_id, t.state) for t in moved] == [(BIZ + 1, "orphan")]
    assert state_of(store, 0) == "uploaded"
    assert state_of(store, 1) == "completed"
    assert store.stats().orphan_events == {"completed": 1, "uploaded": 0}
    clock.advance(CFG.upload_grace_seconds)
    assert sorted((t.biz_id, t.seq_no, t.state) for t in store.sweep()) == [
        (BIZ, 1, "upload_missing"),
        (BIZ + 1, 0, "upload_missing"),
    ]
    assert_consistent(store)


def test_a_stream_forgotten_at_capacity_is_not_taken_for_a_new_one_when_it_comes_back(
    make: Make, clock: FakeClock
) -> None:
    """Streams are bounded by the capacity too (a flood of tasks must not grow memory): the one
    heard from longest ago is forgotten, and tracking counts as begun anew, so when it comes back
    its earlier SeqNos (heard, then forgotten) are not revealed as never announced."""
    t = make(replace(CFG, max_segments=3), clock)
    t.record(ev(1, seq=0, room="first"))
    clock.advance(10 * CFG.max_recording_seconds)  # tracking long enough to reveal below a new stream
    for room in ("a", "b", "c"):
        t.record(ev(1, seq=0, room=room))  # the third forgets the stream of room "first"
    t.record(ev(1, seq=2, room="first"))
    assert [v.state for v in t.segments(room_id="first")] == ["recording"]
    assert t.stats().by_state["expected"] == 0
    assert_consistent(t)


def test_large_seqnos_reveal_the_same_segments_in_both_stores(store: SyncStore) -> None:
    """Review finding: Lua's `..` writes 100000000000001 as 1e+14, so the Redis store keyed the
    segments a large SeqNo reveals wrongly (and could not split the key back). Keys are now
    formatted as integers, and SeqNo is bounded where the script's doubles are exact."""
    base = 10**14
    store.record(ev(1, seq=base))
    store.record(ev(1, seq=base + 3))
    assert sorted((v.seq_no, v.state) for v in store.segments()) == [
        (base, "recording"),
        (base + 1, "expected"),
        (base + 2, "expected"),
        (base + 3, "recording"),
    ]
    assert_consistent(store)


def test_a_tail_listing_that_skips_a_seqno_reveals_it(make: Make, clock: FakeClock) -> None:
    """Review finding: a quiet stream's listing finds SeqNo 3's file but none of SeqNo 2: a file
    of SeqNo n says 0..n-1 exist, so 2 is expected (and unannounced at its window's end) rather
    than skipped for good."""
    cfg = replace(CHECKING, tail_quiet_seconds=60)
    t = make(cfg, clock)
    for e in (1, 2, 3):
        t.record(fev(e, seq=0))
        t.record(fev(e, seq=1))
    clock.advance(61)
    t.sweep()
    (tail,) = t.run(t.inner.claim_tails(10, 30))
    made = t.run(t.inner.adopt(tail.stream, [(3, "rec/3.mp3")]))
    assert [r.seq_no for r in made] == [3]
    assert sorted((v.seq_no, v.state) for v in t.segments()) == [
        (0, "uploaded"),
        (1, "uploaded"),
        (2, "expected"),
        (3, "uploaded"),
    ]
    assert_consistent(t)
