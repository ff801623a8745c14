"""In-memory store transitions per second, and the cost of the deadline sweep as segments grow.

In-process with a fake clock. Transitions: ``record()`` of pre-built events (started,
completed, uploaded for each segment), events built before the clock starts. Sweep, at 10k,
100k and 1M tracked segments (all recording, started within one second):

* idle: a sweep with nothing due (what the once-a-second loop costs almost always);
* due: the clock moved past ``max_recording_seconds``, every segment turns stuck in one
  sweep: the worst case, reported per segment due.
* budgeted: the same, but swept the way the service does it, ``sweep(5000)`` rounds until
  ``has_due()`` is false; the worst round is the longest the event loop is blocked. At 1M,
  also ``Service.sweep(5000)`` rounds, which add the ``segment_stuck`` log line per segment
  (JSON to /dev/null).

    .venv/bin/python benchmarks/store_ops.py
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from _fill import events, machine

from gme_recwatch import logging as log_setup
from gme_recwatch.clock import FakeClock
from gme_recwatch.events import COMPLETED, STARTED, UPLOADED
from gme_recwatch.settings import Settings
from gme_recwatch.stores import MemoryStore


def transitions(n: int) -> dict[str, float]:
    evs = list(events(n, (STARTED, COMPLETED, UPLOADED)))
    # Interleave: every segment's started first, then completions, then uploads.
    ordered = evs[0::3] + evs[1::3] + evs[2::3]
    store = MemoryStore(Settings(max_segments=n).lifecycle(), FakeClock())
    gc.collect()
    t0 = time.perf_counter()
    for ev in ordered:
        store.record_now(ev)
    dt = time.perf_counter() - t0
    return {
        "segments": n,
        "events": len(ordered),
        "seconds": dt,
        "events_per_second": len(ordered) / dt,
        "us_per_event": dt / len(ordered) * 1e6,
    }


def sweep(n: int) -> dict[str, float]:
    clock = FakeClock()
    cfg = Settings(max_segments=n).lifecycle()
    store = MemoryStore(cfg, clock)
    for ev in events(n, (STARTED,)):
        store.record_now(ev)
    clock.advance(1.5)
    t0 = time.perf_counter()
    for _ in range(100):
        store.sweep_now()
    idle = (time.perf_counter() - t0) / 100
    clock.advance(cfg.max_recording_seconds)
    t0 = time.perf_counter()
    out = store.sweep_now()
    due = time.perf_counter() - t0
    assert len(out) == n and store.stats_now().by_state["stuck"] == n
    return {
        "segments": n,
        "idle_sweep_us": idle * 1e6,
        "all_due_sweep_ms": due * 1000,
        "us_per_due_segment": due / n * 1e6,
    }


BUDGET = 5000  # gme_recwatch.service.SWEEP_BUDGET


def _rounds(sweep_once: Callable[[], object], has_due: Callable[[], bool]) -> tuple[int, float, float, float]:
    """Rounds until nothing is due: count, worst, median and total seconds. GC stays on."""
    times = []
    while has_due():
        t0 = time.perf_counter()
        sweep_once()
        times.append(time.perf_counter() - t0)
    return len(times), max(times), statistics.median(times), sum(times)


def budgeted(n: int) -> dict[str, float]:
    """All n due at once, swept in rounds of BUDGET: rounds, worst round, total."""
    clock = FakeClock()
    cfg = Settings(max_segments=n).lifecycle()
    store = MemoryStore(cfg, clock)
    for ev in events(n, (STARTED,)):
        store.record_now(ev)
    clock.advance(1.5 + cfg.max_recording_seconds)
    gc.collect()
    rounds, worst, median, total = _rounds(lambda: store.sweep_now(BUDGET), store.has_due)
    assert store.stats_now().by_state["stuck"] == n
    return {
        "budget": BUDGET,
        "budgeted_rounds": rounds,
        "worst_round_ms": worst * 1000,
        "median_round_ms": median * 1000,
        "budgeted_total_ms": total * 1000,
    }


def service_rounds(n: int) -> dict[str, float]:
    """As budgeted(), with the segment_stuck log line per segment: one round of Service.sweep."""
    from gme_recwatch.service import SWEEP_BUDGET, Service
    from gme_recwatch.settings import Settings

    assert SWEEP_BUDGET == BUDGET
    log_setup.configure("info", "json", open(os.devnull, "w"))
    clock = FakeClock()
    service = Service(Settings(secret_key="bench-secret-0123456789", max_segments=n), clock)
    store = service.store
    assert isinstance(store, MemoryStore)
    for ev in events(n, (STARTED,)):
        store.record_now(ev)
    clock.advance(1.5 + service.settings.max_recording_seconds)
    gc.collect()
    loop = asyncio.new_event_loop()

    def one_round() -> None:  # what one pass of Service.sweep does between two yields
        done = loop.run_until_complete(store.sweep(BUDGET))
        for t in done.transitions:
            service.log.warning(
                f"segment_{t.state}",
                state=t.state,
                app_id=t.app_id,
                biz_id=t.biz_id,
                room_id=t.room_id,
                user_id=t.user_id,
                task_id=str(t.task_id),
                seq_no=t.seq_no,
            )

    rounds, worst, median, total = _rounds(one_round, store.has_due)
    assert store.stats_now().by_state["stuck"] == n
    return {
        "segments": n,
        "budget": BUDGET,
        "rounds": rounds,
        "worst_round_ms": worst * 1000,
        "median_round_ms": median * 1000,
        "total_ms": total * 1000,
    }


def main() -> int:
    print(json.dumps({"machine": machine()}))
    print("| segments | events | events/s | µs/event |")
    print("|---:|---:|---:|---:|")
    for n in (100_000, 1_000_000):
        r = transitions(n)
        print(
            f"| {n:,} | {r['events']:,} | {r['events_per_second']:,.0f} | {r['us_per_event']:.2f} |", flush=True
        )
    print()
    print(
        f"| segments | idle sweep µs | all-due sweep ms (unbudgeted) | µs per due segment "
        f"| rounds of {BUDGET} | median / worst round ms | budgeted total ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (10_000, 100_000, 1_000_000):
        r = sweep(n)
        gc.collect()
        r.update(budgeted(n))  # after the unbudgeted store is gone: one 1M store at a time
        print(
            f"| {n:,} | {r['idle_sweep_us']:.1f} | {r['all_due_sweep_ms']:,.1f} | "
            f"{r['us_per_due_segment']:.2f} | {r['budgeted_rounds']} | {r['median_round_ms']:.1f} / "
            f"{r['worst_round_ms']:.1f} | {r['budgeted_total_ms']:,.1f} |",
            flush=True,
        )
    print()
    r = service_rounds(1_000_000)
    print(json.dumps(r))
    print(
        f"| Service.sweep({BUDGET}) with segment_stuck logging, 1,000,000 due | rounds {r['rounds']} "
        f"| median / worst round {r['median_round_ms']:.1f} / {r['worst_round_ms']:.1f} ms "
        f"| total {r['total_ms']:,.1f} ms |",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
