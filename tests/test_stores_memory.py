"""What only the in-memory store has: its snapshot format, and the bounds that keep it
proportional to the segments it holds. (Its lifecycle behaviour is in test_stores.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from conftest import SyncStore
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stores import CFG, DEFAULTS, TASK, assert_consistent, ev

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import Event
from gme_recwatch.lifecycle import Backoff, Config
from gme_recwatch.stores import MemoryStore
from gme_recwatch.stores import snapshot as snapshot_format


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tracked(loop: asyncio.AbstractEventLoop, clock: FakeClock, cfg: Config = CFG) -> SyncStore:
    return SyncStore(MemoryStore(cfg, clock), clock, loop)


def test_snapshot_restores_state_and_deadlines_keep_running(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    t = tracked(loop, clock)
    t.record(ev(1, seq=0))
    t.record(ev(2, seq=1))
    for e in (1, 2, 3):
        t.record(ev(e, seq=2))
    data = t.inner.snapshot()
    clock.advance(30)  # "down" for 30 s: past the reorder window, short of grace and stuck
    t2 = tracked(loop, clock)
    assert t2.inner.restore(data) == 3
    assert_consistent(t2)  # the tallies came back as they were written
    t2.sweep()  # the first sweep applies what fell due while the service was down
    assert {v.seq_no: v.state for v in t2.segments()} == {0: "recording", 1: "orphan", 2: "uploaded"}
    assert_consistent(t2)
    clock.advance(71)
    t2.sweep()
    assert {v.seq_no: v.state for v in t2.segments()} == {0: "stuck", 1: "upload_missing", 2: "uploaded"}
    assert t2.segments()[0].task_id == TASK


def test_snapshot_restored_by_another_process_keeps_wall_clock_deadlines(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A new process has another monotonic clock: deadlines follow wall time across it."""
    old_clock = FakeClock(mono=50.0)
    t = tracked(loop, old_clock)
    t.record(ev(1))
    new_clock = FakeClock(mono=9_000.0, wall=old_clock.wall + 60)  # restarted a minute later
    t2 = tracked(loop, new_clock)
    t2.inner.restore(t.inner.snapshot())
    view = t2.segments()[0]
    assert view.first_received_at == pytest.approx(old_clock.wall)
    assert view.next_deadline_at == pytest.approx(old_clock.wall + CFG.max_recording_seconds)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"not msgpack",
        b"\x93\x01\x02\x03",
        b"\xc1" * 10,
        msgspec.msgpack.encode([99, 0.0, 0.0, [], b"", b"", b"", b"", b"", b"", b""]),
    ],
)
def test_corrupt_or_unknown_snapshot_is_refused_and_leaves_the_store_empty(
    junk: bytes, loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    t = tracked(loop, clock)
    with pytest.raises(ValueError):
        t.inner.restore(junk)
    assert len(t) == 0


def test_snapshot_of_a_future_version_is_refused_by_name(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    data = msgspec.msgpack.encode([snapshot_format.VERSION + 1, 0.0, 0.0])
    with pytest.raises(ValueError, match="unsupported snapshot version"):
        tracked(loop, clock).inner.restore(data)


def test_restore_needs_an_empty_store(loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
    t = tracked(loop, clock)
    t.record(ev(1))
    with pytest.raises(ValueError, match="empty"):
        t.inner.restore(t.inner.snapshot())


def test_a_flood_of_keys_past_capacity_keeps_capacity_and_then_expires(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    t = tracked(loop, clock, replace(DEFAULTS, max_segments=100, retention_seconds=10_000))
    for seq in range(20_000):
        t.record(ev(1, seq=seq))
    assert len(t) == 100
    assert t.stats().evictions[("capacity", "recording")] == 19_900
    clock.advance(30_000)
    t.sweep()
    assert len(t) == 0
    assert_consistent(t)


def test_snapshot_with_freed_slots_restores_only_live_segments(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    t = tracked(loop, clock)
    for seq in range(6):
        t.record(ev(1, seq=seq))
    clock.advance(500)
    t.record(ev(2, seq=4))  # seq 4 keeps living; the rest expire
    clock.advance(600)
    t.sweep()
    assert len(t) == 1
    t.record(ev(3, seq=6))  # reuses a freed slot (the next SeqNo: no gap revealed)
    t2 = tracked(loop, clock)
    assert t2.inner.restore(t.inner.snapshot()) == 2
    assert sorted((v.seq_no, v.state) for v in t2.segments()) == [(4, "upload_missing"), (6, "uploaded")]
    assert_consistent(t2)


GOLDEN_V2 = Path(__file__).resolve().parent / "golden" / "snapshot-v2.msgpack"


def test_a_snapshot_written_by_the_previous_version_still_restores(loop: asyncio.AbstractEventLoop) -> None:
    """tests/golden/snapshot-v2.msgpack was written by the tracker before the store split (format
    version 2, columns only): a recording, a completion without its start, an uploaded segment,
    at wall time 1_700_000_000."""
    clock = FakeClock(mono=50.0, wall=1_700_000_030.0)  # another process, 30 s later
    t = tracked(loop, clock)
    assert t.inner.restore(GOLDEN_V2.read_bytes()) == 3
    assert {v.seq_no: v.state for v in t.segments()} == {0: "recording", 1: "orphan", 2: "uploaded"}
    assert [v.first_received_at for v in t.segments()] == [1_700_000_000.0] * 3
    assert t.segments()[0].task_id == TASK
    assert_consistent(t)
    clock.advance(71)
    t.sweep()
    assert {v.seq_no: v.state for v in t.segments()} == {0: "stuck", 1: "upload_missing", 2: "uploaded"}


def test_restore_brings_back_tallies_eviction_order_and_deadlines_without_recounting(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    cfg = replace(DEFAULTS, max_segments=3, retention_seconds=10_000, max_recording_seconds=100)
    t = tracked(loop, clock, cfg)
    for e in (1, 2, 3):
        t.record(ev(e, seq=1))  # terminal: the first to go at capacity
    t.record(ev(1, seq=0))
    t.record(ev(1, seq=2, room="r2"))
    before = t.stats()
    t2 = tracked(loop, clock, cfg)
    t2.inner.restore(t.inner.snapshot())
    assert t2.stats() == before
    t2.record(ev(1, seq=2))  # over capacity: the uploaded one goes, as before
    assert sorted((v.room_id, v.seq_no) for v in t2.segments()) == [("r1", 0), ("r1", 2), ("r2", 2)]
    clock.advance(101)
    assert sorted((m.room_id, m.seq_no) for m in t2.sweep()) == [("r1", 0), ("r1", 2), ("r2", 2)]
    assert_consistent(t2)


@settings(max_examples=50, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 6), st.floats(0, 80)), max_size=30),
    downtime=st.floats(0, 300),
)
def test_a_restored_store_goes_on_exactly_as_the_original_would(
    ops: list[tuple[int, int, float]], downtime: float
) -> None:
    """Snapshot at any point, restore elsewhere after any downtime: from the next sweep on, the
    restored store and the original agree on every segment and every tally."""
    loop = asyncio.new_event_loop()
    try:
        clock = FakeClock()
        cfg = replace(CFG, max_segments=5)
        a = tracked(loop, clock, cfg)
        for event_type, seq, dt in ops:
            a.record(ev(event_type, seq=seq))
            clock.advance(dt)
            a.sweep()
        data = a.inner.snapshot()
        clock.advance(downtime)
        b = tracked(loop, FakeClock(mono=7.0, wall=clock.wall), cfg)
        b.inner.restore(data)
        a.sweep()
        b.sweep()

        def view(t: SyncStore) -> list[tuple[int, str, float | None]]:
            return sorted((v.seq_no, v.state, v.next_deadline_at) for v in t.segments())

        # Deadlines equal to well under a millisecond: the restored store's receive clock is
        # another offset from another monotonic clock, so the last bits of a Unix time differ
        # (rounding both to 3 places failed on a time that fell on the rounding boundary).
        va, vb = view(a), view(b)
        assert [(seq, state) for seq, state, _ in va] == [(seq, state) for seq, state, _ in vb]
        for (_, _, da), (_, _, db) in zip(va, vb, strict=True):
            assert (da is None) == (db is None)
            assert da is None or db is None or abs(da - db) < 1e-4
        for name in ("active_recordings", "stuck", "missing_uploads", "by_state", "oldest_start"):
            assert getattr(a.stats(), name) == getattr(b.stats(), name), name
        assert_consistent(b)
    finally:
        loop.close()


def test_a_snapshot_still_being_encoded_is_not_overwritten_by_the_next(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    """Periodic snapshots reuse their column buffers; one prepared while the previous is still
    encoding (a worker thread, at shutdown) must get buffers of its own."""
    t = tracked(loop, clock)
    t.record(ev(1, seq=0))
    first = t.inner.prepare_snapshot()
    t.record(ev(1, seq=1))
    second = t.inner.prepare_snapshot()
    t.record(ev(1, seq=2))
    third_data = t.inner.snapshot()
    for encode, n in ((first, 1), (second, 2)):
        restored = tracked(loop, clock)
        assert restored.inner.restore(encode()) == n
    restored = tracked(loop, clock)
    assert restored.inner.restore(third_data) == 3
    assert_consistent(restored)


def test_a_pending_check_and_its_file_name_survive_a_snapshot(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    """A claim dies with its process: after a restore the check is handed out again."""
    cfg = replace(CFG, check_in_cos=True)
    t = tracked(loop, clock, cfg)
    t.record(msgspec.structs.replace(ev(1), file_name="rec/0.mp3"))
    clock.advance(101)
    t.sweep()
    assert len(t.run(t.inner.claim(10, 60.0))) == 1  # claimed, never answered
    t2 = tracked(loop, clock, cfg)
    t2.inner.restore(t.inner.snapshot())
    (c,) = t2.run(t2.inner.claim(10, 60.0))
    assert (c.file_name, c.pending) == ("rec/0.mp3", "stuck")
    assert t2.stats().checks_pending == 1
    assert t2.run(t2.inner.resolve(c.key, "not_found")).confirmed is True
    t3 = tracked(loop, clock, cfg)
    t3.inner.restore(t2.inner.snapshot())
    (v,) = t3.segments()
    assert (v.state, v.confirmed) == ("stuck", True)
    assert_consistent(t3)


def test_a_lookup_waiting_for_its_retry_is_retried_at_once_after_a_restore(
    loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    """The retry times die with the process: a restored unconfirmed segment is looked up again
    at the first claim, not left unconfirmed for good."""
    cfg = replace(CFG, check_in_cos=True)
    t = tracked(loop, clock, cfg)
    t.record(msgspec.structs.replace(ev(1, seq=0), file_name="rec/0.mp3"))
    clock.advance(101)
    t.sweep()
    (c,) = t.inner.claim_now(10, 60)
    t.inner.resolve_now(c.key, "error", Backoff(600, 900, 1.0))
    assert t.inner.claim_now(10, 60) == []  # waiting for its retry, 600 s away
    t2 = tracked(loop, clock, cfg)
    t2.inner.restore(t.inner.snapshot())
    assert [x.key for x in t2.inner.claim_now(10, 60)] == [c.key]
    assert [(v.state, v.confirmed) for v in t2.segments()] == [("stuck", False)]


def test_a_tail_listing_queued_or_claimed_survives_a_restore(loop: asyncio.AbstractEventLoop) -> None:
    """Review finding: a stream queued for its listing (its tail armed no more) was written to
    the snapshot as not due, so after a restart its lost last segment was never looked for."""
    clock = FakeClock()
    cfg = replace(DEFAULTS, check_in_cos=True, tail_quiet_seconds=100, max_recording_seconds=1000)
    t = tracked(loop, clock, cfg)
    t.record(Event(1400000000, "r1", "u1", 7, 0, 1, 1, 1_700_000_000, "f0.mp3"))
    clock.advance(150)
    t.sweep()
    assert len(t.run(t.inner.claim_tails(10, 30))) == 1  # claimed, then the process dies
    t2 = tracked(loop, FakeClock(mono=5.0, wall=clock.wall), cfg)
    t2.inner.restore(t.inner.snapshot())
    t2.sweep()
    assert [c.next_seq for c in t2.run(t2.inner.claim_tails(10, 30))] == [1]


def test_the_stream_heap_stays_bounded_by_the_capacity(loop: asyncio.AbstractEventLoop) -> None:
    """Review finding: streams forgotten at capacity left their heap entries for the retention."""
    clock = FakeClock()
    t = tracked(loop, clock, replace(DEFAULTS, max_segments=100))
    for task in range(5000):
        t.record(Event(1400000000, "r1", "u1", task, 0, 1, 1, 1_700_000_000))
    streams = t.inner._streams
    assert len(streams) <= 100
    assert len(streams._heap) <= 2 * len(streams) + 1024
