"""What only the Redis store has: several replicas on one Redis, Redis's clock, outages and
restarts of a real redis-server. (Its lifecycle behaviour is in test_stores.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from conftest import RedisClusterServers, RedisServer

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import Event
from gme_recwatch.lifecycle import Backoff, Outcome, Result
from gme_recwatch.settings import Settings
from gme_recwatch.stores import StoreUnavailable
from gme_recwatch.stores import redis as redis_store
from gme_recwatch.stores.redis import RedisStore, _text, hash_tagged

CFG = replace(
    Settings().lifecycle(),
    max_recording_seconds=100,
    upload_grace_seconds=50,
    reorder_window_seconds=10,
    retention_seconds=1000,
)


def ev(event_type: int, seq: int = 0) -> Event:
    return Event(1400000000, "room", "user", 7, seq, event_type, 1, 1_700_000_000)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server this test may stop, kill and restart."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    yield server
    server.stop()


def test_three_replicas_sweeping_at_once_report_a_stuck_segment_exactly_once(redis_server: RedisServer) -> None:
    async def go() -> list[int]:
        clock = FakeClock()
        prefix = f"x{uuid.uuid4().hex[:8]}:"
        replicas = [RedisStore.from_url(redis_server.url, CFG, prefix=prefix, clock=clock) for _ in range(3)]
        for seq in range(50):
            await replicas[seq % 3].record(ev(1, seq))
        clock.advance(101)
        rounds = await asyncio.gather(*(r.sweep(7) for _ in range(10) for r in replicas))
        found = [len(s.transitions) for s in rounds]
        stuck_totals = [sum((await r.stats()).stuck_total.values()) for r in replicas]
        shared = (await replicas[0].stats()).stuck
        for r in replicas:  # one shared gauge
            assert (await r.stats()).stuck == shared
        assert shared["1400000000"] == 50
        for r in replicas:
            await r.close()
        return [sum(found), sum(stuck_totals)]

    assert asyncio.run(go()) == [50, 50]  # summed over replicas: each deadline fired once


def test_a_lookup_retried_is_claimed_by_one_replica_of_three(redis_server: RedisServer) -> None:
    async def go() -> list[int]:
        clock = FakeClock()
        prefix = f"x{uuid.uuid4().hex[:8]}:"
        cfg = replace(CFG, check_in_cos=True)
        replicas = [RedisStore.from_url(redis_server.url, cfg, prefix=prefix, clock=clock) for _ in range(3)]
        for seq in range(20):
            await replicas[0].record(msgspec.structs.replace(ev(1, seq), file_name=f"f{seq}"))
        clock.advance(101)
        await replicas[0].sweep(100)
        claimed = await replicas[1].claim(100, 60)
        for c in claimed:
            await replicas[1].resolve(c.key, "error", Backoff(10, 40, 1.0))
        clock.advance(10.5)
        rounds = await asyncio.gather(*(r.claim(3, 60) for _ in range(10) for r in replicas))
        keys = [c.key for round in rounds for c in round]
        for r in replicas:
            await r.close()
        return [len(claimed), len(keys), len(set(keys))]

    assert asyncio.run(go()) == [20, 20, 20]  # every retry handed out, each to one replica


def test_without_an_injected_clock_deadlines_run_on_redis_time(redis_server: RedisServer) -> None:
    async def go() -> float:
        store = RedisStore.from_url(redis_server.url, CFG, prefix=f"c{uuid.uuid4().hex[:8]}:")
        await store.record(ev(1))
        (view,) = await store.segments()
        await store.close()
        return view.first_received_at

    assert asyncio.run(go()) == pytest.approx(time.time(), abs=5)


def test_no_segment_key_expires_behind_the_sweeps_back(redis_server: RedisServer) -> None:
    """Every replica down for a day past the retention: the keys are still there, and the first
    sweep forgets them with every tally (a key that expired on its own took only its deadline
    with it, and left segments=1, recording=1 while the API listed nothing)."""

    async def go() -> tuple[list[int], int, dict[str, int], int]:
        prefix = f"e{uuid.uuid4().hex[:8]}:"
        clock = FakeClock()
        store = RedisStore.from_url(redis_server.url, CFG, prefix=prefix, clock=clock)
        for seq in range(5):
            await store.record(ev(1, seq))
        ttls = [await store.client.ttl(k) async for k in store.client.scan_iter(match=store.prefix + "s:*")]
        clock.advance(CFG.retention_seconds + 86400)
        await store.sweep(100)
        stats = await store.stats()
        listed = len(await store.segments())
        await store.close()
        return ttls, stats.segments, {k: v for k, v in stats.by_state.items() if v}, listed

    ttls, segments, by_state, listed = asyncio.run(go())
    assert ttls == [-1] * 5  # no TTL: the sweep decides when a segment is forgotten
    assert (segments, by_state, listed) == (0, {}, 0)


def test_a_segment_key_that_vanishes_is_noticed_counted_and_uncounted(redis_server: RedisServer) -> None:
    """A key deleted behind the service's back (an evicting maxmemory-policy, a manual DEL) is
    found by the sweep at its deadline: out of the count and every index, and counted."""

    async def go() -> tuple[int, int, int, int]:
        prefix = f"v{uuid.uuid4().hex[:8]}:"
        clock = FakeClock()
        store = RedisStore.from_url(redis_server.url, CFG, prefix=prefix, clock=clock)
        for seq in range(3):
            await store.record(ev(1, seq))
        (victim,) = [k async for k in store.client.scan_iter(match=store.prefix + "s:*0")]
        await store.client.delete(victim)
        clock.advance(CFG.max_recording_seconds + 1)
        await store.sweep(100)
        stats = await store.stats()
        listed = len(await store.segments())
        age = await store.client.zcard(store.prefix + "age")
        await store.close()
        return stats.segments, stats.segments_vanished, listed, age

    assert asyncio.run(go()) == (2, 1, 2, 2)


def test_an_unreachable_redis_fails_fast_with_store_unavailable_and_recovers(own_redis: RedisServer) -> None:
    async def go() -> tuple[float, int, list[tuple[int, str, list[str]]]]:
        store = RedisStore.from_url(own_redis.url, CFG, prefix="o:", timeout=0.5, clock=FakeClock())
        await store.record(ev(1, 0))
        own_redis.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="record"):
            await store.record(ev(1, 1))
        with pytest.raises(StoreUnavailable):
            await store.stats()
        elapsed = time.monotonic() - started
        own_redis.start()
        await store.record(ev(1, 2))  # the same client reconnects by itself
        n = await store.count()
        views = sorted((v.seq_no, v.state, v.events_seen) for v in await store.segments())
        await store.close()
        return elapsed, n, views

    elapsed, n, views = asyncio.run(go())
    assert elapsed < 3  # well under Tencent's 5 s
    # The first and the last; nothing of the failed one, which SeqNo 2 reveals as expected.
    assert n == 3
    assert views == [(0, "recording", ["started"]), (1, "expected", []), (2, "recording", ["started"])]


def test_a_redis_restart_with_aof_keeps_every_acknowledged_callback(own_redis: RedisServer) -> None:
    async def record_all() -> None:
        store = RedisStore.from_url(own_redis.url, CFG, prefix="a:", clock=FakeClock())
        for seq in range(20):
            await store.record(ev(1, seq))
        await store.close()

    async def read_back() -> tuple[int, dict[str, int]]:
        store = RedisStore.from_url(own_redis.url, CFG, prefix="a:", clock=FakeClock())
        n, stats = await store.count(), await store.stats()
        await store.close()
        return n, stats.by_state

    asyncio.run(record_all())
    own_redis.kill()  # no shutdown save: only the AOF (fsync always, as configured) survives
    own_redis.start()
    n, by_state = asyncio.run(read_back())
    assert n == 20 and by_state["recording"] == 20


def test_blind_marks_page_over_a_stable_view_while_the_store_moves(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marking goes page by page; between two pages another replica's callback evicts the
    oldest segment at capacity. No live segment is passed over (paging by offset through the
    deadline index skipped the one that slid into the page already read), and the segment
    heard of after the window ended is not marked."""
    from gme_recwatch.stores import redis as redis_module

    monkeypatch.setattr(redis_module, "_SCAN_BATCH", 2)

    async def go() -> tuple[int, list[tuple[int, bool]]]:
        clock, prefix = FakeClock(), f"b{uuid.uuid4().hex[:8]}:"
        store = RedisStore.from_url(redis_server.url, replace(CFG, max_segments=5), prefix=prefix, clock=clock)
        other = RedisStore.from_url(redis_server.url, replace(CFG, max_segments=5), prefix=prefix, clock=clock)
        for seq in range(5):
            await store.record(ev(1, seq))
            clock.advance(1)
        real_run, pages = store._run, []

        async def run(op: str, *args: object) -> object:
            reply = await real_run(op, *args)
            if op == "blind" and not pages:
                pages.append(reply)
                await other.record(ev(1, 5))  # another replica, meanwhile: the oldest goes
            return reply

        monkeypatch.setattr(store, "_run", run)
        end = clock.time() - 0.5
        marked = await store.mark_blind(end - 60, end)
        views = [(v.seq_no, v.blind_window_end is not None) for v in await store.segments()]
        await store.close()
        await other.close()
        return marked, views

    marked, views = asyncio.run(go())
    assert views == [(1, True), (2, True), (3, True), (4, True), (5, False)]
    assert marked == 5  # s0 was marked on the first page, then evicted


