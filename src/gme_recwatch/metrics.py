"""Every Prometheus metric the service exports, and nothing else.

Counters and histograms that change on the request path are ordinary prometheus_client
metrics with their label children cached, so a callback costs a few dict lookups. Gauges
describing tracked segments are *not* set on every transition: the store keeps plain
integer tallies, maintained incrementally, and :class:`StoreCollector` reads them at
scrape time. A scrape therefore costs O(apps x states), flat in the number of segments.

No label ever carries a room, user, task or file id: ``app_id`` is bounded by the store
(``max_apps``, then ``other``), and every other label has a fixed set of values.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from typing import Any, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Exemplar, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .blind import CAUSES as BLIND_CAUSES
from .events import EVENT_NAMES, MODE_NAMES, InvalidReason, NoiseReason
from .hints import HINT_KINDS
from .lifecycle import RESULTS, STATE_NAMES
from .signature import FailureReason
from .stores.base import StoreStats

PREFIX = "gme_recording_"

# Every label value is one of these: each imported from where the thing is defined.
EVENT_TYPES = (*EVENT_NAMES.values(), "unknown")
SIGNATURE_FAILURE_REASONS: tuple[str, ...] = get_args(FailureReason)
SIGNATURE_HINTS = HINT_KINDS
INVALID_REASONS: tuple[str, ...] = get_args(InvalidReason)
NOISE_REASONS: tuple[str, ...] = get_args(NoiseReason)
# Why the edge closed or refused a connection before a request was answered (server.py).
CONNECTION_REFUSALS = (
    "too_many_connections",
    "header_too_large",
    "too_many_headers",
    "header_timeout",
    "body_timeout",
)
STATES = STATE_NAMES
RECORD_MODES = MODE_NAMES
BACKEND_OPERATIONS = ("record", "sweep", "stats", "segments", "ping")
EVICTION_REASONS = ("ttl", "capacity")
LISTENERS = ("callback", "admin")
RECONCILE_RESULTS = ("found", "not_found", "error")  # cos.CHECK_RESULTS; cos sits above metrics
# cos.ErrorReason, spelt out for the same reason (tests/test_metrics.py checks they agree).
RECONCILE_ERRORS = (
    "timeout",
    "connection",
    "server_error",
    "forbidden",
    "no_such_bucket",
    "unexpected_status",
    "no_bucket",
    "blind",
    "unproven",
    "too_many_files",
    "unlistable",
    "ambiguous",
)
PROBLEM_STATES = ("stuck", "upload_missing")
# Whether COS confirmed a problem: "true" looked up and absent, "false" the lookup failed (no
# answer to trust: a COS outage must never read as recordings missing), "unchecked" no bucket.
CONFIRMED = ("true", "false", "unchecked")
MARK_RESULTS = ("marked", "not_tracked", "refused")
# What marks a segment one by one: a callback we refused (signature), or one we failed (a bug
# answered 500: if every retry meets it, the event is lost by us, not by Tencent).
MARK_CAUSES = ("signature", "server_error")
# What a file found in COS proves happened (started too, for a segment no callback announced).
LOST_EVENT_TYPES = ("started", "completed", "uploaded")
UNANNOUNCED_RESULTS = ("found", "tail_found", "missing", "unconfirmed")
TAIL_RESULTS = ("found", "nothing", "error")

# Bucket edges chosen for GME: recordings last minutes to hours, uploads to COS take
# seconds to minutes, and callbacks normally arrive within a second or two.
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600, 43200)
UPLOAD_DELAY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)
CALLBACK_DELAY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The service's registry and the metrics updated on the request path."""

    def __init__(self) -> None:
        # `_created` series double the exposition and no dashboard or alert uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self.build_info = Gauge(
            PREFIX + "build_info",
            "Always 1; labels give the gme-recwatch and Python versions.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)

        self.signature_failures = Counter(
            PREFIX + "signature_failures",
            "Callbacks rejected because their Signature did not verify, by reason.",
            ["reason"],
            registry=r,
        )
        self.signature_hints = Counter(
            PREFIX + "signature_hints",
            "Rejected signatures that a misconfiguration explains, by hint (diagnosis is "
            "rate-limited: a sample of the failures, not all of them).",
            ["hint"],
            registry=r,
        )
        self.signature_diagnoses_skipped = Counter(
            PREFIX + "signature_diagnoses_skipped",
            "Rejected signatures not diagnosed because the diagnosis was over its rate limit.",
            registry=r,
        )
        self.invalid = Counter(
            PREFIX + "callbacks_invalid",
            "Callbacks rejected as invalid (malformed body, too large, or stale Timestamp).",
            ["reason"],
            registry=r,
        )
        self.noise = Counter(
            PREFIX + "noise_requests",
            "Requests to the callback path that failed verification and are not a well-formed "
            "callback of an app with a key (no body, not JSON, not a callback, unknown BizID): "
            "scanners and junk, outside every signature alert and SLO.",
            ["reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            PREFIX + "http_connections_refused",
            "Connections the edge closed or refused before answering, per listener and reason "
            "(too many open, header too large, too many header lines, header or body read timeout).",
            ["listener", "reason"],
            registry=r,
        )
        self.connections_open = Gauge(
            PREFIX + "http_connections",
            "Open HTTP connections, per listener.",
            ["listener"],
            registry=r,
        )
        self.callbacks = Counter(
            PREFIX + "callbacks",
            "Verified callbacks, by event type, what the store made of them and app (BizID, bounded "
            'like every app_id: beyond max_apps, "other").',
            ["event_type", "result", "app_id"],
            registry=r,
        )
        self.last_callback = Gauge(
            PREFIX + "last_callback_timestamp_seconds",
            "Unix time the last verified callback was received (0 before the first).",
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "duration_seconds",
            "Recorded length of completed segments (completed Timestamp minus started Timestamp).",
            ["record_mode"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upload_delay = Histogram(
            PREFIX + "upload_delay_seconds",
            "Time from a segment's completion to its upload (sender Timestamps).",
            ["record_mode"],
            buckets=UPLOAD_DELAY_BUCKETS,
            registry=r,
        )
        self.callback_delay = Histogram(
            PREFIX + "callback_delay_seconds",
            "Receive time minus the callback's Timestamp: how late Tencent's delivery is.",
            ["event_type"],
            buckets=CALLBACK_DELAY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, per listener, route template and status code.",
            ["listener", "route", "method", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time to answer HTTP requests, per listener and route template.",
            ["listener", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            PREFIX + "http_requests_in_flight",
            "HTTP requests being answered, per listener.",
            ["listener"],
            registry=r,
        )
        self.keyring_keys = Gauge(
            PREFIX + "keyring_keys",
            "SecretKeys loaded (all apps, counting rotation keys).",
            registry=r,
        )
        self.keyring_reloads = Counter(
            PREFIX + "keyring_reloads",
            "Reloads of the keyring file, by result; a version of the file that fails counts "
            "one failure, however often it is polled.",
            ["result"],
            registry=r,
        )
        self.keyring_file_valid = Gauge(
            PREFIX + "keyring_file_valid",
            "0 while the keyring file as it is now cannot be read or parsed (the keys loaded "
            "before stay in force), else 1 (also without a keyring file).",
            registry=r,
        )
        self.keyring_file_valid.set(1)
        self.snapshot_failures = Counter(
            PREFIX + "snapshot_failures",
            "State snapshots that could not be written or restored.",
            ["operation"],
            registry=r,
        )
        self.snapshot_last_success = Gauge(
            PREFIX + "snapshot_last_success_timestamp_seconds",
            "Unix time of the last state snapshot written (0 = never).",
            registry=r,
        )
        self.snapshot_duration = Gauge(
            PREFIX + "snapshot_duration_seconds",
            "How long the last snapshot write took.",
            registry=r,
        )
        self.snapshot_loop_seconds = Gauge(
            PREFIX + "snapshot_loop_seconds",
            "How long the last periodic snapshot held the event loop (the copy; encoding and "
            "writing run on a worker thread).",
            registry=r,
        )
        self.snapshot_restored = Gauge(
            PREFIX + "snapshot_restored_segments",
            "Segments restored from the state file at start.",
            registry=r,
        )
        self.blind_seconds = Counter(
            PREFIX + "blind_seconds",
            "Seconds in which callbacks may have been sent and never recorded, beyond what "
            "the sender's retries cover, by cause.",
            ["cause"],
            registry=r,
        )
        for cause in BLIND_CAUSES:
            self.blind_seconds.labels(cause)
        self.segment_marks = Counter(
            PREFIX + "segment_marks",
            "Segments attributed to an incident of ours one by one (a well-formed callback we "
            "refused, or a verified one we answered 500, marks the segment it names), by cause "
            "and result: marked, not_tracked "
            "(no live segment of that name), refused (over the rate or count cap).",
            ["cause", "result"],
            registry=r,
        )
        for mark_cause in MARK_CAUSES:
            for result in MARK_RESULTS:
                self.segment_marks.labels(mark_cause, result)
        self.unverified = Counter(
            PREFIX + "unverified",
            "Segments this process's sweeps made unverified: live when a blind window opened, "
            "their deadline passed with no callback and no COS check to settle them.",
            ["app_id"],
            registry=r,
        )
        self.blind_window_start = Gauge(
            PREFIX + "blind_window_start_timestamp_seconds",
            "Unix time the last blind window opened (0 = none since start).",
            registry=r,
        )
        self.blind_window_end = Gauge(
            PREFIX + "blind_window_end_timestamp_seconds",
            "Unix time the last blind window closed (0 = none since start).",
            registry=r,
        )

        self.callbacks_unknown_outcome = Counter(
            PREFIX + "callbacks_unknown_outcome",
            "Callbacks answered 503 after their write was sent to the store (it timed out or the "
            "connection was lost): they may have been recorded all the same; Tencent retries them.",
            registry=r,
        )
        self.callbacks_retried_after_unknown = Counter(
            PREFIX + "callbacks_retried_after_unknown_outcome",
            "Retries of such callbacks found already recorded: counted as accepted, not as duplicates.",
            registry=r,
        )
        self.backend_errors = Counter(
            PREFIX + "backend_errors",
            "Operations on the state store that failed (unreachable, timed out, refused).",
            ["operation"],
            registry=r,
        )
        self.backend_up = Gauge(
            PREFIX + "backend_up",
            "1 while the state store answers (always 1 for the in-memory store), else 0.",
            registry=r,
        )
        self.backend_up.set(1)
        self.store_resets = Counter(
            PREFIX + "store_resets",
            "Times this process found the shared store empty (its epoch marker gone: a restart "
            "without persistence, a failover to an empty replica, FLUSHALL). One replica counts "
            "each reset, so the sum over replicas is the number of resets.",
            registry=r,
        )
        self.canary_last_success = Gauge(
            PREFIX + "canary_last_success_timestamp_seconds",
            "Unix time the last verified canary callback (`gme-recwatch canary`) was received "
            "(0 before the first). Canaries count nowhere else.",
            registry=r,
        )
        self.canary_interval = Gauge(
            PREFIX + "canary_interval_seconds",
            "How often a canary is expected (GME_RECWATCH_CANARY_INTERVAL_SECONDS); 0 = none.",
            registry=r,
        )
        self.canaries = Counter(
            PREFIX + "canary_callbacks",
            "Verified canary callbacks received.",
            registry=r,
        )
        self.reconcile_checks = Counter(
            PREFIX + "reconcile_checks",
            "Lookups of recorded files in COS, by result: found, not_found, or error (timeout, "
            "5xx, 403, no such bucket: no answer to trust).",
            ["result"],
            registry=r,
        )
        self.callbacks_lost = Counter(
            PREFIX + "callbacks_lost",
            "Callbacks the sender never delivered, found out because the segment's file was in "
            "COS when its deadline passed, by event type (started: of a segment no callback "
            "announced; completed, uploaded). Starts lost by segments whose completion or upload "
            "came are gme_recording_orphan_events_total.",
            ["event_type"],
            registry=r,
        )
        self.unannounced = Counter(
            PREFIX + "unannounced_segments",
            "Segments no callback announced -- revealed by a later SeqNo of their stream, or "
            "found by listing a quiet stream's COS folder -- by app and what became of them: "
            "found (in COS: Tencent lost every callback of it), tail_found (the stream's last, "
            "found by the listing), missing (not in COS: a recording is missing; in the delivery "
            "SLO), unconfirmed (no bucket, or no answer to trust). Counted by the replica that "
            "settled each, so replicas sum.",
            ["app_id", "result"],
            registry=r,
        )
        self.tail_listings = Counter(
            PREFIX + "tail_listings",
            "Folder listings of recording streams quiet for GME_RECWATCH_COS_TAIL_QUIET_SECONDS, "
            "by result: found (files no callback announced), nothing, error (tried again later).",
            ["result"],
            registry=r,
        )
        self.problem_segments = Counter(
            PREFIX + "problem_segments",
            "Segments this process found stuck or missing their upload, by app, state and "
            "whether a COS lookup confirmed it (true: looked up, not there; false: the lookup "
            "failed; unchecked: no bucket). Counted once per segment by the replica that settled "
            "it, so replicas sum.",
            ["app_id", "state", "confirmed"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            PREFIX + "reconcile_errors",
            "COS lookups that gave no answer to trust, by bucket and error class (the buckets "
            'are the configured ones; no_bucket has bucket="").',
            ["bucket", "reason"],
            registry=r,
        )
        self.reconcile_retries = Counter(
            PREFIX + "reconcile_retries",
            "Lookups that gave no answer and were scheduled to be tried again, with back-off and "
            "jitter (the segment stays unconfirmed meanwhile; each retry is claimed by one replica).",
            registry=r,
        )
        self.segments_reconciled = Counter(
            PREFIX + "segments_reconciled",
            "Segments found uploaded in COS though a callback never arrived: made uploaded "
            "instead of stuck or upload_missing.",
            registry=r,
        )
        self.cos_unknown_file_names = Counter(
            PREFIX + "cos_unknown_file_names",
            "Keys found listing a recording stream's COS folder (to find segments no callback "
            "announced) whose name has no known layout, by app: counted, never matched to a "
            "segment. Growth means Tencent's naming changed or something else writes there.",
            ["app_id"],
            registry=r,
        )
        # Series that alerts and dashboards use exist from the first scrape, at zero, so
        # rate() and increase() see the first event instead of a series appearing at 1.
        for reason in SIGNATURE_FAILURE_REASONS:
            self.signature_failures.labels(reason)
        for hint in SIGNATURE_HINTS:
            self.signature_hints.labels(hint)
        for reason in INVALID_REASONS:
            self.invalid.labels(reason)
        for reason in NOISE_REASONS:
            self.noise.labels(reason)
        for listener in LISTENERS:
            self.connections_open.labels(listener)
            for refusal in CONNECTION_REFUSALS:
                self.connections_refused.labels(listener, refusal)
        # Per app, created at zero by touch_app; "other" (the overflow, and event types we do
        # not know) from the start, so the family has its zero series before any traffic.
        self._callback_children: dict[tuple[str, str, str], Any] = {}
        for e in EVENT_TYPES:
            for res in RESULTS:
                self._callback_child(e, res, "other")
        self._delay_children = {e: self.callback_delay.labels(e) for e in EVENT_TYPES}
        self._duration_children = {m: self.duration.labels(m) for m in RECORD_MODES}
        self._upload_children = {m: self.upload_delay.labels(m) for m in RECORD_MODES}
        for op in ("write", "restore"):
            self.snapshot_failures.labels(op)
        for res in ("success", "failure"):
            self.keyring_reloads.labels(res)
        for listener in LISTENERS:
            self.http_in_flight.labels(listener)
        for op in BACKEND_OPERATIONS:
            self.backend_errors.labels(op)
        for result in RECONCILE_RESULTS:
            self.reconcile_checks.labels(result)
        for event in LOST_EVENT_TYPES:
            self.callbacks_lost.labels(event)
        for result in TAIL_RESULTS:
            self.tail_listings.labels(result)
        # The store's gauges and counters, last: read from its tallies at scrape time.
        self.store = StoreCollector()
        self.registry.register(self.store)

    def touch_app(self, app_id: str) -> None:
        """Make an app's per-app counters exist, at zero, before its first event."""
        self.unverified.labels(app_id)
        for result in UNANNOUNCED_RESULTS:
            self.unannounced.labels(app_id, result)
        self.cos_unknown_file_names.labels(app_id)
        for e in EVENT_TYPES:
            for res in RESULTS:
                self._callback_child(e, res, app_id)
        for state in PROBLEM_STATES:
            for confirmed in CONFIRMED:
                self.problem_segments.labels(app_id, state, confirmed)

    def touch_buckets(self, buckets: Iterable[str]) -> None:
        """Make the COS error series of the configured buckets exist, at zero."""
        for bucket in buckets:
            for reason in RECONCILE_ERRORS:
                self.reconcile_errors.labels(bucket, reason)

    def count_unknown_names(self, app_id: str, n: int) -> None:
        """``n`` keys of a listed stream folder had no known layout (``cos.Listing.unknown``);
        ``app_id`` is the store's bounded label, never a raw BizID."""
        if n > 0:
            self.cos_unknown_file_names.labels(app_id).inc(n)

    def count_problem(self, app_id: str, state: str, confirmed: bool | None) -> None:
        label = "unchecked" if confirmed is None else ("true" if confirmed else "false")
        self.problem_segments.labels(app_id, state, label).inc()

    def _callback_child(self, event_type: str, result: str, app_id: str) -> Any:
        key = (event_type, result, app_id)
        child = self._callback_children.get(key)
        if child is None:
            child = self._callback_children[key] = self.callbacks.labels(event_type, result, app_id)
        return child

    def count_callback(self, event_type: str, result: str, app_id: str) -> None:
        """``app_id`` is the store's bounded label (lifecycle.Outcome.app_id), never a raw BizID."""
        self._callback_child(event_type, result, app_id).inc()

    def observe_callback_delay(self, event_type: str, seconds: float) -> None:
        self._delay_children[event_type].observe(max(seconds, 0.0))

    def observe_duration(self, record_mode: str, seconds: float) -> None:
        self._duration_children[record_mode].observe(max(seconds, 0.0))

    def observe_upload_delay(self, record_mode: str, seconds: float) -> None:
        self._upload_children[record_mode].observe(max(seconds, 0.0))


def _by_app(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    values: dict[str, int] | dict[str, float],
    apps: Iterable[str],
) -> Metric:
    """One sample per app label, zero for apps without a value yet."""
    fam = family(name, doc, labels=["app_id"])
    for app in apps:
        fam.add_metric([app], values.get(app, 0))
    return fam


def empty_stats() -> StoreStats:
    return StoreStats([], {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, capacity=0, app_overflow=0)


# OpenMetrics caps an exemplar's label names and values at 128 characters in all.
EXEMPLAR_MAX_CHARS = 128


def exemplar_labels(room_id: str, user_id: str, task_id: int, seq_no: int) -> dict[str, str]:
    """A segment's key as exemplar labels, room and user ids shortened to fit the cap.

    Exemplars are not labels: they are kept per sample, one at a time, so a room id here costs
    no series. Ids are shortened (with a trailing ``~``) rather than dropped, so the link from a
    graph still finds the room in the segments API by prefix or in the logs.
    """
    fixed = {"task_id": str(task_id), "seq_no": str(seq_no)}
    budget = (
        EXEMPLAR_MAX_CHARS - sum(len(k) + len(v) for k, v in fixed.items()) - len("room_id") - len("user_id")
    )
    room, user = room_id, user_id
    if len(room) + len(user) > budget:
        half = budget // 2
        if len(room) > half and len(user) > half:
            room, user = room[: half - 1] + "~", user[: budget - half - 1] + "~"
        elif len(room) > half:
            room = room[: budget - len(user) - 1] + "~"
        else:
            user = user[: budget - len(room) - 1] + "~"
    return {"room_id": room, "user_id": user, **fixed}


class StoreCollector(Collector):
    """Exports the store's tallies: the admin listener hands over fresh ones (:meth:`update`)
    before each scrape, since asking a store may mean a round trip the registry cannot await.

    The problem counters (``stuck``, ``missing_uploads``) carry as exemplar the last segment
    this process saw cross into that state, per app (:meth:`note`); exemplars only appear in
    the OpenMetrics exposition.
    """

    def __init__(self) -> None:
        self.latest = empty_stats()
        self._exemplars: dict[tuple[str, str], Exemplar] = {}

    def update(self, stats: StoreStats) -> None:
        self.latest = stats

    def note(self, state: str, app_id: str, labels: dict[str, str], value: float, timestamp: float) -> None:
        """Remember a segment that became ``state`` as the exemplar of that state's counter."""
        self._exemplars[(state, app_id)] = Exemplar(labels, value, timestamp)

    def _problem_counter(
        self, name: str, doc: str, state: str, values: dict[str, int], apps: Iterable[str]
    ) -> Metric:
        fam = CounterMetricFamily(name, doc, labels=["app_id"])
        for app in apps:
            fam.add_sample(
                name + "_total", {"app_id": app}, values.get(app, 0), exemplar=self._exemplars.get((state, app))
            )
        return fam

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.latest
        apps = s.app_labels
        active = GaugeMetricFamily(
            PREFIX + "active_recordings",
            "Segments recording now (started, not completed), stuck ones included.",
            labels=["app_id", "record_mode"],
        )
        for app in apps:
            for mode in RECORD_MODES:
                active.add_metric([app, mode], s.active_recordings.get((app, mode), 0))
        yield active
        yield _by_app(
            GaugeMetricFamily,
            PREFIX + "active_rooms",
            "Rooms with at least one segment recording.",
            s.active_rooms,
            apps,
        )
        yield _by_app(
            GaugeMetricFamily,
            PREFIX + "stuck_recordings",
            "Segments recording for longer than the maximum recording duration.",
            s.stuck,
            apps,
        )
        yield self._problem_counter(
            PREFIX + "stuck", "Segments that became stuck.", "stuck", s.stuck_total, apps
        )
        yield _by_app(
            GaugeMetricFamily,
            PREFIX + "uploads_missing",
            "Completed segments with no upload within the upload grace.",
            s.missing_uploads,
            apps,
        )
        yield self._problem_counter(
            PREFIX + "missing_uploads",
            "Completed segments whose upload did not arrive within the grace.",
            "upload_missing",
            s.missing_uploads_total,
            apps,
        )
        yield _by_app(
            CounterMetricFamily,
            PREFIX + "segments_completed",
            "Segments whose completion (event 2) was seen; the denominator of the missing-upload ratio.",
            s.completed_total,
            apps,
        )
        yield _by_app(
            GaugeMetricFamily,
            PREFIX + "oldest_recording_start_timestamp_seconds",
            "Start (sender Timestamp) of the oldest segment still recording; 0 when none is.",
            s.oldest_start,
            apps,
        )
        orphans = CounterMetricFamily(
            PREFIX + "orphan_events",
            "Completed/uploaded events whose start never arrived within the reorder window.",
            labels=["event_type"],
        )
        for et in ("completed", "uploaded"):
            orphans.add_metric([et], s.orphan_events.get(et, 0))
        yield orphans
        tracked = GaugeMetricFamily(
            PREFIX + "tracked_segments", "Segments held by the store, by lifecycle state.", labels=["state"]
        )
        for state in STATES:
            tracked.add_metric([state], s.by_state.get(state, 0))
        yield tracked
        ev = CounterMetricFamily(
            PREFIX + "evictions",
            "Segments dropped from the store, by reason and the state they were in.",
            labels=["reason", "state"],
        )
        for reason in EVICTION_REASONS:
            for state in STATES:
                ev.add_metric([reason, state], s.evictions.get((reason, state), 0))
        yield ev
        yield GaugeMetricFamily(
            PREFIX + "reconcile_pending",
            "Segments past their deadline waiting for their file to be looked up in COS (0 without a bucket).",
            value=s.checks_pending,
        )
        yield GaugeMetricFamily(
            PREFIX + "store_capacity", "Most segments the store holds before evicting.", value=s.capacity
        )
        # Store faults: data gone from the shared store behind the service's back (shared values:
        # every replica exports the same; take the max). GmeRecwatchStoreEvictingKeys.
        yield GaugeMetricFamily(
            PREFIX + "store_evicted_keys",
            "Keys the shared Redis evicted since it started (INFO stats evicted_keys; 0 in memory): "
            "any growth is a store fault, an evicting maxmemory-policy.",
            value=s.evicted_keys,
        )
        yield GaugeMetricFamily(
            PREFIX + "store_vanished_segments",
            "Segments whose key vanished from the shared Redis store (evicted, deleted by hand), found "
            "and uncounted by the sweep; 0 in memory.",
            value=s.segments_vanished,
        )
        # The name before 0.x: kept one release so existing queries keep working (release note).
        yield GaugeMetricFamily(
            PREFIX + "tracker_capacity",
            "Deprecated alias of gme_recording_store_capacity; removed in the next release.",
            value=s.capacity,
        )
        yield CounterMetricFamily(
            PREFIX + "app_label_overflow",
            'Callbacks from apps beyond max_apps, reported as app_id="other".',
            value=s.app_overflow,
        )
