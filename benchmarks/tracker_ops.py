"""Tracker transitions per second, and the cost of the deadline sweep as segments grow.

In-process with a fake clock. Transitions: ``record()`` of pre-built events (started,
completed, uploaded for each segment), events built before the clock starts. Sweep, at 10k,
100k and 1M tracked segments (all recording, started within one second):

* idle: a sweep with nothing due (what the once-a-second loop costs almost always);
* due: the clock moved past ``max_recording_seconds``, every segment turns stuck in one
  sweep: the worst case, reported per segment due.

    .venv/bin/python benchmarks/tracker_ops.py
"""

from __future__ import annotations

import gc
import json
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _fill import events, machine

from gme_recwatch.events import COMPLETED, STARTED, UPLOADED
from gme_recwatch.tracker import FakeClock, Tracker, TrackerConfig


def transitions(n: int) -> dict[str, float]:
    evs = list(events(n, (STARTED, COMPLETED, UPLOADED)))
    # Interleave: every segment's started first, then completions, then uploads.
    ordered = evs[0::3] + evs[1::3] + evs[2::3]
    tracker = Tracker(TrackerConfig(max_segments=n), FakeClock())
    gc.collect()
    t0 = time.perf_counter()
    for ev in ordered:
        tracker.record(ev)
    dt = time.perf_counter() - t0
    return {"segments": n, "events": len(ordered), "seconds": dt, "events_per_second": len(ordered) / dt,
            "us_per_event": dt / len(ordered) * 1e6}


def sweep(n: int) -> dict[str, float]:
    clock = FakeClock()
    cfg = TrackerConfig(max_segments=n)
    tracker = Tracker(cfg, clock)
    for ev in events(n, (STARTED,)):
        tracker.record(ev)
    clock.advance(1.5)
    t0 = time.perf_counter()
    for _ in range(100):
        tracker.sweep()
    idle = (time.perf_counter() - t0) / 100
    clock.advance(cfg.max_recording_seconds)
    t0 = time.perf_counter()
    out = tracker.sweep()
    due = time.perf_counter() - t0
    assert len(out) == n and tracker.stats().by_state["stuck"] == n
    return {"segments": n, "idle_sweep_us": idle * 1e6, "all_due_sweep_ms": due * 1000,
            "us_per_due_segment": due / n * 1e6}


def main() -> int:
    print(json.dumps({"machine": machine()}))
    print("| segments | events | events/s | µs/event |")
    print("|---:|---:|---:|---:|")
    for n in (100_000, 1_000_000):
        r = transitions(n)
        print(f"| {n:,} | {r['events']:,} | {r['events_per_second']:,.0f} | {r['us_per_event']:.2f} |",
              flush=True)
    print()
    print("| segments | idle sweep µs | all-due sweep ms | µs per due segment |")
    print("|---:|---:|---:|---:|")
    for n in (10_000, 100_000, 1_000_000):
        r = sweep(n)
        print(f"| {n:,} | {r['idle_sweep_us']:.1f} | {r['all_due_sweep_ms']:,.1f} | "
              f"{r['us_per_due_segment']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