def test_keys_redis_evicts_are_exported_as_a_store_fault(own_redis: RedisServer) -> None:
    """An evicting Redis under memory pressure: INFO's evicted_keys is in the stats, for the gauge
    GmeRecwatchStoreEvictingKeys reads. (Which keys go is Redis's choice, so what the sweep
    then finds is pinned by the test of a deleted key above.)"""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "allkeys-lru")

    async def go() -> tuple[int, int]:
        store = RedisStore.from_url(own_redis.url, CFG, prefix="ev:", clock=FakeClock())
        for seq in range(200):
            await store.record(ev(1, seq))
        before = (await store.stats()).evicted_keys
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used - 20_000))  # below what is used: Redis evicts
        client.set("filler", "x" * 1000)  # a write makes it evict
        client.config_set("maxmemory", "0")
        after = (await store.stats()).evicted_keys
        await store.close()
        return before, after

    before, after = asyncio.run(go())
    client.close()
    assert before == 0 and after > 0


def _evalsha_calls(server: RedisServer) -> int:
    import redis as redis_sync

    client = redis_sync.Redis(port=server.port)
    calls = int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    client.close()
    return calls


def test_callbacks_arriving_together_are_written_in_few_script_calls_each_with_its_own_outcome(
    own_redis: RedisServer,
) -> None:
    """200 callbacks at once, each segment's start twice (a retry racing the original): each
    gets its own result, as one call per callback would give, in far fewer script calls."""

    async def go() -> tuple[list[Result], int, dict[str, int]]:
        store = RedisStore.from_url(own_redis.url, CFG, prefix="b:", clock=FakeClock())
        await store.ping()
        before = _evalsha_calls(own_redis)
        events = [ev(1, seq) for seq in range(100) for _ in range(2)]
        outcomes = await asyncio.gather(*(store.record(e) for e in events))
        calls = _evalsha_calls(own_redis) - before
        by_state = (await store.stats()).by_state
        await store.close()
        return [o.result for o in outcomes], calls, by_state

    results, calls, by_state = asyncio.run(go())
    assert results == [Result.ACCEPTED, Result.DUPLICATE] * 100  # in arrival order, per callback
    assert calls <= 200 // 10  # batched (one call per callback before)
    assert by_state["recording"] == 100


