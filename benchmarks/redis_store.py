"""The Redis store at scale: Redis memory per segment, scrape time and the deadline sweep.

Starts its own redis-server (Debian `redis-server`) on a free loopback port, no persistence,
and drives the real RedisStore from one asyncio loop, as a replica does.

* memory: fills N segments (half recording, a quarter completed, a quarter uploaded, as
  benchmarks/memory.py) and divides the growth of `INFO memory` used_memory by N; and the time
  Redis spent in the scripts per event (`INFO commandstats`: EVALSHA microseconds / events;
  wall time, so a loaded machine inflates it: ingest_backends.py reads CPU time instead);
* scrape: `Service.refresh_stats()` + `generate_latest()` with those N segments in Redis;
* sweep: D recordings fall due at once; the replica's sweep (rounds of 5000, yielding between
  them) runs while a second task stores new callbacks one at a time: time until every due
  segment is reported, and the latency of those callbacks meanwhile (p50/p99/max).

    .venv/bin/python benchmarks/redis_store.py --segments 1000000 --due 100000
    .venv/bin/python benchmarks/redis_store.py --segments 200000 --due 0 --cluster

With --cluster, the same on a Redis Cluster of three masters with a replica each (tests/conftest.py
RedisClusterServers); memory and CPU are the store's master's (the store is one slot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _fill import machine, mixed_events
from conftest import RedisClusterServers, RedisServer
from prometheus_client import generate_latest

from gme_recwatch import logging as log_setup
from gme_recwatch.clock import FakeClock
from gme_recwatch.events import STARTED, Event
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.stores.redis import RedisStore

CONCURRENCY = 32  # the store pool's connections: more would only queue


async def fill(store: RedisStore, events: list[Event]) -> float:
    queue = iter(events)
    started = time.perf_counter()

    async def worker() -> None:
        for ev in queue:
            await store.record(ev)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


def script_usec(server: RedisServer) -> float:
    import redis as redis_sync

    c = redis_sync.Redis(port=server.port)
    try:
        return float(c.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))
    finally:
        c.close()


async def memory_and_scrape(server: RedisServer, n: int, url: str) -> dict[str, float]:
    settings = Settings(secret_key="bench", redis_url=url, max_segments=max(n, 1))
    clock = FakeClock(wall=time.time())
    store = RedisStore.from_url(url, settings.lifecycle(), prefix="m:", clock=clock)
    service = Service(settings, clock=clock, store=store)
    await store.register_apps([1400000000])
    before, usec = server.used_memory(), script_usec(server)
    events = list(mixed_events(0, n))
    seconds = await fill(store, events)
    assert await store.count() == n
    used = server.used_memory() - before
    usec = script_usec(server) - usec
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        await service.refresh_stats()
        body = generate_latest(service.metrics.registry)
        times.append(time.perf_counter() - t0)
    await store.close()
    return {
        "segments": n,
        "events": len(events),
        "fill_seconds": round(seconds, 1),
        "events_per_second": round(len(events) / seconds),
        "redis_bytes_per_segment": round(used / n, 1),
        "redis_script_us_per_event": round(usec / len(events), 1),
        "scrape_ms_median": round(statistics.median(times) * 1000, 2),
        "scrape_ms_max": round(max(times) * 1000, 2),
        "scrape_bytes": len(body),
    }


async def sweep_under_load(url: str, due: int) -> dict[str, float]:
    settings = Settings(secret_key="bench", redis_url=url, max_segments=due * 2, max_recording_seconds=3600)
    clock = FakeClock(wall=time.time())
    store = RedisStore.from_url(url, settings.lifecycle(), prefix="w:", clock=clock)
    log_setup.configure("warning", "json", open("/dev/null", "w"))
    service = Service(settings, clock=clock, store=store)
    await fill(
        store,
        [Event(1400000000, f"room-{i // 4}", f"u{i % 4}", 1, 0, STARTED, 1, 1_700_000_000) for i in range(due)],
    )
    clock.advance(3601)
    latencies: list[float] = []
    done = asyncio.Event()

    async def callbacks() -> None:
        i = 0
        while not done.is_set():
            t0 = time.perf_counter()
            await store.record(Event(1400000001, f"live-{i}", "u", 2, 0, STARTED, 1, 1_700_000_000))
            latencies.append(time.perf_counter() - t0)
            i += 1
            await asyncio.sleep(0.002)  # ~ a few hundred callbacks a second

    load = asyncio.create_task(callbacks())
    t0 = time.perf_counter()
    await service.sweep()
    swept = time.perf_counter() - t0
    done.set()
    await load
    stats = await store.stats()
    await store.close()
    latencies.sort()
    return {
        "due": due,
        "stuck_reported": sum(stats.stuck_total.values()),
        "sweep_seconds": round(swept, 2),
        "callbacks_during_sweep": len(latencies),
        "callback_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "callback_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "callback_ms_max": round(latencies[-1] * 1000, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=1_000_000)
    p.add_argument("--due", type=int, default=100_000)
    p.add_argument("--cluster", action="store_true", help="on a Redis Cluster of three masters")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    cluster = RedisClusterServers(workdir) if args.cluster else None
    server = cluster.master_of(cluster.keyslot("{m}:t"))[0] if cluster else RedisServer(workdir)
    url = cluster.url if cluster else server.url
    try:
        print(json.dumps({"machine": machine(), "redis": server.binary, "cluster": bool(cluster)}))
        print(json.dumps(asyncio.run(memory_and_scrape(server, args.segments, url))), flush=True)
        if args.due:
            print(json.dumps(asyncio.run(sweep_under_load(url, args.due))), flush=True)
    finally:
        if cluster:
            cluster.stop()
        else:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
