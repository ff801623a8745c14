"""What only the in-memory store has: its snapshot format, and the bounds that keep it
proportional to the segments it holds. (Its lifecycle behaviour is in test_stores.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import msgspec
import pytest
from conftest import Tracked
from test_stores import CFG, DEFAULTS, TASK, assert_consistent, ev

from gme_recwatch.clock import FakeClock
from gme_recwatch.lifecycle import Config
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


def tracked(loop: asyncio.AbstractEventLoop, clock: FakeClock, cfg: Config = CFG) -> Tracked:
    return Tracked(MemoryStore(cfg, clock), clock, loop)


def test_snapshot_restores_state_and_deadlines_keep_running(
        loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
    t = tracked(loop, clock)
    t.record(ev(1, seq=0))
    t.record(ev(2, seq=1))
    for e in (1, 2, 3):
        t.record(ev(e, seq=2))
    data = t.store.snapshot()
    clock.advance(30)  # "down" for 30 s: past the reorder window, short of grace and stuck
    t2 = tracked(loop, clock)
    assert t2.store.restore(data) == 3
    assert {v.seq_no: v.state for v in t2.segments()} == {0: "recording", 1: "orphan", 2: "uploaded"}
    assert_consistent(t2)
    clock.advance(71)
    t2.sweep()
    assert {v.seq_no: v.state for v in t2.segments()} == {0: "stuck", 1: "upload_missing", 2: "uploaded"}
    assert t2.segments()[0].task_id == TASK


def test_snapshot_restored_by_another_process_keeps_wall_clock_deadlines(
        loop: asyncio.AbstractEventLoop) -> None:
    """A new process has another monotonic clock: deadlines follow wall time across it."""
    old_clock = FakeClock(mono=50.0)
    t = tracked(loop, old_clock)
    t.record(ev(1))
    new_clock = FakeClock(mono=9_000.0, wall=old_clock.wall + 60)  # restarted a minute later
    t2 = tracked(loop, new_clock)
    t2.store.restore(t.store.snapshot())
    view = t2.segments()[0]
    assert view.first_received_at == pytest.approx(old_clock.wall)
    assert view.next_deadline_at == pytest.approx(old_clock.wall + CFG.max_recording_seconds)


@pytest.mark.parametrize("junk", [b"", b"not msgpack", b"\x93\x01\x02\x03", b"\xc1" * 10,
                                  msgspec.msgpack.encode([99, 0.0, 0.0, [], b"", b"", b"", b"",
                                                          b"", b"", b""])])
def test_corrupt_or_unknown_snapshot_is_refused_and_leaves_the_store_empty(
        junk: bytes, loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
    t = tracked(loop, clock)
    with pytest.raises(ValueError):
        t.store.restore(junk)
    assert len(t) == 0


def test_snapshot_of_a_future_version_is_refused_by_name(loop: asyncio.AbstractEventLoop,
                                                          clock: FakeClock) -> None:
    data = msgspec.msgpack.encode([snapshot_format.VERSION + 1, 0.0, 0.0])
    with pytest.raises(ValueError, match="unsupported snapshot version"):
        tracked(loop, clock).store.restore(data)


def test_restore_needs_an_empty_store(loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
    t = tracked(loop, clock)
    t.record(ev(1))
    with pytest.raises(ValueError, match="empty"):
        t.store.restore(t.store.snapshot())


def test_a_flood_of_keys_past_capacity_keeps_capacity_and_then_expires(
        loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
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
        loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
    t = tracked(loop, clock)
    for seq in range(6):
        t.record(ev(1, seq=seq))
    clock.advance(500)
    t.record(ev(2, seq=4))          # seq 4 keeps living; the rest expire
    clock.advance(600)
    t.sweep()
    assert len(t) == 1
    t.record(ev(3, seq=9))          # reuses a freed slot
    t2 = tracked(loop, clock)
    assert t2.store.restore(t.store.snapshot()) == 2
    assert sorted((v.seq_no, v.state) for v in t2.segments()) == [(4, "upload_missing"), (9, "uploaded")]
    assert_consistent(t2)
