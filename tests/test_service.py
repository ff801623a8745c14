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


def _blind(service: Service, cause: str) -> float:
    value = service.metrics.registry.get_sample_value("gme_recording_blind_seconds_total", {"cause": cause})
    assert value is not None
    return value


def _restart(path: Path, clock: FakeClock, retry: float = 60.0) -> tuple[Service, Log]:
    service = Service(
        Settings(secret_key=SECRET, state_file=str(path), sender_retry_seconds=retry), clock=clock
    )
    log = Log()
    service.log = log
    asyncio.run(service.start())
    return service, log


def _clean_stop(path: Path, clock: FakeClock) -> None:
    service = Service(Settings(secret_key=SECRET, state_file=str(path)), clock=clock)
    service.store.record_now(started(0))  # type: ignore[attr-defined]

    async def run() -> None:
        await service.start()
        service.start_background()
        await service.stop()

    asyncio.run(run())


def test_clean_restart_within_the_retry_horizon_is_no_blind_window(tmp_path: Path) -> None:
    clock = FakeClock()
    _clean_stop(tmp_path / "state", clock)
    clock.advance(30)
    service, log = _restart(tmp_path / "state", clock)
    assert [e for e, _ in log.events if e == "blind_window"] == []
    assert _blind(service, "restart_after_clean_stop") == 0
    assert service.metrics.registry.get_sample_value("gme_recording_blind_window_start_timestamp_seconds") == 0


def test_clean_restart_beyond_the_retry_horizon_is_blind_for_the_excess(tmp_path: Path) -> None:
    clock = FakeClock()
    _clean_stop(tmp_path / "state", clock)
    stopped = clock.time()
    clock.advance(100)
    service, log = _restart(tmp_path / "state", clock, retry=60)
    assert _blind(service, "restart_after_clean_stop") == 40
    windows = [kw for e, kw in log.events if e == "blind_window"]
    assert windows == [
        {"start": stopped + 60, "end": stopped + 100, "cause": "restart_after_clean_stop", "blind_seconds": 40}
    ]
    r = service.metrics.registry
    assert r.get_sample_value("gme_recording_blind_window_start_timestamp_seconds") == stopped + 60
    assert r.get_sample_value("gme_recording_blind_window_end_timestamp_seconds") == stopped + 100


