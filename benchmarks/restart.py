"""Restart with a million tracked segments: how long the callback port stays closed.

Fills an in-memory store with N segments (half recording, a quarter completed, a quarter
uploaded), measures how long taking a snapshot holds the event loop (`prepare_snapshot`, the
copy; encoding and the write run on a worker thread), writes the snapshot file, then starts the
real `gme-recwatch serve` on it and times, from process start, `/readyz` answering 200 and the
callback port accepting connections. Several starts; the median is reported.

    .venv/bin/python benchmarks/restart.py --segments 1000000 --starts 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fill import machine, mixed_events

from gme_recwatch.clock import SystemClock
from gme_recwatch.metrics import Metrics
from gme_recwatch.settings import Settings
from gme_recwatch.snapshots import SnapshotFile
from gme_recwatch.stores import MemoryStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_snapshot(n: int, path: Path) -> dict[str, float]:
    store = MemoryStore(Settings(max_segments=max(n, 1)).lifecycle(), SystemClock())
    for ev in mixed_events(0, n):
        store.record_now(ev)
    holds = []
    for _ in range(6):  # as the periodic snapshots go: each encoded before the next
        t0 = time.perf_counter()
        encode = store.prepare_snapshot()
        holds.append(time.perf_counter() - t0)
        encode()
    holds = holds[1:]  # the first allocates the reusable buffers
    t0 = time.perf_counter()
    ok = SnapshotFile(str(path), store, Metrics(), _Quiet(), SystemClock()).write()
    assert ok
    return {
        "segments": n,
        "loop_hold_ms_median": round(statistics.median(holds) * 1000, 1),
        "loop_hold_ms_max": round(max(holds) * 1000, 1),
        "encode_and_write_s": round(time.perf_counter() - t0, 2),
        "snapshot_mb": round(path.stat().st_size / 2**20, 1),
    }


class _Quiet:
    def __getattr__(self, _: str) -> object:
        return lambda *a, **k: None


def start_once(path: Path, n: int) -> dict[str, float]:
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GME_RECWATCH_", "OTEL_"))}
    env.update(
        GME_RECWATCH_SECRET_KEY="bench-secret",
        GME_RECWATCH_HOST="127.0.0.1",
        GME_RECWATCH_ADMIN_HOST="127.0.0.1",
        GME_RECWATCH_PORT=str(port),
        GME_RECWATCH_ADMIN_PORT=str(admin),
        GME_RECWATCH_STATE_FILE=str(path),
        GME_RECWATCH_MAX_SEGMENTS=str(max(n, 100)),  # the smallest capacity accepted
        GME_RECWATCH_LOG_FORMAT="json",
    )
    exe = Path(sys.executable).with_name("gme-recwatch")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    accepting = ready = None
    try:
        while ready is None and time.perf_counter() - t0 < 120:
            if accepting is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
                    accepting = time.perf_counter() - t0
                except OSError:
                    pass
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=0.5).status_code == 200:
                    ready = time.perf_counter() - t0
                    segments = httpx.get(f"http://127.0.0.1:{admin}/readyz").json()["segments"]
                    assert segments == n, (segments, n)
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        if accepting is None:  # both opened within the last poll
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            accepting = ready
    finally:
        proc.terminate()
        proc.wait(60)
    assert ready is not None and accepting is not None
    return {"callback_accepting_s": round(accepting, 3), "ready_s": round(ready, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=1_000_000)
    p.add_argument("--starts", type=int, default=5)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="restart-"))
    print(json.dumps({"machine": machine()}))
    print(json.dumps(write_snapshot(args.segments, work / "state.snapshot")), flush=True)
    empty = work / "empty.snapshot"
    write_snapshot(0, empty)
    for label, path, n in (("empty", empty, 0), ("full", work / "state.snapshot", args.segments)):
        runs = [start_once(path, n) for _ in range(args.starts)]
        print(
            json.dumps(
                {
                    "snapshot": label,
                    "segments": n,
                    "runs": runs,
                    "ready_s_median": statistics.median(r["ready_s"] for r in runs),
                    "accepting_s_median": statistics.median(r["callback_accepting_s"] for r in runs),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
