"""Memory per tracked segment at 100k and 1M segments, in-process.

Fills a fresh in-memory store through ``record()`` (one process per size and lifecycle, so earlier
fills do not hide in the allocator) and reports bytes per segment two ways: tracemalloc's
net Python allocations, and the process RSS delta (what the container's limit sees). Events
are created on the fly and dropped, so neither figure includes them.

    .venv/bin/python benchmarks/memory.py
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _fill import STATE_MIX, events, machine, rss_bytes

from gme_recwatch.clock import FakeClock
from gme_recwatch.settings import Settings
from gme_recwatch.stores import MemoryStore


def measure(n: int, lifecycle: tuple[int, ...], use_tracemalloc: bool) -> dict[str, float]:
    gc.collect()
    rss0 = rss_bytes()
    if use_tracemalloc:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if use_tracemalloc else 0
    store = MemoryStore(Settings(max_segments=max(n, 1)).lifecycle(), FakeClock())
    for ev in events(n, lifecycle):
        store.record_now(ev)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base if use_tracemalloc else 0
    if use_tracemalloc:
        tracemalloc.stop()
    rss = rss_bytes() - rss0
    assert len(store) == n
    return {
        "segments": n,
        "tracemalloc_bytes_per_segment": traced / n if use_tracemalloc else None,
        "rss_bytes_per_segment": rss / n,
    }


def main() -> int:
    if len(sys.argv) == 4:  # child: one measurement
        n, state, tm = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
        lifecycle = dict(STATE_MIX)[state]
        print(json.dumps({"state": state, **measure(n, lifecycle, tm)}))
        return 0
    rows = []
    for n in (100_000, 1_000_000):
        for state, _ in STATE_MIX:
            # tracemalloc at 1M takes minutes and agrees with 100k within 2%: RSS only there.
            for tm in ("0", "1") if n <= 100_000 else ("0",):
                out = subprocess.run(
                    [sys.executable, __file__, str(n), state, tm], check=True, capture_output=True, text=True
                ).stdout
                rows.append(json.loads(out))
                print(out.strip(), flush=True)
    merged: dict[tuple[int, str], dict[str, float]] = {}
    for r in rows:
        m = merged.setdefault((r["segments"], r["state"]), {})
        for k, v in r.items():
            if v is not None and (k != "rss_bytes_per_segment" or r["tracemalloc_bytes_per_segment"] is None):
                m[k] = v
    print(json.dumps({"machine": machine()}))
    print("| segments | state | tracemalloc B/segment | RSS delta B/segment |")
    print("|---:|---|---:|---:|")
    for (n, state), m in merged.items():
        tm_text = f"{m['tracemalloc_bytes_per_segment']:.0f}" if "tracemalloc_bytes_per_segment" in m else "-"
        print(f"| {n:,} | {state} | {tm_text} | {m['rss_bytes_per_segment']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
