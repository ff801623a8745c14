"""The snapshot file of the in-memory store: written atomically every few seconds and at
shutdown, read back at start, and never a reason to crash-loop. (The format is the store's:
:mod:`gme_recwatch.stores.snapshot`.)

Beside it, the *running mark* (``<state file>.running``, holding the Unix time the process
started): written and fsynced at start, before anything listens, and removed only once the final
snapshot of a clean stop is on disk. A start that finds it knows the previous process did not
stop cleanly, whatever the snapshot says -- a crash soon after a clean restart, before the next
periodic snapshot, left the clean stop's snapshot in place -- and that what it acknowledged since
it started is lost: a blind window from then (:mod:`gme_recwatch.blind`)."""

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

    @property
    def running_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(self.path.name + ".running")

    def running_since(self) -> float | None:
        """When the previous process started, if it never stopped cleanly (its running mark is
        still there); None otherwise. An unreadable mark counts as one from the epoch: the
        snapshot's own time then bounds the window."""
        path = self.running_path
        if path is None:
            return None
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return 0.0
        try:
            return float(text.strip())
        except ValueError:
            return 0.0

    def mark_running(self) -> bool:
        """Put the running mark on disk (fsynced, with its directory), before any callback is
        acknowledged. False, logged and counted as a failed write, if it cannot be."""
        path = self.running_path
        if path is None:
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, repr(self.clock.time()).encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(path.parent)
        except OSError as exc:
            self.metrics.snapshot_failures.labels("write").inc()
            self.log.error("running_mark_write_failed", path=str(path), error=exc.strerror or str(exc))
            return False
        return True

    def clear_running(self) -> None:
        """A clean stop whose final snapshot is on disk: the next start has nothing to fear."""
        path = self.running_path
        if path is None:
            return
        try:
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:  # the next start counts a crash: a window too many, never too few
            self.log.error("running_mark_remove_failed", path=str(path), error=exc.strerror or str(exc))

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


def _fsync_dir(path: Path) -> None:
    """Make a file's creation, rename or removal in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