def test_a_failed_batch_fails_each_of_its_callbacks_and_stores_none(own_redis: RedisServer) -> None:
    async def go() -> tuple[list[BaseException | Outcome], int]:
        store = RedisStore.from_url(own_redis.url, CFG, prefix="f:", timeout=0.5, clock=FakeClock())
        await store.record(ev(1, 0))
        own_redis.kill()
        got = await asyncio.gather(*(store.record(ev(1, seq)) for seq in range(1, 50)), return_exceptions=True)
        own_redis.start()
        n = await store.count()
        await store.close()
        return got, n

    got, n = asyncio.run(go())
    assert len(got) == 49 and all(isinstance(g, StoreUnavailable) for g in got)  # a 503 each
    assert len({id(g) for g in got}) == 49  # each its own error, not one shared
    assert n == 1


@pytest.mark.parametrize(
    ("prefix", "tagged"),
    [("gme-recwatch:", "{gme-recwatch}:"), ("stage", "{stage}"), ("{ours}:x:", "{ours}:x:"), ("{}:", "{{}}:")],
)
def test_the_prefix_becomes_one_hash_tag(prefix: str, tagged: str) -> None:
    assert hash_tagged(prefix) == tagged


def test_on_a_redis_cluster_every_key_is_in_the_slot_of_the_prefix_and_the_check_names_it(
    redis_cluster: RedisClusterServers,
) -> None:
    async def go() -> tuple[str, set[int], int]:
        clock = FakeClock()
        store = RedisStore.from_url(redis_cluster.url, CFG, prefix=f"k{uuid.uuid4().hex[:8]}:", clock=clock)
        await asyncio.gather(*(store.record(ev(t, seq)) for seq in range(20) for t in (1, 2, 3)))
        clock.advance(2000)
        await store.heartbeat("r1")
        await store.epoch("")
        while (await store.sweep(1000)).more:
            pass
        checked = await store.check_online()
        slots = {
            redis_cluster.keyslot(_text(k)) async for k in store.client.scan_iter(match=store.prefix + "*")
        }
        n = await store.count()
        await store.close()
        return checked, slots, n

    checked, slots, n = asyncio.run(go())
    assert len(slots) == 1 and n == 0  # the sweep found every segment there and forgot it
    assert checked.startswith("Redis 7") and f"cluster slot {slots.pop()}, " in checked


