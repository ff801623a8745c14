"""Writes the incident scenarios the alerts are proven on: `python dashboards/scenarios.py`.

Each scenario is a realistic incident (or a healthy stretch that must stay quiet), played by a
small segment-level simulation: three replicas on one Redis, recordings that start, complete and
upload, Tencent's callbacks with its retries for about a minute, the canary every minute, COS
lookups after each deadline, scanners on the public port. The simulation turns what happened
into the series the service exports, under the names of gme_recwatch.metrics (looked up in a
real registry: renaming a metric there breaks this script, not silently the scenario), and
writes them with the expected firing alerts as promtool unit tests in
dashboards/tests/scenarios.test.yaml.

Every scenario states what a good setup must do. The expectations are written down here, by
minute, not taken from a run: promtool checks them, and tests/test_dashboards.py checks that
the pages left after the inhibit rules of dashboards/rules.py are the scenario's `pages` (one
page per incident), and that the file is what this script writes.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gme_recwatch import metrics as metrics_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rules as RULES

HERE = Path(__file__).resolve().parent
OUT = HERE / "tests" / "scenarios.test.yaml"

APP = "1400000000"
APPS = (APP, "1400000001", "1400000002")  # apps of a multi-app release; APP alone by default
BUCKET = "gme-records-1250000000"
JOB = 'job="gme-recwatch", namespace="prod"'
REPLICAS = 3
# The service's defaults, in minutes: recordings of 10 minutes, uploaded a minute after they
# complete; the upload grace (15 min) and the stuck deadline (6 h) as the service has them.
LENGTH, UPLOAD_AFTER, GRACE, STUCK_AFTER = 10, 1, 15, 360
TRIES = 3  # Tencent's tries of one callback within its minute of retries
WARM_UP = 90  # healthy minutes before any incident: every page window holds traffic
BUSY = 20  # segments starting per minute in busy hours (1,200 an hour)


class Names:
    """The sample names the service exports, from its own registry."""

    def __init__(self) -> None:
        m = metrics_module.Metrics()
        m.touch_app(APP)
        m.touch_buckets([BUCKET])
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
        self._names = {
            family.name + suffix
            for family in m.registry.collect()
            for suffix in suffixes.get(family.type, ("",))
        }

    def __call__(self, suffix: str) -> str:
        name = suffix if suffix == "up" or suffix.startswith("process_") else (metrics_module.PREFIX + suffix)
        if name not in self._names and not name.startswith("process_"):
            raise KeyError(f"{name} is not exported by gme_recwatch.metrics: rename it here too")
        return name


@dataclass
class Scenario:
    name: str
    must: str  # what a good setup must do
    minutes: int
    # Segments starting per minute, by minute.
    rate: Callable[[int], int] = lambda t: BUSY
    # Minutes (from, to) of each condition, [from, to).
    silent: tuple[int, int] | None = None  # Tencent sends nothing
    server_errors: tuple[int, int] | None = None  # every real callback answered 500
    redis_down: tuple[int, int] | None = None
    readiness_gate: bool = True  # unready pods get no traffic (the chart's readinessProbe)
    cos_forbidden: tuple[int, int] | None = None  # COS credentials expired: lookups 403
    old_key: tuple[int, int] | None = None  # the sender signs with a key we no longer hold
    skew: tuple[int, int] | None = None  # the sender's clock is off: every callback stale (400)
    cos: bool = True  # a COS bucket to confirm misses in (the chart's default has none)
    apps: int = 1  # apps sharing the traffic evenly (segment number modulo apps)
    app_silent: tuple[int, int] | None = None  # the last app sends nothing
    replica_redis_down: tuple[int, int] | None = None  # the first replica alone loses Redis
    unsigned_per_second: Callable[[int], int] = lambda t: 0
    # Deterministic shares of segments, by segment number (out of 100), from a minute on.
    upload_callback_lost: tuple[int, int] = (0, 0)  # (from minute, per 100): file in COS
    really_missing: tuple[int, int] = (0, 0)  # (from minute, per 100): never uploaded
    missing_at: tuple[int, ...] = ()  # minutes at which one starting segment never uploads
    crash_loop: tuple[int, int] | None = None  # the third replica crash-loops
    rolling_upgrade: int | None = None  # minute the first replica is replaced
    # Expected: minute -> the alerts firing (before inhibition), by name.
    checks: dict[int, set[str]] = field(default_factory=dict)
    # The pages an on-call gets, after inhibition: alert -> minute it first pages.
    pages: dict[str, int] = field(default_factory=dict)
    # The minutes in which something pages (after inhibition), first and last: at every checked
    # minute inside, exactly the page of `pages`; outside, nothing pages. None: nothing ever.
    paged: tuple[int, int] | None = None
    # The minute the incident ends (None: a healthy stretch). A page may outlast it by its burn
    # windows' reset (the 6x pair's 30-minute short window), never start after it.
    ends: int | None = None
    start: int = WARM_UP  # the minute the incident starts, for the docs' table
    # What the on-call reads first, for docs/alerting.md.
    read_first: str = ""


def _during(span: tuple[int, int] | None, t: int) -> bool:
    return span is not None and span[0] <= t < span[1]


@dataclass
class Pod:
    """One incarnation of a replica: its instance label, and its counters from its start."""

    instance: str
    born: int
    died: int | None = None
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[(name, tuple(sorted(labels.items())))] = value


class Simulation:
    """Plays one scenario minute by minute and records every pod's series."""

    def __init__(self, sc: Scenario, n: Names) -> None:
        self.sc, self.n = sc, n
        self.pods: list[Pod] = [Pod(f"10.0.0.{i + 1}:8081", 0) for i in range(REPLICAS)]
        self.series: dict[str, list[float | str | None]] = {}
        self.turn = 0
        self.live: list[dict[str, Any]] = []  # segments not yet uploaded or settled
        self.last_pod = self.pods[0]

    # -- who answers ---------------------------------------------------------------------

    def up(self, pod: Pod, t: int) -> bool:
        if pod.died is not None and t >= pod.died:
            return False
        if self.sc.crash_loop and pod is self.pods[2] and _during(self.sc.crash_loop, t):
            return (t - self.sc.crash_loop[0]) % 5 == 0  # up one minute in five, then crashes
        return True

    def routed(self, t: int) -> list[Pod]:
        """Pods the Service sends callbacks to (ready ones)."""
        live = [p for p in self.pods if self.up(p, t)]
        if _during(self.sc.redis_down, t) and self.sc.readiness_gate:
            return []
        if _during(self.sc.replica_redis_down, t):
            live = [p for p in live if p is not self.pods[0]]  # unready: out of rotation
        return live

    def pick(self, t: int) -> Pod | None:
        pods = self.routed(t)
        if not pods:
            return None
        self.turn += 1
        return pods[self.turn % len(pods)]

    # -- callbacks -----------------------------------------------------------------------

    def request(self, pod: Pod, code: str, seconds: float = 0.01) -> None:
        n = self.n
        pod.inc(n("http_requests_total"), listener="callback", route="/callback", method="POST", code=code)
        pod.inc(n("http_request_duration_seconds_count"), listener="callback", route="/callback")
        for le in ("2.5", "+Inf"):
            if seconds <= float(le):
                pod.inc(
                    n("http_request_duration_seconds_bucket"), listener="callback", route="/callback", le=le
                )

    def deliver(self, t: int, seg: dict[str, Any], event_type: str, result: str) -> bool:
        """One callback from Tencent at minute t: True when it was verified and stored. A
        well-formed callback we refused (signature, 5xx) marks its segment, if we track it:
        the segment is attributed to our incident (lifecycle.after_blind, intake's mark)."""
        sc, n = self.sc, self.n
        app = seg["app"]
        if _during(sc.silent, t) or (app == APPS[-1] and _during(sc.app_silent, t)):
            return False
        for _ in range(TRIES):
            pod = self.pick(t)
            if pod is None:
                continue  # no ready pod: the Ingress answers 503, we never see it
            if _during(sc.old_key, t):
                self.request(pod, "401")
                pod.inc(n("signature_failures_total"), reason="mismatch")
                if seg["seen"]:
                    seg["marked"] = True
                    pod.inc(n("segment_marks_total"), cause="signature", result="marked")
                continue
            pod.set(n("last_callback_timestamp_seconds"), t * 60)
            if _during(sc.skew, t):
                self.request(pod, "400")
                pod.inc(n("callbacks_invalid_total"), reason="stale")
                return False  # Tencent does not resend a callback answered 400
            if _during(sc.redis_down, t):
                self.request(pod, "503")
                pod.inc(n("backend_errors_total"), operation="record")
                continue
            if _during(sc.server_errors, t):
                self.request(pod, "500")
                if seg["seen"]:
                    seg["marked"] = True
                continue
            self.request(pod, "200")
            pod.inc(n("callbacks_total"), event_type=event_type, result=result, app_id=app)
            seg["marked"] = False  # heard from again: paged as usual from here
            self.last_pod = pod
            return True
        return False

    def settle(self, t: int, seg: dict[str, Any], state: str, lost: list[str]) -> None:
        """A deadline passed: one replica looks the file up in COS and settles the segment.
        A marked segment (attributed to an incident of ours) without a bucket becomes
        unverified; found in COS it is reconciled without blaming Tencent."""
        n, app, in_cos = self.n, seg["app"], seg["in_cos"]
        pod = next((p for p in self.pods if self.up(p, t)), None)
        if pod is None:
            return
        if not self.sc.cos:
            if seg["marked"]:
                pod.inc(n("unverified_total"), app_id=app)
            else:
                pod.inc(n("problem_segments_total"), app_id=app, state=state, confirmed="unchecked")
        elif _during(self.sc.cos_forbidden, t):
            pod.inc(n("reconcile_checks_total"), result="error")
            pod.inc(n("reconcile_errors_total"), bucket=BUCKET, reason="forbidden")
            pod.inc(n("problem_segments_total"), app_id=app, state=state, confirmed="false")
        elif in_cos:
            pod.inc(n("reconcile_checks_total"), result="found")
            pod.inc(n("segments_reconciled_total"))
            if not seg["marked"]:
                for event in lost:
                    pod.inc(n("callbacks_lost_total"), event_type=event)
        else:
            pod.inc(n("reconcile_checks_total"), result="not_found")
            pod.inc(n("problem_segments_total"), app_id=app, state=state, confirmed="true")

    # -- the run -------------------------------------------------------------------------

    def run(self) -> None:
        sc = self.sc
        # minute -> list of (segment, event) due then; deadlines likewise.
        due: dict[int, list[tuple[dict[str, Any], str]]] = defaultdict(list)
        deadlines: dict[int, list[dict[str, Any]]] = defaultdict(list)
        number = 0
        for t in range(sc.minutes):
            self.pod_changes(t)
            for i in range(sc.rate(t)):
                number += 1
                k = number % 100
                seg: dict[str, Any] = {
                    "seen": set(),
                    "in_cos": True,
                    "uploads": True,
                    "lose_upload_cb": False,
                    "marked": False,
                    "app": APPS[number % sc.apps],
                }
                self.live.append(seg)
                if t >= sc.really_missing[0] and k < sc.really_missing[1]:
                    seg["in_cos"] = seg["uploads"] = False
                if t in sc.missing_at and i == 0:
                    seg["in_cos"] = seg["uploads"] = False
                if t >= sc.upload_callback_lost[0] and k < sc.upload_callback_lost[1]:
                    seg["lose_upload_cb"] = True
                due[t].append((seg, "started"))
                due[t + LENGTH].append((seg, "completed"))
                if seg["uploads"]:
                    due[t + LENGTH + UPLOAD_AFTER].append((seg, "uploaded"))
                deadlines[t + STUCK_AFTER].append(seg)
            for seg, event in due.pop(t, []):
                self.event(t, seg, event, deadlines)
            for seg in deadlines.pop(t, []):
                self.deadline(t, seg)
            self.background(t)
            self.scrape(t)

    def event(
        self, t: int, seg: dict[str, Any], event: str, deadlines: dict[int, list[dict[str, Any]]]
    ) -> None:
        if event == "uploaded" and seg["lose_upload_cb"]:
            return  # Tencent lost it; the file is in COS
        seen = seg["seen"]
        in_order = {"started": set(), "completed": {"started"}, "uploaded": {"started", "completed"}}[event]
        result = "accepted" if in_order <= seen else "out_of_order"
        if not self.deliver(t, seg, event, result):
            return
        if event == "completed" and "started" not in seen:
            self.last_pod.inc(self.n("orphan_events_total"), event_type="completed")
        if event == "completed" and "uploaded" not in seen:
            deadlines[t + GRACE].append(seg)
        seen.add(event)

    def deadline(self, t: int, seg: dict[str, Any]) -> None:
        seen = seg["seen"]
        if "uploaded" in seen or seg.get("settled") or not seen:
            return
        seg["settled"] = True
        state = "upload_missing" if "completed" in seen else "stuck"
        lost = [e for e in ("completed", "uploaded") if e not in seen]
        self.settle(t, seg, state, lost)

    def background(self, t: int) -> None:
        """Scanners, the canary, Redis, every minute."""
        sc, n = self.sc, self.n
        routed = self.routed(t)
        flood = sc.unsigned_per_second(t) * 60
        for pod in routed:
            share = flood // len(routed)
            pod.inc(
                n("http_requests_total"),
                share,
                listener="callback",
                route="/callback",
                method="POST",
                code="401",
            )
            pod.inc(n("http_request_duration_seconds_count"), share, listener="callback", route="/callback")
            for le in ("2.5", "+Inf"):
                pod.inc(
                    n("http_request_duration_seconds_bucket"),
                    share,
                    listener="callback",
                    route="/callback",
                    le=le,
                )
            pod.inc(n("signature_failures_total"), share, reason="missing")
        canary = self.pick(t)
        if canary is not None:  # it skips the store: answered 200 even without Redis
            self.request(canary, "200")
            canary.set(n("canary_last_success_timestamp_seconds"), t * 60)
        if sc.redis_down and t == sc.redis_down[1]:
            # Redis answers again: the blind window marks every segment live then.
            self.live = [s for s in self.live if "uploaded" not in s["seen"] and not s.get("settled")]
            for seg in self.live:
                seg["marked"] = True
        for pod in self.pods:
            down = _during(sc.redis_down, t) or (pod is self.pods[0] and _during(sc.replica_redis_down, t))
            pod.set(n("backend_up"), 0 if down else 1)
            if down:
                pod.inc(n("backend_errors_total"), operation="ping")
                if sc.redis_down and t > sc.redis_down[0]:
                    # Past the sender's minute of retries, callbacks sent now are lost.
                    pod.inc(n("blind_seconds_total"), 60, cause="store_unreachable")

    def pod_changes(self, t: int) -> None:
        sc = self.sc
        if sc.rolling_upgrade is not None:
            for i in range(REPLICAS):
                if t == sc.rolling_upgrade + 3 * i:
                    old = self.pods[i]
                    old.died = t + 1  # the new pod is ready before the old one stops
                    self.pods.append(Pod(f"10.0.1.{i + 1}:8081", t))
        if sc.crash_loop and _during(sc.crash_loop, t) and (t - sc.crash_loop[0]) % 5 == 0:
            pod = self.pods[2]
            pod.born = t
            pod.counters.clear()

    def scrape(self, t: int) -> None:
        n = self.n
        for pod in self.pods:
            inst = f'instance="{pod.instance}"'
            if pod.died is not None and t >= pod.died:
                if t == pod.died:  # the target is gone: Prometheus marks its series stale
                    for name in self.series:
                        if inst in name:
                            self.put(name, t, STALE)
                continue
            alive = pod.born <= t
            scraped = alive and self.up(pod, t)
            self.put(f"up{{{JOB}, {inst}}}", t, (1 if scraped else 0) if alive else None)
            values: dict[str, float] = {
                f"{n('process_start_time_seconds')}{{{JOB}, {inst}}}": pod.born * 60,
                f'{n("build_info")}{{{JOB}, {inst}, version="0", python_version="3"}}': 1,
                f"{n('canary_interval_seconds')}{{{JOB}, {inst}}}": 60,
            }
            for stamp in ("last_callback_timestamp_seconds", "canary_last_success_timestamp_seconds"):
                values[f"{n(stamp)}{{{JOB}, {inst}}}"] = pod.gauges.get((n(stamp), ()), 0)
            self.zero(pod)
            for (name, labels), value in {**pod.counters, **pod.gauges}.items():
                extra = "".join(f', {k}="{v}"' for k, v in labels)
                values[f"{name}{{{JOB}, {inst}{extra}}}"] = value
            for name, value in values.items():
                self.put(name, t, value if scraped else None)

    def zero(self, pod: Pod) -> None:
        """The counters the service creates at zero from its first scrape."""
        n = self.n
        for reason in ("missing", "mismatch", "unknown_app"):
            pod.inc(n("signature_failures_total"), 0, reason=reason)
        pod.inc(n("callbacks_invalid_total"), 0, reason="stale")
        pod.inc(n("segments_reconciled_total"), 0)
        for app in APPS[: self.sc.apps]:
            for e in ("started", "completed", "uploaded"):
                for r in ("accepted", "out_of_order"):
                    pod.inc(n("callbacks_total"), 0, event_type=e, result=r, app_id=app)
            for state in ("stuck", "upload_missing"):
                for c in ("true", "false", "unchecked"):
                    pod.inc(n("problem_segments_total"), 0, app_id=app, state=state, confirmed=c)
            pod.inc(n("unverified_total"), 0, app_id=app)
        pod.inc(n("orphan_events_total"), 0, event_type="completed")
        for e in ("completed", "uploaded"):
            pod.inc(n("callbacks_lost_total"), 0, event_type=e)
        for r in ("found", "not_found", "error"):
            pod.inc(n("reconcile_checks_total"), 0, result=r)
        pod.inc(n("reconcile_errors_total"), 0, bucket=BUCKET, reason="forbidden")
        pod.inc(n("blind_seconds_total"), 0, cause="store_unreachable")
        pod.inc(n("backend_errors_total"), 0, operation="record")

    def put(self, series: str, t: int, value: float | str | None) -> None:
        column = self.series.setdefault(series, [None] * self.sc.minutes)
        column[t] = value


