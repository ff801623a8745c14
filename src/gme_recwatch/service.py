"""The wiring: picks the store, builds the intake, owns the background loops.

Loops run beside the listeners: the deadline sweep (about once a second), the keyring reload,
-- for a store that keeps its state in this process -- the snapshot file, -- for a shared store
-- the store check (once a second: does it answer, is its epoch marker still there, or did it
come back empty) and the heartbeat, and with a COS bucket the reconciler, which looks files up
before a segment is called stuck or its upload missing. /readyz reads what these loops saw.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sized
from dataclasses import dataclass
from typing import Final

from opentelemetry.sdk.trace.export import SpanExporter
from structlog.typing import FilteringBoundLogger

from . import blind
from .clock import Clock, SystemClock
from .cos import CosChecker, CosConfig, CosConfigError
from .intake import Intake
from .logging import get_logger
from .metrics import Metrics
from .reconcile import Reconciler, report_problem
from .settings import Settings
from .signature import KeyringError, KeyringSource
from .snapshots import SnapshotFile
from .stores import (
    Epoch,
    MemoryStore,
    SharedStore,
    Snapshottable,
    Store,
    StoreUnavailable,
)
from .tracing import make_provider, tracer

SWEEP_BUDGET: Final = 5000  # due segments handled per round before yielding to the event loop
HEARTBEAT_SECONDS: Final = 5.0  # on a shared store: how often each replica says it is alive


def open_store(settings: Settings, clock: Clock) -> Store:
    """The store the settings ask for: Redis when a URL is set, else this process's memory."""
    if not settings.redis_url:
        return MemoryStore(settings.lifecycle(), clock)
    from .stores.redis import RedisStore

    password = None
    if settings.redis_password_file:
        with open(settings.redis_password_file, encoding="utf-8") as fh:
            password = fh.read().strip()
    return RedisStore.from_url(
        settings.redis_url,
        settings.lifecycle(),
        password=password,
        prefix=settings.redis_prefix,
        timeout=settings.redis_timeout_seconds,
    )


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz says, from state the service already keeps (never a store round trip)."""

    ready: bool
    segments: int
    """Segments tracked, as last heard from the store."""
    reason: str | None
    """Why not ready: ``starting``, ``stopping`` or ``store_unavailable``; None when ready."""


class Service:
    """Everything both listeners share: keys, store, metrics, intake, snapshots, loops."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        span_exporter: SpanExporter | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log: FilteringBoundLogger = get_logger()
        self.metrics = Metrics()
        self.keys = KeyringSource(settings.secret_key, settings.keys_file)
        self.metrics.keyring_keys.set(len(self.keys.current))
        self.metrics.canary_interval.set(settings.canary_interval_seconds)
        self.store = store if store is not None else open_store(settings, self.clock)
        self.provider = make_provider(span_exporter)
        self.intake = Intake(
            settings, self.keys, self.store, self.metrics, tracer(self.provider), self.log, self.clock
        )
        self.snapshots = (
            SnapshotFile(settings.state_file, self.store, self.metrics, self.log, self.clock)
            if settings.state_file and isinstance(self.store, Snapshottable)
            else None
        )
        try:
            cos = CosConfig.from_settings(settings)
        except OSError as exc:  # the buckets or credentials file: say which, never what is in it
            raise CosConfigError(
                f"cannot read a COS file (GME_RECWATCH_COS_BUCKETS_FILE or "
                f"GME_RECWATCH_COS_CREDENTIALS_FILE): {type(exc).__name__}"
            ) from None
        self.reconciler = (
            None
            if cos is None
            else Reconciler(
                self.store,
                CosChecker(cos, metrics=self.metrics),
                self.metrics,
                self.log,
                self.clock,
                retry=(settings.cos_retry_min_seconds, settings.cos_retry_max_seconds),
            )
        )
        if self.reconciler is not None:
            checker = self.reconciler.checker
            self.intake.on_uploaded = lambda ev: checker.witness(
                ev.biz_id,
                ev.file_name,
                room_id=ev.room_id,
                user_id=ev.user_id,
                task_id=ev.task_id,
                seq_no=ev.seq_no,
            )
        self.ready = False
        self._store_failing_since: float | None = None
        self._store_failing_since_wall = 0.0  # the same moment, for a blind window
        self._unmarked: list[blind.Window] = []  # windows whose live segments are not marked yet
        self.replica = uuid.uuid4().hex  # this process, among the replicas of a shared store
        self._epoch = ""  # the shared store's epoch marker as last seen ("" before the first)
        self._epoch_seen_at = 0.0  # when it was last seen, on the store's clock
        # One check of the store at a time: the sweep checks it after an outage, beside the check
        # every second, and two checks sent with the same known marker would both act on a reset.
        self._store_check = asyncio.Lock()
        self._segments = 0  # segments tracked, as last heard from the store
        self._epoch_segments = 0  # ... as the store counted them when the marker was last seen
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False  # the loops were started: not ready now means stopping
        # A shared store that has not answered since the start (unreachable, or still loading
        # its data): not ready, callbacks answered 503; the store check joins it once it answers.
        self._joined = not isinstance(self.store, SharedStore)
        self._apps_registered = False

    @property
    def store_healthy(self) -> bool:
        """False once the store has failed every check for ``store_unready_after_seconds``."""
        since = self._store_failing_since
        return since is None or (self.clock.monotonic() - since < self.settings.store_unready_after_seconds)

    def _store_answered(self, ok: bool, operation: str, error: Exception | None = None) -> None:
        if ok:
            if self._store_failing_since is not None:
                self.log.info("store_recovered", operation=operation)
                self._blind_window(
                    blind.after_outage(
                        self._store_failing_since_wall, self.clock.time(), self.settings.sender_retry_seconds
                    )
                )
            self._store_failing_since = None
            self.metrics.backend_up.set(1)
            return
        self.metrics.backend_errors.labels(operation).inc()
        self.metrics.backend_up.set(0)
        if self._store_failing_since is None:
            self._store_failing_since = self.clock.monotonic()
            self._store_failing_since_wall = self.clock.time()
            self.log.error("store_unavailable", operation=operation, error=str(error))

    async def start(self) -> None:
        """Bring the state back (before anything listens: ready means the state is back)."""
        if self.snapshots is not None:
            self.snapshots.restore()  # first: a snapshot brings its own app labels back
            saved = self.snapshots.store.restored_from
            # The previous process never stopped cleanly if its running mark is still there:
            # what it acknowledged since it started (or since its last snapshot, if later) is
            # lost, whatever the snapshot it left says.
            crashed = self.snapshots.running_since()
            if crashed is not None:
                saved = (max(crashed, saved[0]) if saved is not None else crashed, False)
            if saved is not None:
                self._blind_window(
                    blind.after_restart(
                        saved[0], saved[1], self.clock.time(), self.settings.sender_retry_seconds
                    )
                )
                await self.mark_blind()  # before any sweep can page them
            self.snapshots.mark_running()  # on disk before the first callback is acknowledged
        if isinstance(self.store, SharedStore):
            await self._join(self.store)
        await self._register_apps()
        if self.reconciler is not None:
            await self.reconciler.checker.open()  # loads botocore's model: not on a request

    async def _register_apps(self) -> None:
        """Give the keyring's apps their labels in the store; a store that does not answer gets
        them when it does (:meth:`check_store`)."""
        try:
            await self.store.register_apps(self.keys.current.app_ids(), self.settings.without_start)
        except StoreUnavailable as exc:
            self._store_answered(False, "ping", exc)
            return
        self._apps_registered = True

    async def _join(self, store: SharedStore) -> None:
        """On a shared store: a blind window if every replica was down, our heartbeat, and the
        store's epoch marker (taken over, or set on a store used for the first time). A store
        that does not answer (unreachable, or loading its data) is not a reason not to start:
        the service starts not ready, answers callbacks 503, and joins when the store answers."""
        try:
            newest, stopped, now = await store.last_alive()
            self._blind_window(
                blind.after_all_down(
                    newest, stopped, now, self.settings.sender_retry_seconds, HEARTBEAT_SECONDS
                )
            )
            await self.mark_blind()
            await store.heartbeat(self.replica)
            await self._epoch_answered(store, await store.epoch(self._epoch))
        except StoreUnavailable as exc:  # not a reason not to start: the store check says so
            self._store_answered(False, "ping", exc)
            return
        self._joined = True

    async def heartbeat(self) -> None:
        if not isinstance(self.store, SharedStore):
            return
        try:
            await self.store.heartbeat(self.replica)
        except StoreUnavailable as exc:
            self._store_answered(False, "ping", exc)

    async def _epoch_answered(self, store: SharedStore, epoch: Epoch) -> None:
        """Act on what the store's epoch marker says: a reset is counted, logged and made a
        blind window by the one replica that found it (the store answers ``reset`` to one
        replica only; the others see ``changed``), so one reset pages once."""
        before = self._epoch_segments
        self._segments = self._epoch_segments = epoch.segments
        if epoch.status == "reset":
            self.metrics.store_resets.inc()
            self.log.error(
                "store_reset",
                segments_before=before,
                segments_now=epoch.segments,
                marker_last_seen=self._epoch_seen_at,
                found_at=epoch.now,
            )
            self._blind_window(blind.after_reset(self._epoch_seen_at, epoch.now))
        elif epoch.status == "changed":
            self.log.warning("store_reset_seen", segments_before=before, segments_now=epoch.segments)
        elif epoch.status == "created":
            self.log.info("store_epoch_created", segments=epoch.segments)
        self._epoch, self._epoch_seen_at = epoch.marker, epoch.now
        if epoch.status in ("reset", "changed"):
            # The reset took our heartbeat and the apps' labels with it: give them back now, so
            # a replica starting meanwhile does not take us for gone.
            await store.heartbeat(self.replica)
            await self.store.register_apps(self.keys.current.app_ids(), self.settings.without_start)
            await self.mark_blind()

    def start_background(self) -> None:
        s = self.settings
        self._tasks = [
            asyncio.create_task(self._every("sweep", s.sweep_interval_seconds, self.sweep)),
            asyncio.create_task(self._every("keys", s.keys_reload_seconds, self.reload_keys)),
        ]
        if isinstance(self.store, SharedStore):
            self._tasks.append(asyncio.create_task(self._every("store", 1.0, self.check_store)))
            self._tasks.append(asyncio.create_task(self._every("heartbeat", HEARTBEAT_SECONDS, self.heartbeat)))
        if self.snapshots is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._every("snapshot", s.snapshot_interval_seconds, self.snapshots.write_in_background)
                )
            )
        if self.reconciler is not None:
            self._tasks.append(asyncio.create_task(self.reconciler.run(s.sweep_interval_seconds)))
        self.ready = self._started = True

    async def stop(self) -> None:
        """Stop the loops, write the final snapshot, close the store, flush traces."""
        self.ready = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.reconciler is not None:
            await self.reconciler.stop()  # their checks stay pending: looked up after restart
        if self.snapshots is not None and self.snapshots.write(clean=True):
            # The marker: the next start knows nothing was lost. (A final snapshot that could
            # not be written leaves the running mark: the next start counts a crash.)
            self.snapshots.clear_running()
        if self.reconciler is not None:
            await self.reconciler.checker.close()
        if isinstance(self.store, SharedStore):
            try:  # the marker of a clean stop, as the final snapshot's is
                await self.store.leave(self.replica, HEARTBEAT_SECONDS)
            except StoreUnavailable as exc:
                self._store_answered(False, "ping", exc)
        await self.store.close()
        if self.provider is not None:
            self.provider.shutdown()

    def _blind_window(self, window: blind.Window | None) -> None:
        """Count, expose and log a blind window (see :mod:`gme_recwatch.blind`)."""
        if window is None:
            return
        self.metrics.blind_seconds.labels(window.cause).inc(window.seconds)
        self.metrics.blind_window_start.set(window.start)
        self.metrics.blind_window_end.set(window.end)
        self.log.warning(
            "blind_window",
            start=window.start,
            end=window.end,
            cause=window.cause,
            blind_seconds=round(window.seconds, 3),
        )
        self._unmarked.append(window)

    async def mark_blind(self) -> None:
        """Mark the live segments of every window detected since the last call (see
        :func:`gme_recwatch.lifecycle.after_blind`); a store that does not answer leaves them
        for the next call."""
        while self._unmarked:
            w = self._unmarked[0]
            try:
                n = await self.store.mark_blind(w.start, w.end)
            except StoreUnavailable as exc:
                self._store_answered(False, "sweep", exc)
                return
            self._unmarked.pop(0)
            self.log.info("blind_window_marked", start=w.start, end=w.end, cause=w.cause, segments=n)

    async def _every(self, name: str, seconds: float, fn: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except Exception as exc:  # a background loop must outlive one bad round
                self.log.error("background_task_failed", task=name, error=type(exc).__name__)

    async def sweep(self, budget: int = SWEEP_BUDGET) -> None:
        """Apply every deadline that has passed, logging each segment that became a problem.

        Deadlines can fall due by the hundred thousand in one second (a fleet-wide outage): the
        sweep goes in rounds and yields between them, so callbacks are still answered promptly.
        With a COS bucket, segments that would become stuck or miss their upload are held for a
        lookup instead; the sweep never waits for one, it wakes the reconciler.

        After a store outage, the store is checked first: a blind window it ends marks its live
        segments before their deadlines are applied.
        """
        if self._store_failing_since is not None:
            await self.check_store()
        await self.mark_blind()
        if self._unmarked:
            return  # not marked yet: applying deadlines now would page them on silence
        while True:
            try:
                done = await self.store.sweep(budget)
            except StoreUnavailable as exc:
                self._store_answered(False, "sweep", exc)
                return  # the deadlines wait in the store; the next round applies them
            for t in done.transitions:
                if t.blind_window is None:
                    report_problem(t, self.metrics, self.log, self.clock)
                    continue
                self.metrics.unverified.labels(t.app_id).inc()
                report_problem(
                    t,
                    self.metrics,
                    self.log,
                    self.clock,
                    blind_window_start=t.blind_window[0],
                    blind_window_end=t.blind_window[1],
                )
            if self.reconciler is not None:
                self.reconciler.wake()
            if not done.more:
                return
            await asyncio.sleep(0)

    async def check_store(self) -> None:
        """On a shared store: does it answer, and is it still the store we knew (its epoch
        marker)? One script call, every second."""
        store = self.store
        if not isinstance(store, SharedStore):
            return
        async with self._store_check:
            if not self._joined:  # never answered since the start: join it now that it may
                await self._join(store)
                if not self._joined:
                    return
                self._store_answered(True, "ping")
                if not self._apps_registered:
                    await self._register_apps()
                return
            try:
                epoch = await store.epoch(self._epoch)
            except StoreUnavailable as exc:
                self._store_answered(False, "ping", exc)
                return
            self._store_answered(True, "ping")
            try:
                await self._epoch_answered(store, epoch)
            except StoreUnavailable as exc:
                self._store_answered(False, "ping", exc)

    def readiness(self) -> Readiness:
        """Ready once started, not stopping, and the store has not failed every check for
        ``store_unready_after_seconds``: from what the loops last saw, in microseconds."""
        # A store in this process counts without I/O; a shared one as of the last check.
        segments = len(self.store) if isinstance(self.store, Sized) else self._segments
        if not self.ready:
            return Readiness(False, segments, "stopping" if self._started else "starting")
        if not self._joined or not self.store_healthy:
            return Readiness(False, segments, "store_unavailable")
        return Readiness(True, segments, None)

    async def refresh_stats(self) -> None:
        """Hand the store's current tallies to the metrics, for the next scrape. When the store
        does not answer, the last ones stay and ``gme_recording_backend_up`` says 0."""
        try:
            stats = await self.store.stats()
        except StoreUnavailable as exc:
            self._store_answered(False, "stats", exc)
        else:
            self.metrics.store.update(stats)
            self._segments = stats.segments
            for app in stats.app_labels:  # every app's series exists before its first one
                self.metrics.touch_app(app)
            self._store_answered(True, "stats")

    async def reload_keys(self) -> None:
        try:
            changed = self.keys.maybe_reload()
        except (OSError, KeyringError, UnicodeDecodeError) as exc:
            # Once per bad version of the file; the gauge says it is still bad.
            self.metrics.keyring_reloads.labels("failure").inc()
            self.metrics.keyring_file_valid.set(0)
            # The message names a line number or an OS error, never key material.
            self.log.error(
                "keyring_reload_failed",
                path=self.settings.keys_file,
                error=str(exc) if isinstance(exc, KeyringError) else type(exc).__name__,
            )
            return
        self.metrics.keyring_file_valid.set(1 if self.keys.file_valid else 0)
        if changed:
            self.metrics.keyring_reloads.labels("success").inc()
            self.metrics.keyring_keys.set(len(self.keys.current))
            await self.store.register_apps(self.keys.current.app_ids(), self.settings.without_start)
            self.log.info("keyring_reloaded", keys=len(self.keys.current), apps=self.keys.current.app_ids())
