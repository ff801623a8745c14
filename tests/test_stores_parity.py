"""Parity: the same random operations, driven through both stores at once (the in-memory one and
the Redis one on a real redis-server), give the same books after every step -- the same API view
of every segment, the same gauges and counters, the same answers.

The operations are what a service does and suffers: callbacks (any order, duplicates, several
apps past ``max_apps``, rooms), the clock moving across every deadline and past the retention,
full sweeps, capacity pressure (a capacity of a few segments), blind windows (marked over the
store while it moves on), COS checks (claims and their answers), apps registered from the
keyring, a store outage (the callback is answered 503 and changes nothing anywhere), and a reset
(the store comes back empty: a restart without a state file, a Redis without persistence; the
replica restarts with it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from conftest import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gme_recwatch.clock import FakeClock
from gme_recwatch.events import Event
from gme_recwatch.lifecycle import Backoff, Config
from gme_recwatch.settings import Settings
from gme_recwatch.stores import MemoryStore, StoreUnavailable
from gme_recwatch.stores.redis import RedisStore

BASE = replace(
    Settings().lifecycle(),
    max_recording_seconds=100,
    upload_grace_seconds=50,
    reorder_window_seconds=10,
    retention_seconds=200,
    max_apps=2,
    tail_quiet_seconds=30,  # quiet streams are listed within the gaps below (with checks on)
)
# Gaps (whole seconds, so no event lands on a window's end) that cross every deadline above.
GAPS = [0, 1, 5, 9, 10, 11, 49, 50, 51, 99, 100, 101, 199, 200, 250]
ANSWERS = ("found", "not_found", "error")

EVENT = st.tuples(
    st.just("event"),
    st.sampled_from([1, 2, 3]),
    st.integers(0, 4),  # seq
    st.integers(1, 3),  # BizID: three apps for two labels
    st.sampled_from(["ra", "rb"]),
)
OPS = st.lists(
    st.one_of(
        EVENT,
        EVENT,
        EVENT,
        st.tuples(st.just("advance"), st.sampled_from(GAPS)),
        st.tuples(st.just("sweep")),
        st.tuples(st.just("blind"), st.integers(1, 120)),
        st.tuples(st.just("check"), st.sampled_from(ANSWERS)),
        st.tuples(st.just("tails"), st.sampled_from(["listed", "failed"])),
        st.tuples(st.just("apps"), st.lists(st.integers(1, 5), max_size=3)),
        st.tuples(st.just("outage"), st.sampled_from([1, 2, 3]), st.integers(0, 4)),
        st.tuples(st.just("reset")),
    ),
    max_size=30,
)
# How much was compared: printed at the end of the module (`pytest -s`), for BENCHMARKS-style
# reporting of the parity test's size.
RAN = {"examples": 0, "operations": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_size() -> Iterator[None]:
    import time

    started = time.perf_counter()
    yield
    print(
        f"\nparity: {RAN['examples']} examples, {RAN['operations']} operations, each followed by "
        f"a full comparison, in {time.perf_counter() - started:.1f} s"
    )


def ev(event_type: int, seq: int, biz: int = 1, room: str = "ra") -> Event:
    return Event(biz, room, "u", 7, seq, event_type, 1, 1_700_000_000 + 10 * seq + event_type, "f.mp3")


class Pair:
    """The two stores, one fake clock each, moved together."""

    def __init__(self, cfg: Config, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg, self.url, self.loop = cfg, url, loop
        self.mclock, self.rclock = FakeClock(), FakeClock()
        self.prefix = f"p{uuid.uuid4().hex[:10]}:"
        self.memory = MemoryStore(cfg, self.mclock)
        self.redis = RedisStore.from_url(url, cfg, prefix=self.prefix, clock=self.rclock)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def both(self, name: str, *args: Any) -> tuple[Any, Any]:
        return self.run(getattr(self.memory, name)(*args)), self.run(getattr(self.redis, name)(*args))

    def advance(self, seconds: float) -> None:
        self.mclock.advance(seconds)
        self.rclock.advance(seconds)

    def reset(self) -> None:
        """The store comes back empty and the replica restarts: a new process on each side."""
        self.run(self.redis.client.flushdb())
        self.run(self.redis.close())
        self.memory = MemoryStore(self.cfg, self.mclock)
        self.redis = RedisStore.from_url(self.url, self.cfg, prefix=self.prefix, clock=self.rclock)

    def close(self) -> None:
        self.run(self.redis.client.flushdb())
        self.run(self.redis.close())


def _views(pages: Any) -> list[dict[str, Any]]:
    out = []
    for v in pages:
        d = dataclasses.asdict(v)
        for k, x in d.items():
            if isinstance(x, float) and math.isfinite(x):
                d[k] = round(x, 6)
        out.append(d)
    return out


def assert_same_books(p: Pair, step: Any) -> None:
    m_stats, r_stats = p.both("stats")
    assert dataclasses.asdict(m_stats) == dataclasses.asdict(r_stats), step
    m_views = _views(p.run(p.memory.segments(limit=10**6)))
    r_views = _views(p.run(p.redis.segments(limit=10**6)))
    assert m_views == r_views, step  # the same segments, in the same order, field for field


def _sweep(p: Pair) -> None:
    for _ in range(100):
        m, r = p.both("sweep", 10**6)
        key = lambda t: (t.biz_id, t.room_id, t.seq_no, t.state)  # noqa: E731
        assert sorted(m.transitions, key=key) == sorted(r.transitions, key=key)
        if not (m.more or r.more):
            return
    raise AssertionError("the sweep never finished")


def _step(p: Pair, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "event":
        _, e, seq, biz, room = op
        m, r = p.both("record", ev(e, seq, biz, room))
        assert m == r
    elif kind == "advance":
        p.advance(op[1])
    elif kind == "sweep":
        _sweep(p)
    elif kind == "blind":
        # A window that ended half a second ago (events land on whole seconds), as the service
        # marks one: after the store has moved on.
        end = p.rclock.time() - 0.5
        m, r = p.both("mark_blind", end - op[1], end)
        assert m == r
    elif kind == "check":
        m = p.run(p.memory.claim(1000, 60.0))
        r = p.run(p.redis.claim(1000, 60.0))
        assert sorted(c.key for c in m) == sorted(c.key for c in r)
        for c in sorted(m, key=lambda c: c.key):
            # (crc32, not hash(): str hashes change with every process, and an example must replay)
            answer = ANSWERS[(zlib.crc32(c.key.encode()) + ANSWERS.index(op[1])) % 3]
            m_res, r_res = p.both("resolve", c.key, answer, Backoff(10.0, 40.0, 0.37))  # failed: retried
            assert m_res == r_res
    elif kind == "tails":
        # Quiet streams' listings (#28.3): handed out alike, and what a listing finds (the next
        # two SeqNos' files) adopted alike, or the failed listing put back alike.
        m = p.run(p.memory.claim_tails(1000, 60.0))
        r = p.run(p.redis.claim_tails(1000, 60.0))
        assert sorted(m, key=lambda c: c.stream) == sorted(r, key=lambda c: c.stream)
        for c in sorted(m, key=lambda c: c.stream):
            files = [(c.next_seq, f"t{c.next_seq}.mp3"), (c.next_seq + 1, f"t{c.next_seq + 1}.mp3")]
            if op[1] == "failed":
                assert p.both("adopt", c.stream, [], 30.0) == ([], [])
            else:
                m_made, r_made = p.both("adopt", c.stream, files)
                assert m_made == r_made
    elif kind == "apps":
        p.both("register_apps", op[1])
    elif kind == "outage":
        # Redis does not answer: the callback gets a 503 and changes nothing in either store.
        dead = RedisStore.from_url("redis://127.0.0.1:9/0", p.cfg, prefix=p.prefix, clock=p.rclock, timeout=0.2)
        with pytest.raises(StoreUnavailable):
            p.run(dead.record(ev(op[1], op[2])))
        p.run(dead.close())
    elif kind == "reset":
        p.reset()


@pytest.fixture
def pairs(redis_server: RedisServer) -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    opened: list[Pair] = []

    def make(cfg: Config) -> Pair:
        # A database of its own on the session's server: a reset empties it (FLUSHDB).
        opened.append(pair := Pair(cfg, redis_server.url.rsplit("/", 1)[0] + "/15", loop))
        return pair

    yield make
    for pair in opened:
        pair.close()
    loop.close()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(ops=OPS, capacity=st.integers(2, 6), checks=st.booleans())
def test_both_stores_keep_the_same_books_after_every_step(
    pairs: Any, ops: list[tuple[Any, ...]], capacity: int, checks: bool
) -> None:
    p = pairs(replace(BASE, max_segments=capacity, check_in_cos=checks))
    try:
        assert_same_books(p, "start")
        for i, op in enumerate(ops):
            _step(p, op)
            assert_same_books(p, (i, op, ops, capacity, checks))
        RAN["examples"] += 1
        RAN["operations"] += len(ops)
    finally:
        p.close()
