"""The snapshot file of the in-memory store: written atomically every few seconds and at
shutdown, read back at start, and never a reason to crash-loop. (The format is the store's:
:mod:`gme_recwatch.stores.snapshot`.)"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .clock import Clock
from .metrics import Metrics
from .stores import Snapshottable


class SnapshotFile:
    def __init__(self, path: str, store: Snapshottable, metrics: Metrics, log: Any, clock: Clock) -> None:
        self.path = Path(path) if path else None
        self.store = store
        self.metrics = metrics
        self.log = log
        self.clock = clock

    def restore(self) -> int:
        """Load the snapshot if there is one. Any failure is logged and counted; start empty."""
        if self.path is None:
            return 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.log.info("snapshot_absent", path=str(self.path))
            return 0
        except OSError as exc:
            return self._restore_failed(f"unreadable: {exc.strerror or exc}")
        try:
            n = self.store.restore(data)
        except ValueError as exc:
            return self._restore_failed(f"corrupt: {exc}")
        self.metrics.snapshot_restored.set(n)
        self.log.info("snapshot_restored", path=str(self.path), segments=n, bytes=len(data))
        return n

    def _restore_failed(self, why: str) -> int:
        self.metrics.snapshot_failures.labels("restore").inc()
        self.log.error("snapshot_restore_failed", path=str(self.path), error=why)
        return 0

    def write(self, clean: bool = False) -> bool:
        """Snapshot and write now, all on this thread (used at shutdown: ``clean`` marks the
        final snapshot of a clean stop)."""
        if self.path is None:
            return False
        started = time.perf_counter()
        return self._persist(self.store.snapshot(clean), started)

    async def write_in_background(self) -> bool:
        """Copy the state on the event loop (consistent, a memcpy per column), then encode,
        write and fsync on a worker thread, so callbacks are not held up by the disk."""
        if self.path is None:
            return False
        started = time.perf_counter()
        encode = self.store.prepare_snapshot()
        self.metrics.snapshot_loop_seconds.set(time.perf_counter() - started)
        return await asyncio.to_thread(lambda: self._persist(encode(), started))

    def _persist(self, data: bytes, started: float) -> bool:
        """Write atomically (temp file, fsync, rename); False, logged and counted, on failure."""
        assert self.path is not None
        tmp_name = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".snapshot-", dir=self.path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, self.path)
            tmp_name = None
        except OSError as exc:
            self.metrics.snapshot_failures.labels("write").inc()
            self.log.error("snapshot_write_failed", path=str(self.path), error=exc.strerror or str(exc))
            return False
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
        elapsed = time.perf_counter() - started
        self.metrics.snapshot_duration.set(elapsed)
        self.metrics.snapshot_last_success.set(self.clock.time())
        self.log.debug(
            "snapshot_written",
            path=str(self.path),
            segments=len(self.store),
            bytes=len(data),
            seconds=round(elapsed, 4),
        )
        return True