def test_an_unreachable_redis_cluster_is_store_unavailable_not_a_crash() -> None:
    """The cluster client's own errors (no node answers, so no slot map) are not RedisErrors:
    they must still become StoreUnavailable, so a callback gets a 503 and not a 500."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def go() -> list[str]:
        store = RedisStore.from_url(f"redis+cluster://127.0.0.1:{port}", CFG, timeout=0.5, clock=FakeClock())
        errors = []
        for call in (lambda: store.record(ev(1)), store.stats, store.count, store.check_online):
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            errors.append(str(caught.value))
        await store.close()
        return errors

    errors = asyncio.run(go())
    assert len(errors) == 4 and errors[0].startswith("records: ")


def test_a_callback_arriving_as_the_last_call_in_flight_ends_is_still_written(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller of a callback just written runs before the call's task is reaped: a callback it
    sends then must start a call of its own, not wait for one that has already ended."""
    monkeypatch.setattr(redis_store, "RECORD_FLIGHTS", 1)

    async def go() -> int:
        store = RedisStore.from_url(
            redis_server.url, CFG, prefix=f"l{uuid.uuid4().hex[:8]}:", clock=FakeClock()
        )
        for seq in range(5):
            await store.record(ev(1, seq))  # in this task: no other task's wake-up in between
        n = await store.count()
        await store.close()
        return n

    assert asyncio.run(asyncio.wait_for(go(), 10)) == 5


def test_held_checks_are_counted_right_on_a_store_written_before_the_tally(redis_server: RedisServer) -> None:
    """Review finding: checks_pending is a tally the script keeps (`pend`); a store written by an
    earlier version has held checks and no tally, and would count below zero once they resolve.
    The script counts the held ones once, first."""

    async def go() -> tuple[int, int, int]:
        clock, prefix = FakeClock(), f"v{uuid.uuid4().hex[:8]}:"
        cfg = replace(CFG, check_in_cos=True)
        store = RedisStore.from_url(redis_server.url, cfg, prefix=prefix, clock=clock)
        for seq in range(3):
            await store.record(Event(1400000000, "room", f"user{seq}", 7, 0, 1, 1, 1_700_000_000, "f.mp3"))
        clock.advance(CFG.max_recording_seconds + 1)
        await store.sweep(100)
        held = (await store.stats()).checks_pending
        await store.client.hdel(store.prefix + "t", "pend")  # as an earlier version left it
        (claim, *_) = await store.claim(10, 60)
        await store.resolve(claim.key, "not_found")
        after = (await store.stats()).checks_pending
        tally = int(await store.client.hget(store.prefix + "t", "pend"))
        await store.close()
        return held, after, tally

    assert asyncio.run(go()) == (3, 2, 2)
