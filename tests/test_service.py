"""The wiring: the store the settings ask for, the sweep in rounds, keyring reloads, and the
final snapshot at stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import Event
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.stores import MemoryStore

SECRET = "service-test-secret"


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.events.append((event, kw))


def started(seq: int) -> Event:
    return Event(1400000000, "r", "u", 1, seq, 1, 1, 1_700_000_000)


def test_the_in_memory_store_is_the_default() -> None:
    service = Service(Settings(secret_key=SECRET))
    assert isinstance(service.store, MemoryStore)
    assert service.snapshots is None  # no state file, no snapshots


def test_a_state_file_turns_snapshots_on(tmp_path: Path) -> None:
    service = Service(Settings(secret_key=SECRET, state_file=str(tmp_path / "s")))
    assert service.snapshots is not None


def test_sweep_reports_every_due_segment_once_across_rounds() -> None:
    clock = FakeClock()
    service = Service(Settings(secret_key=SECRET, max_recording_seconds=100), clock=clock)
    service.log = log = Log()
    store = service.store
    assert isinstance(store, MemoryStore)
    for seq in range(25):
        store.record_now(started(seq))
    clock.advance(101)
    asyncio.run(service.sweep(budget=10))
    stuck = [kw["seq_no"] for event, kw in log.events if event == "segment_stuck"]
    assert sorted(stuck) == list(range(25))
    asyncio.run(service.sweep(budget=10))
    assert len([e for e, _ in log.events if e == "segment_stuck"]) == 25  # never twice


def test_reloaded_keyring_gives_new_apps_their_series(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("1400000001=k1\n")
    service = Service(Settings(keys_file=str(keys), keys_reload_seconds=0.1))
    asyncio.run(service.start())
    keys.write_text("1400000001=k1\n1400000002=k2\n")
    asyncio.run(service.reload_keys())
    asyncio.run(service.refresh_stats())
    assert service.metrics.store.latest.app_labels == ["1400000001", "1400000002"]


def test_stop_writes_the_final_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state"
    service = Service(Settings(secret_key=SECRET, state_file=str(path)))
    store = service.store
    assert isinstance(store, MemoryStore)
    store.record_now(started(0))

    async def run() -> None:
        await service.start()
        service.start_background()
        await service.stop()

    asyncio.run(run())
    restored = Service(Settings(secret_key=SECRET, state_file=str(path)))
    asyncio.run(restored.start())
    assert asyncio.run(restored.store.count()) == 1