STALE = "stale"  # promtool's staleness marker


def encode(values: list[float | str | None]) -> str:
    """promtool's expanding notation: runs of a constant step as `a+bxn`, gaps as `_xn`."""
    out: list[str] = []
    i = 0
    while i < len(values):
        v = values[i]
        if v == STALE:
            out.append(STALE)
            i += 1
            continue
        if v is None:
            j = i
            while j + 1 < len(values) and values[j + 1] is None:
                j += 1
            out.append("_" if j == i else f"_x{j - i + 1}")
            i = j + 1
            continue
        if i + 1 < len(values) and values[i + 1] not in (None, STALE):
            step = values[i + 1] - v  # type: ignore[operator]
            j = i + 1
            while (
                j + 1 < len(values)
                and values[j + 1] not in (None, STALE)
                and (values[j + 1] - values[j] == step)
            ):  # type: ignore[operator]
                j += 1
            if j - i >= 2:
                sign = "+" if step >= 0 else "-"
                out.append(f"{_num(v)}{sign}{_num(abs(step))}x{j - i}")
                i = j + 1
                continue
        out.append(_num(v))  # type: ignore[arg-type]
        i += 1
    return " ".join(out)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


# ----------------------------------------------------------------------------- the incidents

T0 = WARM_UP  # the minute each incident starts
N0 = 360  # the minute a night's incident starts