def test_restart_after_a_crash_is_blind_from_the_last_snapshot(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state"
    crashed = Service(Settings(secret_key=SECRET, state_file=str(path)), clock=clock)
    crashed.store.record_now(started(0))  # type: ignore[attr-defined]
    assert crashed.snapshots is not None
    assert crashed.snapshots.write()  # a periodic snapshot; then kill -9: no final one
    saved = clock.time()
    clock.advance(5)
    service, log = _restart(path, clock)
    assert _blind(service, "restart_after_crash") == 5
    assert [kw for e, kw in log.events if e == "blind_window"] == [
        {"start": saved, "end": saved + 5, "cause": "restart_after_crash", "blind_seconds": 5}
    ]


def test_store_outage_is_blind_beyond_the_retry_horizon_only() -> None:
    clock = FakeClock()
    service = Service(Settings(secret_key=SECRET, sender_retry_seconds=60), clock=clock)
    log = Log()
    service.log = log
    service._store_answered(False, "ping", RuntimeError("down"))
    clock.advance(30)
    service._store_answered(True, "ping")  # short: Tencent's retries covered it
    assert _blind(service, "store_unreachable") == 0
    service._store_answered(False, "ping", RuntimeError("down"))
    failed = clock.time()
    clock.advance(90)
    service._store_answered(True, "ping")
    assert _blind(service, "store_unreachable") == 30
    assert [kw for e, kw in log.events if e == "blind_window"] == [
        {"start": failed + 60, "end": failed + 90, "cause": "store_unreachable", "blind_seconds": 30}
    ]


def test_segments_live_at_a_crash_end_unverified_and_later_ones_are_paged(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state"
    crashed = Service(Settings(secret_key=SECRET, state_file=str(path)), clock=clock)
    crashed.store.record_now(started(0))  # type: ignore[attr-defined]
    assert crashed.snapshots is not None and crashed.snapshots.write()
    clock.advance(5)
    service, log = _restart(path, clock)
    service.store.record_now(started(1))  # type: ignore[attr-defined]
    clock.advance(service.settings.max_recording_seconds + 1)
    asyncio.run(service.sweep())
    by_event = {(e, kw["seq_no"]): kw for e, kw in log.events if e.startswith("segment_")}
    assert set(by_event) == {("segment_unverified", 0), ("segment_stuck", 1)}
    assert by_event[("segment_unverified", 0)]["blind_window_end"] == clock.time() - (
        service.settings.max_recording_seconds + 1
    )
    assert (
        service.metrics.registry.get_sample_value("gme_recording_unverified_total", {"app_id": "1400000000"})
        == 1
    )


def _redis_service(url: str, prefix: str, clock: FakeClock) -> tuple[Service, Log]:
    from gme_recwatch.stores.redis import RedisStore

    settings = Settings(secret_key=SECRET, max_recording_seconds=100)
    store = RedisStore.from_url(url, settings.lifecycle(), prefix=prefix, clock=clock)
    service = Service(settings, clock=clock, store=store)
    log = Log()
    service.log = log
    return service, log


def _windows(log: Log) -> list[dict[str, Any]]:
    return [kw for e, kw in log.events if e == "blind_window"]


def test_shared_store_every_replica_down_beyond_the_retry_horizon_is_blind(redis_server: Any) -> None:
    import uuid

    clock, prefix = FakeClock(), f"svc-{uuid.uuid4().hex[:8]}:"

    async def run() -> None:
        first, log = _redis_service(redis_server.url, prefix, clock)
        await first.start()
        assert _windows(log) == []  # nothing ran before
        await first.store.record(started(0))
        stopped = clock.time()
        await first.stop()  # the last replica stops cleanly
        clock.advance(30)
        quick, log = _redis_service(redis_server.url, prefix, clock)
        await quick.start()
        assert _windows(log) == []  # a rolling restart within the retry horizon
        clock.advance(3)
        other, log = _redis_service(redis_server.url, prefix, clock)
        await other.start()
        assert _windows(log) == []  # `quick` is alive
        await other.store.close()
        await quick.store.close()  # both die: no clean stop
        clock.advance(100)
        late, log = _redis_service(redis_server.url, prefix, clock)
        await late.start()
        assert _windows(log) == [
            {
                "start": stopped + 33 + 60,
                "end": stopped + 133,
                "cause": "all_replicas_down",
                "blind_seconds": 40,
            }
        ]
        await late.store.record(started(1))
        clock.advance(101)
        await late.sweep()
        states = {kw["seq_no"]: e for e, kw in log.events if e.startswith("segment_")}
        assert states == {0: "segment_unverified", 1: "segment_stuck"}
        await late.stop()

    asyncio.run(run())


def _wipe(url: str, prefix: str) -> None:
    """What a Redis restarted without persistence leaves of this installation: nothing."""
    import redis as redis_sync

    client = redis_sync.Redis.from_url(url)
    keys = list(client.scan_iter(match="{" + prefix[:-1] + "}:*"))  # the prefix as the store's hash tag
    if keys:
        client.delete(*keys)
    client.close()


async def _two_replicas(url: str, prefix: str, clock: FakeClock) -> tuple[Service, Log, Service, Log]:
    """Two services started on one Redis prefix, the first making the epoch marker."""
    a, log_a = _redis_service(url, prefix, clock)
    b, log_b = _redis_service(url, prefix, clock)
    await a.start()
    await b.start()
    return a, log_a, b, log_b


def test_a_shared_store_that_comes_back_empty_is_one_reset_blind_since_the_marker_was_seen(
    redis_server: Any,
) -> None:
    """Two replicas; the store loses everything. The replica that finds it first counts one
    reset, logs it at error level with the segments known before, and opens a blind window from
    when the marker was last seen; the other only says it saw it. A segment recorded between
    the loss and its discovery is then unverified at its deadline, never stuck."""
    import uuid

    clock, prefix = FakeClock(), f"svc-{uuid.uuid4().hex[:8]}:"

    async def run() -> None:
        a, log_a, b, log_b = await _two_replicas(redis_server.url, prefix, clock)
        assert [e for e, _ in log_a.events if e == "store_epoch_created"]  # first use
        for seq in range(3):
            await a.store.record(started(seq))
        await a.check_store()
        await b.check_store()
        seen = clock.time()
        clock.advance(2)
        _wipe(redis_server.url, prefix)
        await b.store.record(started(7))  # answered 200 by the empty store
        clock.advance(1)
        await a.check_store()
        await b.check_store()
        await a.check_store()  # the new marker is a's own: nothing more
        await b.check_store()
        resets = [
            m.registry.get_sample_value("gme_recording_store_resets_total") for m in (a.metrics, b.metrics)
        ]
        assert resets == [1, 0]
        assert [kw for e, kw in log_a.events if e == "store_reset"] == [
            {"segments_before": 3, "segments_now": 1, "marker_last_seen": seen, "found_at": clock.time()}
        ]
        assert [e for e, _ in log_b.events if e == "store_reset"] == []
        assert [kw for e, kw in log_b.events if e == "store_reset_seen"] == [
            {"segments_before": 3, "segments_now": 1}
        ]
        assert _windows(log_a)[-1] == {
            "start": seen,
            "end": clock.time(),
            "cause": "store_reset",
            "blind_seconds": 3,
        }
        assert [w["cause"] for w in _windows(log_b)] == []
        # The reset took the heartbeats: both are back, so a replica starting now is not blind.
        newest, _, now = await b.store.last_alive()  # type: ignore[attr-defined]
        assert newest == now
        clock.advance(101)
        await b.sweep()
        await a.sweep()
        states = {kw["seq_no"]: e for log in (log_a, log_b) for e, kw in log.events if e.startswith("segment_")}
        assert states == {7: "segment_unverified"}
        await a.stop()
        await b.stop()

    asyncio.run(run())


def test_checks_of_the_store_that_overlap_report_a_reset_once(redis_server: Any) -> None:
    """After a store outage the sweep checks the store too, beside the check every second: the
    two can overlap. They must not both act on the marker the replica knew: the finder logs one
    `store_reset` and no `store_reset_seen`, the other one `store_reset_seen` (both were seen
    twice in an e2e run under load, before the checks were made one at a time)."""
    import uuid

    clock, prefix = FakeClock(), f"svc-{uuid.uuid4().hex[:8]}:"

    async def run() -> None:
        a, log_a, b, log_b = await _two_replicas(redis_server.url, prefix, clock)
        await a.store.record(started(1))
        await asyncio.gather(a.check_store(), b.check_store())
        _wipe(redis_server.url, prefix)
        clock.advance(1)
        await asyncio.gather(a.check_store(), a.check_store(), a.check_store())
        await asyncio.gather(b.check_store(), b.check_store(), b.check_store())
        assert [e for e, _ in log_a.events if e.startswith("store_reset")] == ["store_reset"]
        assert [e for e, _ in log_b.events if e.startswith("store_reset")] == ["store_reset_seen"]
        await a.stop()
        await b.stop()

    asyncio.run(run())


def test_the_service_finds_store_abilities_by_protocol_never_by_hasattr_any_or_ignores() -> None:
    """What only a shared store can do is the SharedStore protocol (stores/base.py), checked
    with isinstance, as Snapshottable is: no duck-typing by name, no Any, no type: ignore."""
    import ast
    import inspect

    import gme_recwatch.service as service_module

    source = inspect.getsource(service_module)
    names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    assert "hasattr" not in names and "Any" not in names
    assert "type: ignore" not in source
    assert "isinstance(self.store, SharedStore)" in source


def test_the_epoch_marker_reports_each_reset_to_exactly_one_replica_whatever_the_order(
    redis_server: Any,
) -> None:
    """Three replicas (their known markers) against one real Redis: a replica starting on the
    emptied store before the others look, and a replica that sleeps through two resets, still
    make one report per reset, and nobody takes turns resetting the marker afterwards."""
    import uuid

    from gme_recwatch.stores.redis import RedisStore

    prefix = f"epoch-{uuid.uuid4().hex[:8]}:"
    settings = Settings(secret_key=SECRET)

    async def run() -> list[str]:
        store = RedisStore.from_url(redis_server.url, settings.lifecycle(), prefix=prefix)
        known = {"a": "", "b": "", "c": ""}
        reports: list[str] = []

        async def look(replica: str) -> str:
            e = await store.epoch(known[replica])
            known[replica] = e.marker
            if e.status == "reset":
                reports.append(replica)
            return e.status

        assert [await look("a"), await look("b")] == ["created", "adopted"]
        _wipe(redis_server.url, prefix)  # reset 1: c starts on the empty store first
        assert await look("c") == "created"
        assert [await look("a"), await look("b")] == ["reset", "changed"]
        _wipe(redis_server.url, prefix)  # resets 2 and 3: b sleeps through both
        assert await look("a") == "reset"
        _wipe(redis_server.url, prefix)
        assert [await look("a"), await look("b"), await look("c")] == ["reset", "changed", "changed"]
        for _ in range(3):  # settled: the same marker for everyone, nothing more reported
            assert {await look(r) for r in known} == {"same"}
        assert len(set(known.values())) == 1
        await store.close()
        return reports

    assert asyncio.run(run()) == ["a", "a", "a"]


def test_after_a_store_reset_the_keyring_s_apps_are_listed_again(redis_server: Any, tmp_path: Any) -> None:
    """A reset takes the app labels with it: the replica that sees it gives the keyring's apps
    their labels back at once, so their series exist before their next callback."""
    import uuid

    from gme_recwatch.stores.redis import RedisStore

    keys = tmp_path / "keys"
    keys.write_text("1400000001=k1\n1400000002=k2\n")
    prefix = f"apps-{uuid.uuid4().hex[:8]}:"
    clock = FakeClock()
    settings = Settings(keys_file=str(keys), max_recording_seconds=100)
    store = RedisStore.from_url(redis_server.url, settings.lifecycle(), prefix=prefix, clock=clock)
    service = Service(settings, clock=clock, store=store)
    service.log = Log()

    async def run() -> tuple[list[str], list[str]]:
        await service.start()
        before = (await service.store.stats()).app_labels
        _wipe(redis_server.url, prefix)
        clock.advance(2)
        await service.check_store()
        after = (await service.store.stats()).app_labels
        await service.stop()
        return before, after

    assert asyncio.run(run()) == (["1400000001", "1400000002"], ["1400000001", "1400000002"])
