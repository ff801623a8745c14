"""The snapshot file: atomic writes, restore at start, and failures that are counted and logged
but never stop the service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import Event
from gme_recwatch.metrics import Metrics
from gme_recwatch.settings import Settings
from gme_recwatch.snapshots import SnapshotFile
from gme_recwatch.stores import MemoryStore


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))

    def events(self) -> list[str]:
        return [e for _, e, _ in self.lines]


def store(clock: FakeClock, n: int = 3) -> MemoryStore:
    s = MemoryStore(Settings().lifecycle(), clock)
    for seq in range(n):
        s.record_now(Event(1400000000, "r", "u", 1, seq, 1, 1, 1_700_000_000))
    return s


def value(metric: Any, **labels: str) -> float:
    return float(metric.labels(**labels)._value.get() if labels else metric._value.get())


def test_written_snapshot_restores_into_a_new_store(tmp_path: Path) -> None:
    clock = FakeClock()
    metrics, log = Metrics(), Log()
    path = tmp_path / "state" / "snap"
    assert SnapshotFile(str(path), store(clock), metrics, log, clock).write()
    assert value(metrics.snapshot_last_success) == clock.wall  # the injected clock's time
    fresh = MemoryStore(Settings().lifecycle(), clock)
    assert SnapshotFile(str(path), fresh, Metrics(), Log(), clock).restore() == 3
    assert len(fresh) == 3
    assert [p.name for p in path.parent.iterdir()] == ["snap"]  # no temp file left behind


def test_background_write_gives_the_same_file(tmp_path: Path) -> None:
    clock = FakeClock()
    s = store(clock)
    a, b = tmp_path / "a", tmp_path / "b"
    SnapshotFile(str(a), s, Metrics(), Log(), clock).write()
    assert asyncio.run(SnapshotFile(str(b), s, Metrics(), Log(), clock).write_in_background())
    assert a.read_bytes() == b.read_bytes()


def test_absent_snapshot_starts_empty_without_counting_a_failure(tmp_path: Path) -> None:
    metrics, log = Metrics(), Log()
    s = MemoryStore(Settings().lifecycle(), FakeClock())
    assert SnapshotFile(str(tmp_path / "none"), s, metrics, log, FakeClock()).restore() == 0
    assert value(metrics.snapshot_failures, operation="restore") == 0
    assert log.events() == ["snapshot_absent"]


def test_corrupt_snapshot_is_counted_logged_and_the_store_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(b"\x00garbage")
    metrics, log = Metrics(), Log()
    s = MemoryStore(Settings().lifecycle(), FakeClock())
    assert SnapshotFile(str(path), s, metrics, log, FakeClock()).restore() == 0
    assert len(s) == 0
    assert value(metrics.snapshot_failures, operation="restore") == 1
    assert log.events() == ["snapshot_restore_failed"]
    assert log.lines[0][2]["error"].startswith("corrupt:")


def test_a_write_into_a_path_that_is_a_directory_fails_counted_and_logged(tmp_path: Path) -> None:
    clock = FakeClock()
    (tmp_path / "snap").mkdir()
    metrics, log = Metrics(), Log()
    assert not SnapshotFile(str(tmp_path / "snap"), store(clock), metrics, log, clock).write()
    assert value(metrics.snapshot_failures, operation="write") == 1
    assert "snapshot_write_failed" in log.events()
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]  # the temp file was removed


def test_only_a_clean_stop_marks_the_snapshot_clean() -> None:
    clock = FakeClock()
    for clean in (False, True):
        restored = MemoryStore(Settings(secret_key="x").lifecycle(), FakeClock())
        restored.restore(store(clock).snapshot(clean=clean))
        assert restored.restored_from == (clock.time(), clean)


def test_a_version_2_snapshot_reads_as_written_before_a_crash() -> None:
    data = (Path(__file__).parent / "golden" / "snapshot-v2.msgpack").read_bytes()
    restored = MemoryStore(Settings(secret_key="x").lifecycle(), FakeClock())
    restored.restore(data)
    assert restored.restored_from is not None
    assert restored.restored_from[1] is False


def test_blind_marks_survive_a_snapshot() -> None:
    clock = FakeClock()
    s = store(clock)
    window = (clock.time() - 1.0, clock.time())  # it ends when it is found, as every window does
    assert s.mark_blind_now(*window) == len(s)
    restored = MemoryStore(Settings(secret_key="x").lifecycle(), FakeClock())
    restored.restore(s.snapshot())
    assert {(v.blind_window_start, v.blind_window_end) for v in restored.find()} == {window}
