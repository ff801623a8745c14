"""`/metrics` scrape cost at 0, 100k and 1M tracked segments.

In-process: ``generate_latest(registry)`` of the service's own Metrics with a filled in-memory store
attached (half recording, a quarter completed, a quarter uploaded, so every tally is busy).
Reports the median and p99 of repeated scrapes and the exposition size.

    .venv/bin/python benchmarks/scrape.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _fill import machine, mixed_events
from prometheus_client import generate_latest

from gme_recwatch.clock import FakeClock
from gme_recwatch.metrics import Metrics
from gme_recwatch.settings import Settings
from gme_recwatch.stores import MemoryStore


def main() -> int:
    metrics = Metrics()
    store = MemoryStore(Settings().lifecycle(), FakeClock())
    print(json.dumps({"machine": machine()}))
    print("| segments | median ms | p99 ms | bytes |")
    print("|---:|---:|---:|---:|")
    filled = 0
    for target in (0, 100_000, 1_000_000):
        add = target - filled
        for ev in mixed_events(filled, add):
            store.record_now(ev)
        filled = target
        assert len(store) == target
        for _ in range(5):
            metrics.store.update(store.stats_now())
            generate_latest(metrics.registry)
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            metrics.store.update(store.stats_now())  # what the /metrics handler does first
            body = generate_latest(metrics.registry)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(
            f"| {target:,} | {statistics.median(times):.3f} | {times[int(len(times) * 0.99) - 1]:.3f} "
            f"| {len(body):,} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