def night(t: int) -> int:
    return 1  # 5% of a weekday's 20 a minute


SCENARIOS = [
    Scenario(
        "healthy busy day with scanners",
        "Busy traffic, the canary, scanners at 50/s: nobody is paged, nothing is ticketed.",
        T0 + 60,
        unsigned_per_second=lambda t: 50,
        checks={T0: set(), T0 + 59: set()},
    ),
    Scenario(
        "3% of upload callbacks lost, files in COS",
        "The files are there: no page and no missing recording; one ticket that Tencent loses "
        "callbacks (CallbacksLost), once the hour's share is over 2% and has held 15 minutes.",
        T0 + 90,
        upload_callback_lost=(T0, 3),
        checks={
            T0 + 60: set(),
            T0 + 78: set(),
            T0 + 79: {"GmeRecordingCallbacksLost"},
            T0 + 89: {"GmeRecordingCallbacksLost"},
        },
        read_first="the segment_reconciled log lines (bucket, object_key, lost_callbacks)",
    ),
    Scenario(
        "COS credentials expired for 1 hour",
        "Lookups fail with 403: no page and no missing or stuck ticket (nothing is confirmed); "
        "within 30 minutes a ticket names COS, the bucket and the error class, and it resolves "
        "once lookups succeed again.",
        T0 + 120,
        upload_callback_lost=(0, 1),
        cos_forbidden=(T0, T0 + 60),
        checks={
            T0: set(),
            T0 + 23: set(),
            T0 + 24: {"GmeRecwatchCosLookupsFailing"},
            T0 + 59: {"GmeRecwatchCosLookupsFailing"},
            T0 + 78: {"GmeRecwatchCosLookupsFailing"},
            T0 + 79: set(),
            T0 + 119: set(),
        },
        read_first="the alert's bucket and reason labels, then the check_error of the "
        "segment_upload_missing lines",
    ),
    Scenario(
        "COS credentials expired for 3 hours",
        "As for one hour: a ticket naming COS for as long as it lasts, never a page, no "
        "recording reported missing.",
        T0 + 200,
        upload_callback_lost=(0, 1),
        cos_forbidden=(T0, T0 + 180),
        checks={
            T0 + 23: set(),
            T0 + 24: {"GmeRecwatchCosLookupsFailing"},
            T0 + 179: {"GmeRecwatchCosLookupsFailing"},
            T0 + 198: {"GmeRecwatchCosLookupsFailing"},
            T0 + 199: set(),
        },
        read_first="the alert's bucket and reason labels",
    ),
    Scenario(
        "Redis down 5 minutes, readiness gate on",
        "Pods go unready and the Ingress answers 503, outside our metrics. One page for the "
        "release (BackendDown, not one per replica) within 2 minutes, for as long as the "
        "outage (no hold); the blind window is a ticket afterwards; the segments live then are "
        "marked, so their deadlines 6 hours later page and ticket nobody. (Starts lost in the "
        "outage come back as orphans: a CallbacksLost ticket, a known limit.)",
        T0 + 420,
        redis_down=(T0, T0 + 5),
        checks={
            T0: set(),
            T0 + 1: {"GmeRecwatchBackendDown", "GmeRecwatchBlind"},
            T0 + 3: {"GmeRecwatchBackendDown", "GmeRecwatchBlind"},
            T0 + 4: {"GmeRecwatchBackendDown", "GmeRecwatchBlind", "GmeRecwatchCanaryFailing"},
            T0 + 5: {"GmeRecwatchBlind"},
            T0 + 25: {"GmeRecwatchBlind"},
            T0 + 26: {"GmeRecordingCallbacksLost", "GmeRecwatchBlind"},
            T0 + 63: {"GmeRecordingCallbacksLost", "GmeRecwatchBlind"},
            T0 + 64: {"GmeRecordingCallbacksLost"},
            T0 + 72: {"GmeRecordingCallbacksLost"},
            T0 + 73: set(),
            T0 + 419: set(),
        },
        pages={"GmeRecwatchBackendDown": T0 + 1},
        paged=(T0 + 1, T0 + 4),
        ends=T0 + 5,
        read_first="the backend_unreachable log lines and Redis itself",
    ),
    Scenario(
        "Redis down 5 minutes, no readiness gate",
        "Every replica answers callbacks 503: one page, BackendDown (those answers are its, "
        "not the ingest burn's), and nothing pages once Redis answers again.",
        T0 + 60,
        redis_down=(T0, T0 + 5),
        readiness_gate=False,
        checks={
            T0: set(),
            T0 + 1: {"GmeRecwatchBackendDown", "GmeRecwatchBlind"},
            T0 + 4: {"GmeRecwatchBackendDown", "GmeRecwatchBlind"},
            T0 + 5: {"GmeRecwatchBlind"},
            T0 + 25: {"GmeRecwatchBlind"},
            T0 + 26: {"GmeRecordingCallbacksLost", "GmeRecwatchBlind"},
            T0 + 59: {"GmeRecordingCallbacksLost", "GmeRecwatchBlind"},
        },
        pages={"GmeRecwatchBackendDown": T0 + 1},
        paged=(T0 + 1, T0 + 4),
        ends=T0 + 5,
        read_first="the backend_unreachable log lines and Redis itself",
    ),
    Scenario(
        "one of three replicas crash-looping",
        "Two replicas serve every callback: no page; one ticket, the restart loop.",
        T0 + 60,
        crash_loop=(T0, T0 + 60),
        checks={
            T0 + 5: set(),
            T0 + 14: set(),
            T0 + 15: {"GmeRecwatchRestartLoop"},
            T0 + 59: {"GmeRecwatchRestartLoop"},
        },
        read_first="the pod's previous logs (kubectl logs --previous)",
    ),
    Scenario(
        "a rolling upgrade",
        "Pods replaced one by one, their counters starting again: nothing fires.",
        T0 + 60,
        rolling_upgrade=T0,
        checks={T0 + 2: set(), T0 + 6: set(), T0 + 10: set(), T0 + 59: set()},
    ),
    Scenario(
        "key rotation, the sender on the old key for 10 minutes",
        "Every signed callback is rejected: one page naming the cause (SignatureFailureRatio) "
        "within 5 minutes, held while the rejections are the ingest burn's errors, so the burn "
        "stays muted to its end; the segments whose callbacks we refused are marked.",
        T0 + 60,
        old_key=(T0, T0 + 10),
        checks={
            T0 + 1: set(),
            T0 + 2: {"GmeRecordingSignatureFailureRatio", "GmeRecwatchIngestBudgetBurn"},
            T0 + 14: {"GmeRecordingSignatureFailureRatio", "GmeRecwatchIngestBudgetBurn"},
            T0 + 15: {
                "GmeRecordingSignatureFailureRatio",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 26: {
                "GmeRecordingCallbacksLost",
                "GmeRecordingSignatureFailureRatio",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 38: {
                "GmeRecordingCallbacksLost",
                "GmeRecordingSignatureFailureRatio",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 39: {"GmeRecordingCallbacksLost", "GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 59: {"GmeRecordingCallbacksLost", "GmeRecwatchIngestBudgetBurnSlow"},
        },
        pages={"GmeRecordingSignatureFailureRatio": T0 + 2},
        paged=(T0 + 2, T0 + 38),
        ends=T0 + 10,
        read_first="the signature_hint log lines (which key or encoding would verify)",
    ),
    Scenario(
        "2,000 unsigned requests a second, alone",
        "Scanners are outside the SLO: nobody is paged.",
        T0 + 30,
        unsigned_per_second=lambda t: 2000 if t >= T0 else 0,
        checks={T0 + 10: set(), T0 + 29: set()},
    ),
    Scenario(
        "2,000 unsigned requests a second, and every real callback answered 500 for 20 minutes",
        "The 401s do not dilute the ingest SLO: the ingest burn pages within 5 minutes and "
        "holds for the 20 minutes and its slow pair's window after; the app's silence beside it "
        "is muted.",
        T0 + 40,
        unsigned_per_second=lambda t: 2000,
        server_errors=(T0, T0 + 20),
        checks={
            T0: set(),
            T0 + 2: set(),
            T0 + 3: {"GmeRecwatchIngestBudgetBurn"},
            T0 + 10: {"GmeRecwatchIngestBudgetBurn"},
            T0 + 11: {"GmeRecordingAppSilent", "GmeRecwatchIngestBudgetBurn"},
            T0 + 16: {
                "GmeRecordingAppSilent",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 19: {
                "GmeRecordingAppSilent",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 20: {"GmeRecwatchIngestBudgetBurn", "GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 35: {
                "GmeRecordingCallbacksLost",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 39: {
                "GmeRecordingCallbacksLost",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
        },
        pages={"GmeRecwatchIngestBudgetBurn": T0 + 3},
        paged=(T0 + 3, T0 + 39),
        ends=T0 + 20,
        read_first="the service's error log lines and the HTTP panels of the service dashboard",
    ),
    Scenario(
        "Tencent silent for 20 minutes in busy hours",
        "With the canary passing: one page, CallbacksSilent, within 15 minutes, firing exactly "
        "as long as the silence lasts (the app's silence beside it muted); the recordings made "
        "meanwhile are in COS, so a ticket says Tencent lost their callbacks.",
        T0 + 40,
        silent=(T0, T0 + 20),
        checks={
            T0 + 9: set(),
            T0 + 10: {"GmeRecordingCallbacksSilent"},
            T0 + 11: {"GmeRecordingAppSilent", "GmeRecordingCallbacksSilent"},
            T0 + 19: {"GmeRecordingAppSilent", "GmeRecordingCallbacksSilent"},
            T0 + 20: set(),
            T0 + 28: set(),
            T0 + 29: {"GmeRecordingCallbacksLost"},
            T0 + 39: {"GmeRecordingCallbacksLost"},
        },
        pages={"GmeRecordingCallbacksSilent": T0 + 10},
        paged=(T0 + 10, T0 + 19),
        ends=T0 + 20,
        read_first="the canary (passing: the path is fine), then the GME console and Tencent",
    ),
    Scenario(
        "a quiet weekend night, nothing missing",
        "5% of weekday traffic, every file uploaded: nothing fires.",
        T0 + 60,
        rate=night,
        checks={T0: set(), T0 + 59: set()},
    ),
    Scenario(
        # After six hours of night: the ticket windows hold night traffic only.
        "a quiet weekend night, 2 files confirmed missing",
        "Two missing files at night are a ticket (UploadsMissing), never a page.",
        N0 + 120,
        rate=night,
        missing_at=(N0, N0 + 20),
        checks={
            N0 + LENGTH + GRACE - 1: set(),
            N0 + LENGTH + GRACE: {"GmeRecordingUploadsMissing"},
            N0 + 74: {"GmeRecordingUploadsMissing"},
            N0 + 75: set(),
            N0 + 119: set(),
        },
        start=N0,
        read_first="the segments API (state=upload_missing)",
    ),
    Scenario(
        "a new deployment that receives nothing for an hour",
        "No history to compare with: a ticket (CallbacksNeverReceived) after an hour, no page.",
        70,
        rate=lambda t: 0,
        checks={59: set(), 60: {"GmeRecordingCallbacksNeverReceived"}},
        start=0,
        read_first="the callback URL in the GME console",
    ),
    Scenario(
        "30% of recordings really never uploaded",
        "Confirmed absent from COS: the delivery burn pages within 10 minutes of the first "
        "misses being known (one upload grace after they should have uploaded), once.",
        T0 + 60,
        really_missing=(T0, 30),
        checks={
            T0 + 24: set(),
            T0 + 25: {"GmeRecordingUploadsMissing"},
            T0 + 26: {"GmeRecordingUploadsMissing"},
            T0 + 27: {"GmeRecordingDeliveryBudgetBurn", "GmeRecordingUploadsMissing"},
            T0 + 39: {"GmeRecordingDeliveryBudgetBurn", "GmeRecordingUploadsMissing"},
            T0 + 40: {
                "GmeRecordingDeliveryBudgetBurn",
                "GmeRecordingDeliveryBudgetBurnSlow",
                "GmeRecordingUploadsMissing",
            },
            T0 + 59: {
                "GmeRecordingDeliveryBudgetBurn",
                "GmeRecordingDeliveryBudgetBurnSlow",
                "GmeRecordingUploadsMissing",
            },
        },
        pages={"GmeRecordingDeliveryBudgetBurn": T0 + 27},
        paged=(T0 + 27, T0 + 59),
        read_first="the segments API (state=upload_missing), then the recording side",
    ),
    Scenario(
        "key rotation with COS off, the sender on the old key for 10 minutes",
        "One page naming the cause (SignatureFailureRatio) within 5 minutes and nothing after: "
        "the segments whose callbacks we refused are marked and become unverified at their "
        "deadlines, never an unconfirmed miss, never the delivery budget, at +17 minutes or 6 "
        "hours later.",
        T0 + 380,
        old_key=(T0, T0 + 10),
        cos=False,
        ends=T0 + 10,
        checks={
            T0 + 1: set(),
            T0 + 2: {"GmeRecordingSignatureFailureRatio", "GmeRecwatchIngestBudgetBurn"},
            T0 + 15: {
                "GmeRecordingSignatureFailureRatio",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 26: {
                "GmeRecordingCallbacksLost",
                "GmeRecordingSignatureFailureRatio",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 38: {
                "GmeRecordingCallbacksLost",
                "GmeRecordingSignatureFailureRatio",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 39: {"GmeRecordingCallbacksLost", "GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 77: {"GmeRecordingCallbacksLost", "GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 78: {"GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 368: {"GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 369: set(),
            T0 + 379: set(),
        },
        pages={"GmeRecordingSignatureFailureRatio": T0 + 2},
        paged=(T0 + 2, T0 + 38),
        read_first="the signature_hint log lines (which key or encoding would verify)",
    ),
    Scenario(
        "Tencent silent for 20 minutes with COS off, and its 6-hour tail",
        "One page (CallbacksSilent) while the silence lasts, none at its 6-hour tail: the "
        "segments whose callbacks never came are unconfirmed misses, a ticket that says how to "
        "confirm them, never the delivery budget.",
        T0 + 380,
        silent=(T0, T0 + 20),
        cos=False,
        ends=T0 + 20,
        checks={
            T0 + 9: set(),
            T0 + 10: {"GmeRecordingCallbacksSilent"},
            T0 + 11: {"GmeRecordingAppSilent", "GmeRecordingCallbacksSilent"},
            T0 + 14: {"GmeRecordingAppSilent", "GmeRecordingCallbacksSilent", "GmeRecordingMissesUnconfirmed"},
            T0 + 19: {"GmeRecordingAppSilent", "GmeRecordingCallbacksSilent", "GmeRecordingMissesUnconfirmed"},
            T0 + 20: {"GmeRecordingMissesUnconfirmed"},
            T0 + 35: {"GmeRecordingCallbacksLost", "GmeRecordingMissesUnconfirmed"},
            T0 + 73: {"GmeRecordingCallbacksLost", "GmeRecordingMissesUnconfirmed"},
            T0 + 74: {"GmeRecordingCallbacksLost"},
            T0 + 87: {"GmeRecordingCallbacksLost"},
            T0 + 88: set(),
            T0 + 349: set(),
            T0 + 350: {"GmeRecordingMissesUnconfirmed"},
            T0 + 379: {"GmeRecordingMissesUnconfirmed"},
        },
        pages={"GmeRecordingCallbacksSilent": T0 + 10},
        paged=(T0 + 10, T0 + 19),
        read_first="the canary (passing: the path is fine), then the GME console and Tencent",
    ),
    Scenario(
        "2% of upload callbacks lost routinely, COS off",
        "Not one recording is known to be missing: no page; the unconfirmed misses are a "
        "ticket naming the cure (a COS bucket).",
        T0 + 120,
        upload_callback_lost=(0, 2),
        cos=False,
        checks={
            T0: {"GmeRecordingMissesUnconfirmed"},
            T0 + 60: {"GmeRecordingMissesUnconfirmed"},
            T0 + 119: {"GmeRecordingMissesUnconfirmed"},
        },
        read_first="the ticket: configure cos.bucket so misses are confirmed",
    ),
    Scenario(
        "one app of three silent for two hours",
        "The release total only falls by a third: the app's own silence pages within 15 "
        "minutes naming the app, keeps paging while it lasts, and resolves when it sends again.",
        T0 + 150,
        apps=3,
        app_silent=(T0, T0 + 120),
        ends=T0 + 120,
        checks={
            T0 + 10: set(),
            T0 + 11: {"GmeRecordingAppSilent"},
            T0 + 60: {"GmeRecordingAppSilent"},
            T0 + 119: {"GmeRecordingAppSilent"},
            T0 + 120: set(),
            T0 + 136: set(),
            T0 + 137: {"GmeRecordingCallbacksLost"},
            T0 + 149: {"GmeRecordingCallbacksLost"},
        },
        pages={"GmeRecordingAppSilent": T0 + 11},
        paged=(T0 + 11, T0 + 119),
        read_first="the alert's app_id, then that app's callback settings in the GME console",
    ),
    Scenario(
        "one replica off Redis while 30% of recordings go missing",
        "The readiness gate contains the replica: a ticket naming it, never the release page; "
        "the real delivery incident beside it pages on time, muted by nothing.",
        T0 + 60,
        replica_redis_down=(T0, T0 + 60),
        really_missing=(T0, 30),
        checks={
            T0 + 4: set(),
            T0 + 5: {"GmeRecwatchReplicaBackendDown"},
            T0 + 24: {"GmeRecwatchReplicaBackendDown"},
            T0 + 25: {"GmeRecordingUploadsMissing", "GmeRecwatchReplicaBackendDown"},
            T0 + 26: {"GmeRecordingUploadsMissing", "GmeRecwatchReplicaBackendDown"},
            T0 + 27: {
                "GmeRecordingDeliveryBudgetBurn",
                "GmeRecordingUploadsMissing",
                "GmeRecwatchReplicaBackendDown",
            },
            T0 + 40: {
                "GmeRecordingDeliveryBudgetBurn",
                "GmeRecordingDeliveryBudgetBurnSlow",
                "GmeRecordingUploadsMissing",
                "GmeRecwatchReplicaBackendDown",
            },
            T0 + 59: {
                "GmeRecordingDeliveryBudgetBurn",
                "GmeRecordingDeliveryBudgetBurnSlow",
                "GmeRecordingUploadsMissing",
                "GmeRecwatchReplicaBackendDown",
            },
        },
        pages={"GmeRecordingDeliveryBudgetBurn": T0 + 27},
        paged=(T0 + 27, T0 + 59),
        read_first="the segments API (state=upload_missing), then the replica's Redis path",
    ),
    Scenario(
        "sender clock skew with the replay window on, 20 minutes",
        "Every callback is rejected as stale: one page, the ingest burn, with the stale ticket "
        "naming the cause; no silence page (the sender is sending).",
        T0 + 60,
        skew=(T0, T0 + 20),
        ends=T0 + 20,
        checks={
            T0 + 1: set(),
            T0 + 2: {"GmeRecwatchIngestBudgetBurn"},
            T0 + 5: {"GmeRecordingCallbacksStale", "GmeRecwatchIngestBudgetBurn"},
            T0 + 11: {"GmeRecordingAppSilent", "GmeRecordingCallbacksStale", "GmeRecwatchIngestBudgetBurn"},
            T0 + 15: {
                "GmeRecordingAppSilent",
                "GmeRecordingCallbacksStale",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 19: {
                "GmeRecordingAppSilent",
                "GmeRecordingCallbacksStale",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 20: {
                "GmeRecordingCallbacksStale",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 29: {
                "GmeRecordingCallbacksLost",
                "GmeRecordingCallbacksStale",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 33: {
                "GmeRecordingCallbacksLost",
                "GmeRecordingCallbacksStale",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 34: {
                "GmeRecordingCallbacksLost",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 48: {
                "GmeRecordingCallbacksLost",
                "GmeRecwatchIngestBudgetBurn",
                "GmeRecwatchIngestBudgetBurnSlow",
            },
            T0 + 49: {"GmeRecordingCallbacksLost", "GmeRecwatchIngestBudgetBurnSlow"},
            T0 + 59: {"GmeRecordingCallbacksLost", "GmeRecwatchIngestBudgetBurnSlow"},
        },
        pages={"GmeRecwatchIngestBudgetBurn": T0 + 2},
        paged=(T0 + 2, T0 + 48),
        read_first="GmeRecordingCallbacksStale and the skew_seconds of the callback_rejected lines",
    ),
]


def promtool_test(sc: Scenario, names: Names) -> dict[str, Any]:
    sim = Simulation(sc, names)
    sim.run()
    series = [
        {"series": name, "values": encode(values)}
        for name, values in sim.series.items()
        if any(v is not None for v in values)
    ]
    checks = []
    for minute, firing in sorted(sc.checks.items()):
        checks.append(
            {
                "expr": 'group by (alertname) (ALERTS{alertstate="firing"})',
                "eval_time": f"{minute}m",
                "exp_samples": [{"labels": f'{{alertname="{a}"}}', "value": 1} for a in sorted(firing)],
            }
        )
    return {
        "name": f"{sc.name}: {sc.must}",
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": checks,
    }


HEADER = (
    "# Incident scenarios for the gme-recwatch alerts, written by dashboards/scenarios.py from a\n"
    "# segment-level simulation (edit there, never here). Each test states what a good setup\n"
    "# must do; the checks list the alerts firing (before Alertmanager's inhibit rules) at\n"
    "# chosen minutes. Run: promtool test rules dashboards/tests/scenarios.test.yaml\n"
)


def render() -> str:
    names = Names()
    doc = {
        **RULES.promtool_file("1m"),
        "tests": [promtool_test(sc, names) for sc in SCENARIOS],
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=1000)


def paging_at(
    sc: Scenario, inhibits: list[tuple[str, tuple[str, ...]]], critical: set[str]
) -> dict[int, set[str]]:
    """At each checked minute, the pages Alertmanager sends: firing, critical, not muted."""
    out = {}
    for minute, firing in sc.checks.items():
        muted = {a for a in firing if any(src in firing and a in targets for src, targets in inhibits)}
        out[minute] = (firing - muted) & critical
    return out


def incident_table(inhibits: list[tuple[str, tuple[str, ...]]], critical: set[str]) -> str:
    """docs/alerting.md's incident table, from the scenarios: who is paged and when (minutes
    from the start of the incident), the tickets left after inhibition."""
    rows = [
        "| incident | a good setup must | paged (after inhibition) | tickets | read first |",
        "|---|---|---|---|---|",
    ]
    for sc in SCENARIOS:
        sent = notified(sc, inhibits)
        pages = ", ".join(
            f"{a} +{m - sc.start}" + (f" (until +{sc.paged[1] - sc.start})" if sc.paged else "")
            for a, m in sc.pages.items()
        )
        tickets = ", ".join(f"{a} +{m - sc.start}" for a, m in sent.items() if a not in critical)
        must = sc.must
        rows.append(
            f"| {sc.name} | {must} | {pages or 'nobody'} | {tickets or 'none'} | {sc.read_first or '-'} |"
        )
    return "\n".join(rows) + "\n"


def notified(sc: Scenario, inhibits: list[tuple[str, tuple[str, ...]]]) -> dict[str, int]:
    """The alerts Alertmanager sends for the scenario's checks (firing, not muted by a firing
    source of the same release), with the first checked minute of each."""
    out: dict[str, int] = {}
    for minute, firing in sorted(sc.checks.items()):
        for alert in sorted(firing):
            muted = any(src in firing and alert in targets for src, targets in inhibits)
            if not muted and alert not in out:
                out[alert] = minute
    return out


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
