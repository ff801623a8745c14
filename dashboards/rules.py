"""Writes the Prometheus rules for gme-recwatch: `python dashboards/rules.py`.

One definition, two renderings, in the way of the monitoring mixins:

* ``dashboards/rules/*.yaml``: plain rule files with the defaults of :data:`CONFIG` filled in, for
  any Prometheus (``rule_files:``), checked by promtool and unit-tested in ``dashboards/tests``;
* ``helm/gme-recwatch/files/rules/*.yaml``: the same rules with Helm placeholders where a knob
  goes (selector, runbook URL, each alert's ``for``, severity and thresholds), rendered by the
  chart's PrometheusRule template with ``tpl``. tests/test_helm.py renders the chart with the
  defaults and checks it gives the plain files back, rule for rule.

Every expression aggregates by ``cluster, namespace, job`` (``BY``), so two releases, or two
clusters, in one Prometheus never merge, and the selector narrows each rule to one release when
the chart installs it. Edit here, run the script, commit what it writes.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLAIN_DIR = HERE / "rules"
CHART_DIR = ROOT / "helm" / "gme-recwatch" / "files" / "rules"
RUNBOOK = "https://github.com/gme-recwatch/gme-recwatch/blob/main/docs/runbook.md"
# Matches `gme-recwatch` and a Helm release's `<release>-gme-recwatch[-admin]`.
DEFAULT_SELECTOR = 'job=~".*gme-recwatch.*"'
BY = "cluster, namespace, job"


@dataclass
class Alert:
    name: str
    expr: str  # `$S` is the selector, `$BY` the release labels, `$<param>` a threshold or knob
    summary: str
    description: str
    severity: str
    for_: str
    params: dict[str, float | int | str] = field(default_factory=dict)


@dataclass
class Record:
    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Group:
    name: str
    rules: list[Alert | Record]


# Knobs that are not one alert's: the SLOs and their windows. name -> (path under the chart's
# `prometheusRule`, default); `$name` in an expression.
KNOBS: dict[str, tuple[tuple[str, ...], float | int | str]] = {
    # The SRE workbook's four window pairs (alerting on SLOs, table 5-8): page on a fast and a
    # slower burn, ticket on a steady one and on a slow leak.
    "page_long": (("slo", "windows", "pageLong"), "1h"),
    "page_short": (("slo", "windows", "pageShort"), "5m"),
    "page_slow_long": (("slo", "windows", "pageSlowLong"), "6h"),
    "page_slow_short": (("slo", "windows", "pageSlowShort"), "30m"),
    "ticket_long": (("slo", "windows", "ticketLong"), "1d"),
    "ticket_short": (("slo", "windows", "ticketShort"), "2h"),
    "ticket_slow_long": (("slo", "windows", "ticketSlowLong"), "3d"),
    "ticket_slow_short": (("slo", "windows", "ticketSlowShort"), "6h"),
    "ingest_objective": (("slo", "ingest", "objective"), 0.999),
    # The `le` of the callback latency histogram above which an answer counts as too slow;
    # one of metrics.HTTP_BUCKETS as exposed ("2.5"). Tencent gives up after about 5 s.
    "ingest_slow_le": (("slo", "ingest", "slowSeconds"), "2.5"),
    "delivery_objective": (("slo", "delivery", "objective"), 0.999),
}
# The windows every SLO is recorded at, by role: a burn alert reads two of them. The budget
# left over BUDGET_PERIOD is the dashboard's, read from the counters when it is looked at:
# recording a 30-day increase every evaluation would cost more than every other rule together.
WINDOWS = (
    "page_long",
    "page_short",
    "page_slow_long",
    "page_slow_short",
    "ticket_long",
    "ticket_short",
    "ticket_slow_long",
    "ticket_slow_short",
)


@dataclass(frozen=True)
class Burn:
    """One window pair of a burn alert: burning `factor` times the budget's rate over both
    windows, with at least `min_events` events in the long one."""

    key: str  # the alert params' prefix: `<key>factor`, `<key>min_events`
    long: str
    short: str
    factor: float
    min_events: int


# The one SLO alerting definition (the workbook's: 14.4x spends 2% of a 30-day budget in an
# hour, 6x 5% in six hours, 3x 10% in a day, 1x 10% in three days). Each SLO gets a page (the
# first two pairs, either) and a ticket (the last two). The minimum events keep a quiet night's
# handful of files from burning anything: below them the per-app tickets speak.
BURNS: dict[str, tuple[str, str, tuple[Burn, ...]]] = {
    "page": (
        "critical",
        "2m",
        (
            Burn("", "page_long", "page_short", 14.4, 100),
            Burn("slow_", "page_slow_long", "page_slow_short", 6, 600),
        ),
    ),
    "ticket": (
        "warning",
        "15m",
        (
            Burn("", "ticket_long", "ticket_short", 3, 1000),
            Burn("slow_", "ticket_slow_long", "ticket_slow_short", 1, 3000),
        ),
    ),
}
BUDGET_PERIOD = "30d"
SLOS = ("ingest", "delivery")


def _sub(text: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", one, text)


def knob_defaults() -> dict[str, Any]:
    """The chart's `prometheusRule` values for :data:`KNOBS`, nested as the chart has them."""
    out: dict[str, Any] = {}
    for path, value in KNOBS.values():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _inc(agg: str, metric: str, sel: str, extra: str, window: str) -> str:
    matchers = f"{sel}, {extra}" if extra else sel
    return f"{agg} (increase({metric}{{{matchers}}}[{window}]))"


def ingest_sli(window: str, slow_le: str, sel: str = "$S", agg: str = "sum by ($BY)") -> tuple[str, str]:
    """(events, errors) of the ingest SLO over `window`: signed callbacks, and those answered
    5xx, rejected for their signature (mismatch, unknown_app), rejected as stale, or answered
    slower than `slow_le` seconds. Unsigned requests (scanners, probes: answered 401 with reason
    `missing`) are in neither, so no flood of them can hide a failure or raise one. Rules and
    the overview dashboard both read these."""
    zero = "0 * " + _inc(agg, "gme_recording_signature_failures_total", sel, "", window)
    answered = _inc(
        agg, "gme_recording_http_requests_total", sel, 'listener="callback", code=~"2..|5.."', window
    )
    failed = _inc(agg, "gme_recording_http_requests_total", sel, 'listener="callback", code=~"5.."', window)
    # Answered 503 because the state store was unreachable: GmeRecwatchBackendDown's incident
    # (with the readiness gate these never reach us at all), not the ingest burn's.
    store = _inc(agg, "gme_recording_backend_errors_total", sel, 'operation="record"', window)
    answered = f"({answered}\n  - ({store} or {zero}))"
    failed = f"({failed}\n  - ({store} or {zero}))"
    rejected = _inc(agg, "gme_recording_signature_failures_total", sel, 'reason!="missing"', window)
    stale = _inc(agg, "gme_recording_callbacks_invalid_total", sel, 'reason="stale"', window)
    # The latency histogram has no status code: unsigned requests are answered fast, so they
    # add to the count and to every bucket alike and never to the slow ones.
    slow = (
        _inc(agg, "gme_recording_http_request_duration_seconds_count", sel, 'listener="callback"', window)
        + "\n  - "
        + _inc(
            agg,
            "gme_recording_http_request_duration_seconds_bucket",
            sel,
            f'listener="callback", le="{slow_le}"',
            window,
        )
    )
    events = f"({answered}\n  or {zero})\n+ {rejected}\n+ {stale}"
    errors = f"({failed}\n  or {zero})\n+ {rejected}\n+ {stale}\n+ ({slow}\n  or {zero})"
    return events, errors


def delivery_sli(
    window: str, sel: str = "$S", app_sel: str = "$S", agg: str = "sum by ($BY)"
) -> tuple[str, str]:
    """(events, errors) of the recording-delivery SLO over `window`: segments that reached
    uploaded (by their upload callback, or found in COS after a deadline) or became a problem
    COS confirmed (stuck or upload missing, the file looked up and not there). A miss nobody
    could confirm (no bucket: `unchecked`; the lookup failed: `false`) is a ticket, never an
    error here; nor is a segment attributed to an incident of our own (`unverified`)."""
    zero = "0 * " + _inc(agg, "gme_recording_segments_reconciled_total", sel, "", window)
    uploaded = _inc(
        agg,
        "gme_recording_callbacks_total",
        sel,
        'event_type="uploaded", result=~"accepted|out_of_order"',
        window,
    )
    found = _inc(agg, "gme_recording_segments_reconciled_total", sel, "", window)
    problems = _inc(agg, "gme_recording_problem_segments_total", app_sel, 'confirmed="true"', window)
    failed = f"({problems}\n  or {zero})"
    return f"{uploaded}\n+ {found}\n+ {failed}", failed


def slo_records() -> list[Record]:
    out: list[Record] = []
    for slo in SLOS:
        # Per instance, so the dashboards (which filter every query by instance) can read it.
        out.append(
            Record(
                "instance:gme_recording_slo_objective:ratio",
                f"0 * group by ($BY, instance) (gme_recording_build_info{{$S}}) + ${slo}_objective",
                {"slo": slo},
            )
        )
        for role in WINDOWS:
            window = f"${role}"
            events, errors = ingest_sli(window, "$ingest_slow_le") if slo == "ingest" else delivery_sli(window)
            labels = {"slo": slo, "window": role}
            sel = f'slo="{slo}", window="{role}"'
            out += [
                Record("job:gme_recording_slo_events:increase", events, labels),
                Record("job:gme_recording_slo_errors:increase", errors, labels),
                Record(
                    "job:gme_recording_slo_errors:ratio_increase",
                    f"job:gme_recording_slo_errors:increase{{{sel}}}\n"
                    f"/ (job:gme_recording_slo_events:increase{{{sel}}} > 0)",
                    labels,
                ),
            ]
    return out


def groups() -> list[Group]:
    recording = Group(
        "gme-recwatch.rules",
        [
            # Verified callbacks per second, by event type and what the store made of them.
            Record(
                "job:gme_recording_callbacks:rate5m",
                "sum by ($BY, event_type, result) (rate(gme_recording_callbacks_total{$S}[5m]))",
            ),
            # Rejected signatures per second, by reason (missing, mismatch, unknown_app).
            Record(
                "job:gme_recording_signature_failures:rate5m",
                "sum by ($BY, reason) (rate(gme_recording_signature_failures_total{$S}[5m]))",
            ),
            # Callbacks that carried a Signature: verified ones plus those whose signature failed.
            # Requests with no Signature at all (scanners, probes) are left out.
            Record(
                "job:gme_recording_signed_callbacks:rate5m",
                'sum by ($BY) (rate(gme_recording_signature_failures_total{$S, reason!="missing"}[5m]))\n'
                "+ sum by ($BY) (rate(gme_recording_callbacks_total{$S}[5m]))",
            ),
            # Share of signed callbacks whose signature failed: 1 when the SecretKey is wrong.
            Record(
                "job:gme_recording_signature_mismatches:ratio_rate5m",
                'sum by ($BY) (rate(gme_recording_signature_failures_total{$S, reason!="missing"}[5m]))\n'
                "/ (job:gme_recording_signed_callbacks:rate5m > 0)",
            ),
            # Share of the store's capacity in use, per instance.
            Record(
                "instance:gme_recording_store_utilisation:ratio",
                "sum by ($BY, instance) (gme_recording_tracked_segments{$S})\n"
                "/ on ($BY, instance) (max by ($BY, instance) (gme_recording_store_capacity{$S}) > 0)",
            ),
            # Segments tracked by the release: one instance's count (replicas on one Redis all report
            # the shared total, so max, not sum).
            Record(
                "job:gme_recording_tracked_segments:max",
                "max by ($BY) (sum by ($BY, instance) (gme_recording_tracked_segments{$S}))",
            ),
            # Verified callbacks per second of each app over the hour: what an app's silence is
            # measured against (GmeRecordingAppSilent).
            Record(
                "job_app:gme_recording_callbacks:rate1h",
                "sum by ($BY, app_id) (rate(gme_recording_callbacks_total{$S}[1h]))",
            ),
            # Tencent's delivery as a figure (#28.4): callbacks it never delivered over the hour, by
            # event type -- found lost when the file was in COS (for a segment no callback
            # announced, all three), and starts of segments whose completion or upload came
            # (orphans) -- beside those it delivered, and their share.
            Record(
                "job_event:gme_recording_callbacks_lost:increase1h",
                "(\n"
                "  sum by ($BY, event_type) (increase(gme_recording_callbacks_lost_total{$S}[1h]))\n"
                "  + on ($BY, event_type)\n"
                "  label_replace(sum by ($BY) (increase(gme_recording_orphan_events_total{$S}[1h])),\n"
                '    "event_type", "started", "", "")\n'
                ")\n"
                "or sum by ($BY, event_type) (increase(gme_recording_callbacks_lost_total{$S}[1h]))",
            ),
            Record(
                "job_event:gme_recording_callbacks_delivered:increase1h",
                "sum by ($BY, event_type) (increase(gme_recording_callbacks_total{$S, "
                'result=~"accepted|out_of_order|late"}[1h]))',
            ),
            Record(
                "job_event:gme_recording_callbacks_lost:ratio1h",
                "job_event:gme_recording_callbacks_lost:increase1h\n"
                "/ (job_event:gme_recording_callbacks_lost:increase1h\n"
                "  + on ($BY, event_type) job_event:gme_recording_callbacks_delivered:increase1h > 0)",
            ),
        ],
    )
    # The SLIs at every window the burn alerts and the dashboard read, and the budget left.
    slo = Group("gme-recwatch.slo", list(slo_records()))
    availability = Group(
        "gme-recwatch.availability",
        [
            # A release that had targets within the hour and has none up now; and, when no target
            # at all was seen in that hour, one alert with no release to name. The two never fire
            # together, so "nothing is up" is one alert, not two.
            Alert(
                "GmeRecwatchAbsent",
                "count by ($BY) (max_over_time(up{$S}[$history]))\n"
                "unless\n"
                "count by ($BY) (up{$S} == 1)\n"
                "or\n"
                "absent_over_time(up{$S}[$history])",
                "No gme-recwatch instance is up.",
                "Prometheus has scraped no healthy gme-recwatch target {{ with $labels.namespace }}in "
                "namespace {{ . }} {{ end }}for the alert's duration: GME recording callbacks are "
                "neither verified nor tracked. Outside the Helm chart, the selector in this rule "
                "must match your scrape job. A release uninstalled on purpose pages for `history` "
                "(silence it); one that vanished stays paged that long whatever other releases "
                "remain.",
                "critical",
                "5m",
                {"history": "1d"},
            ),
            Alert(
                "GmeRecwatchDown",
                "up{$S} == 0",
                "A gme-recwatch instance cannot be scraped.",
                "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}, namespace "
                "{{ $labels.namespace }}).",
                "warning",
                "5m",
            ),
            Alert(
                "GmeRecwatchRestartLoop",
                "changes(process_start_time_seconds{$S}[1h]) >= $restarts",
                "gme-recwatch keeps restarting.",
                "{{ $labels.instance }} (job {{ $labels.job }}, namespace {{ $labels.namespace }}) "
                "restarted {{ $value }} times in the last hour; each restart is a window in which "
                "callbacks are refused.",
                "warning",
                "5m",
                {"restarts": 3},
            ),
        ],
    )
    burn = ("job:gme_recording_slo_errors:ratio_increase", "job:gme_recording_slo_events:increase")

    def pair(slo: str, b: Burn) -> str:
        limit = f"${b.key}factor * (1 - ${slo}_objective)"
        return (
            f'max without (window) ({burn[0]}{{slo="{slo}", window="{b.long}"}}) > {limit}\n'
            "and on ($BY)\n"
            f'{burn[0]}{{slo="{slo}", window="{b.short}"}} > {limit}\n'
            "and on ($BY)\n"
            f'{burn[1]}{{slo="{slo}", window="{b.long}"}} >= ${b.key}min_events'
        )

    def burning(slo: str, kind: str) -> str:
        """Either window pair of `kind` (page, ticket) burning: one series per release with
        the same labels whichever pair burns, so a burn moving from one pair to the other stays
        one alert (one notification), never a second page."""
        return "\nor on ($BY)\n".join(f"(\n{pair(slo, b)}\n)" for b in BURNS[kind][2])

    def burn_params(kind: str) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {}
        for b in BURNS[kind][2]:
            out[f"{b.key}factor"] = b.factor
            out[f"{b.key}min_events"] = b.min_events
        return out

    callbacks = Group(
        "gme-recwatch.callbacks",
        [
            Alert(
                "GmeRecwatchCanaryFailing",
                "(time() - max by ($BY) (gme_recording_canary_last_success_timestamp_seconds{$S})"
                " > $seconds)\n"
                "and on ($BY)\n"
                "max by ($BY) (gme_recording_canary_interval_seconds{$S}) > 0",
                "The canary callback has not come through the public callback path.",
                "No canary callback (gme-recwatch canary) has been verified by job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) for {{ $value | humanizeDuration }}: Tencent's "
                "callbacks cannot reach the service either (DNS, Ingress, TLS, NetworkPolicy, the "
                "listener or the key).",
                "critical",
                "2m",
                {"seconds": 150},
            ),
            Alert(
                "GmeRecordingCallbacksSilent",
                "sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window]))\n"
                '+ sum by ($BY) (increase(gme_recording_signature_failures_total{$S, reason!="missing"}'
                "[$window]))\n"
                '+ (sum by ($BY) (increase(gme_recording_http_requests_total{$S, listener="callback", '
                'code=~"5.."}[$window]))\n'
                "  or 0 * sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window])))\n"
                # Rejected as stale or malformed: the sender is sending (a clock skew is the
                # ingest burn's and GmeRecordingCallbacksStale's, not a silence).
                "+ (sum by ($BY) (increase(gme_recording_callbacks_invalid_total{$S}[$window]))\n"
                "  or 0 * sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window])))\n"
                "== 0\n"
                "and on ($BY)\n"
                "sum by ($BY) (increase(gme_recording_callbacks_total{$S}[1h])) >= $min_last_hour",
                "Verified GME callbacks stopped arriving in busy hours.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) received no signed "
                "callback at all in the window (none verified, none rejected, none failed) though "
                "it verified {{ $value | humanize }} in the last hour. With the "
                "canary passing, the path is fine and the sender stopped (GME console callback "
                "URL, Tencent); recordings made meanwhile are found in COS at their deadlines.",
                "critical",
                "1m",
                {"window": "10m", "min_last_hour": 120},
            ),
            # One app stopped while the release goes on: measured against the app's own hour
            # before the window, with a minimum volume (a quiet app at night has under 120 an
            # hour and never trips it). Once firing it holds while the app stays at zero (its
            # own ALERTS series), however long: the hour before the window empties after an
            # hour of silence, the silence does not end.
            Alert(
                "GmeRecordingAppSilent",
                'sum by ($BY, app_id) (increase(gme_recording_callbacks_total{$S, app_id!="other"}'
                "[$window])) == 0\n"
                "and on ($BY, app_id)\n"
                "(\n"
                "  max by ($BY, app_id) (job_app:gme_recording_callbacks:rate1h offset $window) * 3600"
                " >= $min_per_hour\n"
                "  or\n"
                '  max by ($BY, app_id) (ALERTS{$S, alertname="GmeRecordingAppSilent", alertstate="firing"})\n'
                ")",
                "One GME app stopped sending callbacks while it usually sends.",
                "App {{ $labels.app_id }} of job {{ $labels.job }} (namespace "
                "{{ $labels.namespace }}) sent no verified callback in the window, though it sent "
                "over the minimum an hour before it; the other apps of the release still do. "
                "Check that app's callback URL and SecretKey in the GME console, then whether it "
                "records at all.",
                "critical",
                "2m",
                {"window": "10m", "min_per_hour": 120},
            ),
            Alert(
                "GmeRecordingCallbacksAbsent",
                "(\n"
                "  sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window]))\n"
                "  or\n"
                "  0 * sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window] offset 1w))\n"
                ")\n"
                "< $ratio * sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window] offset 1w))\n"
                "and on ($BY)\n"
                "sum by ($BY) (increase(gme_recording_callbacks_total{$S}[$window] offset 1w))"
                " >= $min_last_week",
                "Far fewer verified GME callbacks arrive than a week ago.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) received "
                "{{ $value | humanize }} verified callbacks in the window, far below the same window "
                "a week ago. Either recording traffic really dropped or callbacks no longer reach "
                "the service; GmeRecwatchCanaryFailing tells the two apart. A ticket: holidays "
                "and launches move traffic week on week; the silence pages are CallbacksSilent "
                "and AppSilent.",
                "warning",
                "10m",
                {"window": "10m", "ratio": 0.2, "min_last_week": 30},
            ),
            # gme_recording_last_callback_timestamp_seconds is 0 until the first verified callback
            # (canaries left out): 0 across the history window is a release that never received one.
            Alert(
                "GmeRecordingCallbacksNeverReceived",
                "max by ($BY) (max_over_time("
                "gme_recording_last_callback_timestamp_seconds{$S}[$history])) == 0",
                "A gme-recwatch release has never received a GME callback.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) has verified no callback "
                "since it started, for the alert's duration: the callback URL in the GME console "
                "does not point here, or nothing records yet. A passing canary proves the path; "
                "then only the console is left.",
                "warning",
                "1h",
                {"history": "1w"},
            ),
            Alert(
                "GmeRecordingSignatureFailures",
                'sum by ($BY) (job:gme_recording_signature_failures:rate5m{reason!="missing"}) * 60'
                " > $per_minute",
                "GME callbacks are being rejected for a wrong signature.",
                "{{ $value | humanize }} signed callbacks per minute to job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) fail verification (reason mismatch or "
                "unknown_app): a SecretKey or BizID missing from the keyring, or a key rotated in "
                "one place only. Unsigned requests (scanners) are not counted here.",
                "warning",
                "15m",
                {"per_minute": 1},
            ),
            Alert(
                "GmeRecordingSignatureFailureRatio",
                "job:gme_recording_signature_mismatches:ratio_rate5m > $ratio\n"
                "and on ($BY)\n"
                "job:gme_recording_signed_callbacks:rate5m * 300 >= $min_signed\n"
                # Once firing it holds while the rejections are still most of the ingest errors
                # in the slower page window: the ingest burn of the same rejections stays muted
                # by it to its end, and another kind of failure (500s) outweighs them and pages.
                "or on ($BY)\n"
                '(\n  sum by ($BY) (increase(gme_recording_signature_failures_total{$S, reason!="missing"}'
                "[$page_slow_short]))\n"
                "  / on ($BY)\n"
                '  (job:gme_recording_slo_errors:increase{slo="ingest", window="page_slow_short"} > 0)'
                " > $explains\n"
                "  and on ($BY)\n"
                "  max by ($BY)\n"
                '  (ALERTS{$S, alertname="GmeRecordingSignatureFailureRatio", alertstate="firing"})\n'
                ")",
                "Most signed GME callbacks fail signature verification.",
                "{{ $value | humanizePercentage }} of the signed callbacks to job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) fail verification, so their events are dropped. "
                "A SecretKey rotated in the GME console but not in gme-recwatch looks exactly like "
                "this.",
                "critical",
                "2m",
                {"ratio": 0.25, "min_signed": 10, "explains": 0.5},
            ),
            Alert(
                "GmeRecordingCallbacksStale",
                'sum by ($BY) (increase(gme_recording_callbacks_invalid_total{$S, reason="stale"}'
                "[15m])) >= $count",
                "GME callbacks are rejected as stale: a clock is off.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) rejected "
                "{{ $value | humanize }} callbacks in 15 minutes because their Timestamp is outside "
                "the replay window: this node's clock or Tencent's delivery is that far off. Tencent "
                "does not resend a rejected callback.",
                "warning",
                "5m",
                {"count": 3},
            ),
            Alert(
                "GmeRecwatchIngestBudgetBurn",
                burning("ingest", "page"),
                "gme-recwatch fails GME callbacks fast enough to spend the ingest error budget within days.",
                "{{ $value | humanizePercentage }} of the signed callbacks to job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) were answered 5xx, rejected (signature, stale) "
                "or too slowly: over 14.4 times the budget's rate over 1h and 5m, or 6 times over "
                "6h and 30m. Tencent retries each for about a minute, then drops it. Unsigned "
                "requests and answers 503 for an unreachable store (GmeRecwatchBackendDown) are "
                "not counted.",
                BURNS["page"][0],
                BURNS["page"][1],
                burn_params("page"),
            ),
            Alert(
                "GmeRecwatchIngestBudgetBurnSlow",
                burning("ingest", "ticket"),
                "gme-recwatch fails GME callbacks steadily, spending the ingest error budget.",
                "{{ $value | humanizePercentage }} of the signed callbacks to job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) were answered 5xx, rejected (signature, stale) "
                "or too slowly: over 3 times the budget's rate over 1d and 2h, or over it over 3d "
                "and 6h. A slow leak, not an outage.",
                BURNS["ticket"][0],
                BURNS["ticket"][1],
                burn_params("ticket"),
            ),
        ],
    )
    lifecycle = Group(
        "gme-recwatch.lifecycle",
        [
            Alert(
                "GmeRecordingStuck",
                "sum by ($BY, app_id) (increase(gme_recording_problem_segments_total{$S, "
                'state="stuck", confirmed="true"}[$window])) > $count',
                "GME recordings became stuck: recording for longer than the maximum duration.",
                "{{ $value | humanize }} segments of app {{ $labels.app_id }} (job {{ $labels.job }}, "
                "namespace {{ $labels.namespace }}) became stuck in the window: started longer ago "
                "than the maximum recording duration, never completed, and confirmed not in COS. "
                "The alert resolves when no new one comes; the dashboard keeps the standing count.",
                "warning",
                "0m",
                {"window": "30m", "count": 0},
            ),
            Alert(
                "GmeRecordingUploadsMissing",
                "sum by ($BY, app_id) (increase(gme_recording_problem_segments_total{$S, "
                'state="upload_missing", confirmed="true"}[$window])) > $count',
                "Completed GME recordings have no upload.",
                "{{ $value | humanize }} completed segments of app {{ $labels.app_id }} (job "
                "{{ $labels.job }}, namespace {{ $labels.namespace }}) passed the upload grace with no "
                "upload callback in the window, and their files are confirmed not in COS. The alert "
                "resolves when no new one comes; the dashboard keeps the standing count.",
                "warning",
                "0m",
                {"window": "30m", "count": 0},
            ),
            # Misses nobody could confirm: no bucket to look in. A ticket that says how to make
            # them confirmable; never a page and never the delivery budget (a studio without COS
            # loses 1-3% of upload callbacks routinely). Failed lookups (`false`) are
            # GmeRecwatchCosLookupsFailing's, per bucket.
            Alert(
                "GmeRecordingMissesUnconfirmed",
                "sum by ($BY, app_id) (increase(gme_recording_problem_segments_total{$S, "
                'confirmed="unchecked"}[$window])) > $count',
                "GME recordings look stuck or missing, and nothing can confirm it: no COS bucket.",
                "{{ $value | humanize }} segments of app {{ $labels.app_id }} (job {{ $labels.job }}, "
                "namespace {{ $labels.namespace }}) passed a deadline without their callbacks in the "
                "window, and there is no COS bucket to look them up in: the sender may have lost "
                "the callbacks (the files exist) or the recordings may be missing. Configure "
                "GME_RECWATCH_COS_BUCKETS_FILE (chart: cos.bucket) so misses are confirmed and "
                "page through the delivery SLO.",
                "warning",
                "0m",
                {"window": "1h", "count": 0},
            ),
            Alert(
                "GmeRecordingDeliveryBudgetBurn",
                burning("delivery", "page"),
                "GME recordings are going missing fast enough to spend the delivery error budget within days.",
                "{{ $value | humanizePercentage }} of the segments of job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) settled are stuck, missing their upload or "
                "never announced, confirmed absent from COS: over 14.4 times the budget's rate over "
                "1h and 5m, or 6 "
                "times over 6h and 30m. Unconfirmed misses and segments attributed to an incident "
                "of our own (unverified) never count.",
                BURNS["page"][0],
                BURNS["page"][1],
                burn_params("page"),
            ),
            Alert(
                "GmeRecordingDeliveryBudgetBurnSlow",
                burning("delivery", "ticket"),
                "GME recordings go missing steadily, spending the delivery error budget.",
                "{{ $value | humanizePercentage }} of the segments of job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) settled are stuck or missing their upload, "
                "confirmed absent from COS: over 3 times the budget's rate over 1d and 2h, or over "
                "it over 3d and 6h.",
                BURNS["ticket"][0],
                BURNS["ticket"][1],
                burn_params("ticket"),
            ),
            # Files that reached COS whose callbacks the sender lost: found there by a lookup after a
            # deadline (needs a bucket; a segment attributed to an incident of ours is not counted
            # lost), or completions and uploads whose start never arrived (orphans, counted by
            # the replica that saw each: summed).
            Alert(
                "GmeRecordingCallbacksLost",
                "(\n"
                '  sum by ($BY) (increase(gme_recording_callbacks_lost_total{$S, event_type="uploaded"}[1h]))\n'
                "  + (sum by ($BY) (increase(gme_recording_orphan_events_total{$S, "
                'event_type="completed"}[1h]))\n'
                "    or 0 * sum by ($BY) (increase(gme_recording_segments_reconciled_total{$S}[1h])))\n"
                ")\n"
                "/ (sum by ($BY) (increase(gme_recording_segments_reconciled_total{$S}[1h]))\n"
                '  + sum by ($BY) (increase(gme_recording_callbacks_total{$S, event_type="uploaded", '
                'result=~"accepted|out_of_order|late"}[1h])) >= $min_lifecycles) > $ratio',
                "Tencent is losing GME recording callbacks.",
                "{{ $value | humanizePercentage }} of the recorded files of job {{ $labels.job }} "
                "(namespace {{ $labels.namespace }}) in the last hour lost callbacks on the way: "
                "found in COS by a lookup after a deadline (completed/uploaded never arrived), or "
                "completed without their start. No recording is lost; anything fed by the callbacks "
                "(your own pipeline) missed them. Segments attributed to an incident of ours "
                "(rejected callbacks, store outages, blind windows) are not counted. Tencent's "
                "figure by event type: job_event:gme_recording_callbacks_lost:ratio1h; the runbook "
                "says what to send Tencent.",
                "warning",
                "15m",
                {"ratio": 0.02, "min_lifecycles": 50},
            ),
        ],
    )
    service = Group(
        "gme-recwatch.service",
        [
            # The release cannot ingest: every replica it has lost its store. One alert per
            # release, however many replicas (they share Redis), and no longer than the outage.
            Alert(
                "GmeRecwatchBackendDown",
                "count by ($BY) (gme_recording_backend_up{$S} == 0)\n"
                "and on ($BY)\n"
                "max by ($BY) (gme_recording_backend_up{$S}) == 0",
                "gme-recwatch cannot reach its state store, and callbacks are refused.",
                "All {{ $value }} instance(s) of job {{ $labels.job }} (namespace "
                "{{ $labels.namespace }}) cannot reach Redis: callbacks are answered 503 (or, with "
                "the readiness gate, not routed to them) and Tencent retries each for about a "
                "minute only, so recordings are going untracked.",
                "critical",
                "1m",
            ),
            # Some replicas lost the store, others serve: the readiness gate keeps the lost ones
            # out of rotation, and Tencent's retries reach the others. A ticket.
            Alert(
                "GmeRecwatchReplicaBackendDown",
                "gme_recording_backend_up{$S} == 0\n"
                "unless on ($BY)\n"
                "max by ($BY) (gme_recording_backend_up{$S}) == 0",
                "A gme-recwatch replica cannot reach its state store; the others serve.",
                "{{ $labels.instance }} (job {{ $labels.job }}, namespace {{ $labels.namespace }}) "
                "cannot reach Redis while other replicas can: with the chart's readiness gate it is "
                "out of rotation and Tencent's retries reach the others. Its network path to Redis "
                "(NetworkPolicy, DNS, a node), its connection limits or its credentials.",
                "warning",
                "5m",
            ),
            Alert(
                "GmeRecwatchKeyringFailing",
                "sum by ($BY, instance) (increase(gme_recording_keyring_reloads_total{$S, "
                'result="failure"}[15m])) > 0\n'
                "or\n"
                "max by ($BY, instance) (gme_recording_keyring_keys{$S}) == 0\n"
                "or\n"
                # A bad version of the file counts one failure: this keeps the alert while it stays.
                "min by ($BY, instance) (gme_recording_keyring_file_valid{$S}) == 0",
                "gme-recwatch cannot load its SecretKeys.",
                "{{ $labels.instance }} (job {{ $labels.job }}, namespace {{ $labels.namespace }}) "
                "failed to reload the keyring file, or holds no key: the previous keys stay in force, "
                "so a key added or rotated since is not.",
                "warning",
                "5m",
            ),
            Alert(
                "GmeRecwatchStateLost",
                "job:gme_recording_tracked_segments:max\n"
                "< $ratio * (job:gme_recording_tracked_segments:max offset 15m)\n"
                "and on ($BY)\n"
                "(job:gme_recording_tracked_segments:max offset 15m) >= $min_segments\n"
                "and on ($BY)\n"
                "max by ($BY) (process_start_time_seconds{$S}) > time() - 900",
                "gme-recwatch forgot the recordings it was tracking at a restart.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) tracks "
                "{{ $value | humanize }} segments after a restart, far fewer than before it: their "
                "stuck recordings and missing uploads will not be reported. The snapshot was off, "
                "not on a volume, or not readable.",
                "warning",
                "0m",
                {"ratio": 0.5, "min_segments": 10},
            ),
            # Redis came back empty (its epoch marker gone): one replica counts each reset, and
            # the sum over the release's replicas makes it one alert however many saw it.
            Alert(
                "GmeRecwatchStoreReset",
                "sum by ($BY) (increase(gme_recording_store_resets_total{$S}[$window])) > 0",
                "The shared Redis store came back empty: the tracked recordings were lost.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) found its Redis store "
                "empty ({{ $value | humanize }} resets in the window: a restart without "
                "persistence, a failover to an empty replica, FLUSHALL): the segments tracked before are gone, "
                "so their stuck recordings and missing uploads will not be reported.",
                "warning",
                "0m",
                {"window": "30m"},
            ),
            # Redis evicted keys (an evicting maxmemory-policy under memory pressure), or a segment
            # key vanished: data gone behind the service's back. Shared gauges: max per release.
            Alert(
                "GmeRecwatchStoreEvictingKeys",
                "max by ($BY) (delta(gme_recording_store_evicted_keys{$S}[$window])) > 0\n"
                "or\n"
                "max by ($BY) (delta(gme_recording_store_vanished_segments{$S}[$window])) > 0",
                "The shared Redis store is losing keys: tracked recordings vanish without a word.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}): its Redis evicted keys, or "
                "segment keys vanished, within the window. Segments, tallies or "
                "the epoch marker may be gone; their stuck recordings and missing uploads will not be "
                "reported. Set maxmemory-policy noeviction and give Redis memory.",
                "warning",
                "0m",
                {"window": "30m"},
            ),
            # Nearly full, or full and already forgetting live segments: one alert, the utilisation.
            Alert(
                "GmeRecwatchStoreNearCapacity",
                "instance:gme_recording_store_utilisation:ratio > $ratio\n"
                "or\n"
                "instance:gme_recording_store_utilisation:ratio\n"
                "and on ($BY, instance)\n"
                "sum by ($BY, instance) (increase(gme_recording_evictions_total{$S, "
                'reason="capacity", state!="uploaded"}[10m])) > 0',
                "The gme-recwatch store is full or nearly so.",
                "{{ $labels.instance }} holds {{ $value | humanizePercentage }} of its store "
                "capacity (GME_RECWATCH_MAX_SEGMENTS); at capacity it evicts segments it still "
                "watches, and their stuck or missing uploads go unnoticed.",
                "warning",
                "10m",
                {"ratio": 0.9},
            ),
            Alert(
                "GmeRecwatchAppLabelOverflow",
                "sum by ($BY) (increase(gme_recording_app_label_overflow_total{$S}[1h])) > 0",
                "More GME apps call gme-recwatch than it keeps apart.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) counted "
                "{{ $value | humanize }} callbacks in the last hour from apps beyond "
                'GME_RECWATCH_MAX_APPS, reported as app_id="other": their problems cannot be told '
                "apart by app.",
                "warning",
                "15m",
            ),
            # A snapshot that fails, or that is not written any more: either way a restart now loses
            # what was tracked since. One alert, by operation (a stale one reads as `write`).
            Alert(
                "GmeRecwatchSnapshotFailing",
                "sum by ($BY, instance, operation) "
                "(increase(gme_recording_snapshot_failures_total{$S}[15m])) > 0\n"
                "or\n"
                "(\n"
                "  max by ($BY, instance, operation) "
                '(gme_recording_snapshot_failures_total{$S, operation="restore"}) > 0\n'
                "  and on ($BY, instance)\n"
                "  (time() - max by ($BY, instance) (process_start_time_seconds{$S}) < 3600)\n"
                ")\n"
                "or\n"
                "label_replace((time() - max by ($BY, instance) "
                "(gme_recording_snapshot_last_success_timestamp_seconds{$S}) > $seconds)\n"
                "  and on ($BY, instance)\n"
                "  (max by ($BY, instance) (gme_recording_snapshot_last_success_timestamp_seconds{$S})"
                ' > 0), "operation", "write", "", "")',
                "gme-recwatch cannot write or restore its state snapshot.",
                "{{ $labels.instance }} has not managed the state snapshot {{ $labels.operation }} "
                "(failures, or seconds since the last write: {{ $value | humanize }}); a restart now "
                "would lose the segments tracked since.",
                "warning",
                "5m",
                {"seconds": 900},
            ),
            # Per bucket: one app's bucket failing completely fails a share of all lookups as
            # large as that app's, which a release-wide ratio never sees.
            Alert(
                "GmeRecwatchCosLookupsFailing",
                "sum by ($BY, bucket, reason) (increase(gme_recording_reconcile_errors_total{$S}"
                "[$window])) > 0\n"
                "and on ($BY, bucket)\n"
                "(\n"
                "  sum by ($BY, bucket) (increase(gme_recording_reconcile_errors_total{$S}[$window]))\n"
                "  / on ($BY) group_left ()\n"
                "  sum by ($BY) (increase(gme_recording_reconcile_checks_total{$S}[$window]))\n"
                ") > $ratio\n"
                "and on ($BY, bucket)\n"
                "sum by ($BY, bucket) (increase(gme_recording_reconcile_errors_total{$S}[$window]))"
                " >= $min_errors",
                "COS lookups in a bucket fail: its missing recordings cannot be confirmed.",
                "{{ $value | humanize }} COS lookups of job {{ $labels.job }} (namespace "
                "{{ $labels.namespace }}) in bucket {{ $labels.bucket }} failed with "
                "{{ $labels.reason }} in the window, a large share of all lookups. Stuck and "
                "missing segments of that bucket's apps are reported unconfirmed meanwhile and "
                "page nobody.",
                "warning",
                "10m",
                {"window": "30m", "ratio": 0.05, "min_errors": 3},
            ),
            Alert(
                "GmeRecwatchCosBlind",
                "sum by ($BY, bucket) "
                '(increase(gme_recording_reconcile_errors_total{$S, reason="blind"}[$window])) > 0',
                "COS answers 404 even for a file known to exist: no missing recording is confirmed.",
                "COS lookups of job {{ $labels.job }} (namespace {{ $labels.namespace }}) in bucket "
                "{{ $labels.bucket }} did not find the latest file whose upload callback was received "
                "({{ $value | humanize }} misses in the window): the endpoint does not see files that "
                "exist. Its 404s confirm nothing; stuck and missing segments are reported unconfirmed "
                "and page nobody.",
                "warning",
                "0m",
                {"window": "15m"},
            ),
            Alert(
                "GmeRecwatchBlind",
                "sum by ($BY) (increase(gme_recording_blind_seconds_total{$S}[$window])) > 0\n"
                "and on ($BY)\n"
                "(\n"
                "  sum by ($BY) (increase(gme_recording_blind_seconds_total{$S}[$window])) > $seconds\n"
                "  or\n"
                "  sum by ($BY) (increase(gme_recording_unverified_total{$S}[$window])) > $segments\n"
                ")",
                "gme-recwatch was blind: callbacks may have been sent and never recorded.",
                "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) could not have received "
                "callbacks for {{ $value | humanizeDuration }} in the window, beyond what the "
                "sender's retries cover (a store outage, a restart without its snapshot). Segments "
                "live then are marked with the window: looked up in COS at their deadline, or "
                "unverified without a bucket; never counted as lost by Tencent nor against the "
                "delivery SLO. Every other segment pages as usual.",
                "warning",
                "0m",
                {"window": "1h", "seconds": 60, "segments": 10},
            ),
        ],
    )
    return [recording, slo, availability, callbacks, lifecycle, service]


@dataclass
class Inhibit:
    source: str
    targets: tuple[str, ...]
    why: str


# Scoped: a source mutes only alerts its own incident explains, never a page by a ticket,
# and only while it fires (no keep_firing_for). The consequences that come later (segments
# whose callbacks an incident cost) are attributed per segment by the service, not muted here.
SILENCES = ("GmeRecordingCallbacksSilent", "GmeRecordingAppSilent", "GmeRecordingCallbacksAbsent")
# One page per incident and release: each rule mutes the alerts a firing cause explains, and
# `equal` keeps it within one release (staging's causes never mute production's alerts).
# Written to dashboards/alertmanager-inhibit.yaml and the chart's AlertmanagerConfig.
INHIBITS = [
    Inhibit(
        "GmeRecwatchAbsent",
        ("GmeRecwatchDown",),
        "Nothing scraped at all pages once, as GmeRecwatchAbsent; the scrape failures are implied.",
    ),
    Inhibit(
        "GmeRecwatchRestartLoop",
        ("GmeRecwatchDown",),
        "A replica crash-looping is down between restarts: one ticket, the restarts.",
    ),
    Inhibit(
        "GmeRecwatchBackendDown",
        (
            "GmeRecwatchReplicaBackendDown",
            "GmeRecwatchCanaryFailing",
            *SILENCES,
            "GmeRecwatchBlind",
        ),
        "The release cannot reach Redis: callbacks are answered 503 or not routed to us, so the "
        "canary fails, callbacks stop and the window is blind. Only while it fires.",
    ),
    Inhibit(
        "GmeRecwatchCanaryFailing",
        SILENCES,
        "The public path is broken: no callback can arrive. Only the silences; an SLO burn or "
        "a store page is another incident and still pages.",
    ),
    Inhibit(
        "GmeRecordingSignatureFailureRatio",
        (
            "GmeRecordingSignatureFailures",
            "GmeRecwatchIngestBudgetBurn",
            "GmeRecwatchIngestBudgetBurnSlow",
            "GmeRecwatchCanaryFailing",
            *SILENCES,
        ),
        "Callbacks rejected for their signature (a rotated or wrong SecretKey) are not "
        "verified: the ingest burn and the silence have this one cause.",
    ),
    Inhibit(
        "GmeRecordingCallbacksSilent",
        ("GmeRecordingCallbacksAbsent", "GmeRecordingAppSilent"),
        "The sender went quiet for the release: every app's silence and the week-on-week drop "
        "are this one incident.",
    ),
    Inhibit(
        "GmeRecwatchIngestBudgetBurn",
        ("GmeRecwatchIngestBudgetBurnSlow", "GmeRecordingCallbacksAbsent", "GmeRecordingAppSilent"),
        "The fast burn pages; the slower burn of the same failures and the verified callbacks "
        "missing for it (a clock skew rejects every callback as stale) add nothing.",
    ),
    Inhibit(
        "GmeRecordingDeliveryBudgetBurn",
        ("GmeRecordingDeliveryBudgetBurnSlow", "GmeRecordingStuck", "GmeRecordingUploadsMissing"),
        "Recordings going missing page once; the per-app tickets are the same segments.",
    ),
]


def inhibit_rules(names: set[str]) -> list[tuple[Inhibit, tuple[str, ...]]]:
    """The inhibit rules whose source is an alert in `names`, each with its targets in it (an
    alert defined elsewhere, such as GmeRecwatchStoreReset, joins once it is defined here)."""
    out = []
    for rule in INHIBITS:
        targets = tuple(dict.fromkeys(t for t in rule.targets if t in names))
        if rule.source in names and targets:
            out.append((rule, targets))
    return out


def alerts() -> list[Alert]:
    return [r for g in groups() for r in g.rules if isinstance(r, Alert)]


def defaults() -> dict[str, dict[str, Any]]:
    """Each alert's knobs and their defaults: the chart's `prometheusRule.alerts` values."""
    return {a.name: {"for": a.for_, "severity": a.severity, **a.params} for a in alerts()}


class Plain:
    """The plain rule files: every knob at its default."""

    selector = DEFAULT_SELECTOR
    runbook = RUNBOOK

    def param(self, alert: Alert, key: str) -> str:
        return str(defaults()[alert.name][key])

    def knob(self, name: str) -> str:
        return str(KNOBS[name][1])

    def annotation(self, text: str) -> str:
        return text

    def expr(self, text: str) -> str:
        return text


class Chart(Plain):
    """The chart's copy: Helm placeholders, filled in by `tpl` from the chart's values."""

    selector = '{{ include "gme-recwatch.ruleSelector" . }}'
    runbook = "{{ .Values.prometheusRule.runbookUrl }}"

    def param(self, alert: Alert, key: str) -> str:
        return f'{{{{ index .Values.prometheusRule.alerts "{alert.name}" "{key}" }}}}'

    def knob(self, name: str) -> str:
        return "{{ .Values.prometheusRule." + ".".join(KNOBS[name][0]) + " }}"

    def annotation(self, text: str) -> str:
        # Alertmanager's own templates in annotations must come out of `tpl` untouched.
        return text.replace("{{", '{{ "{{" }}')

    def expr(self, text: str) -> str:
        # `{{{` would open an action at its first brace: the selector's own brace goes first.
        return text.replace("{{{", '{{ "{" }}{{')


# Alert params that are fields of the rule, not thresholds in its expression.
RULE_FIELDS = ("keep_firing_for",)


def render_rule(rule: Alert | Record, how: Plain) -> dict[str, Any]:
    values = {"S": how.selector, "BY": BY, **{k: how.knob(k) for k in KNOBS}}
    if isinstance(rule, Record):
        out: dict[str, Any] = {"record": rule.record, "expr": how.expr(_sub(rule.expr, values))}
        if rule.labels:
            out["labels"] = dict(rule.labels)
        return out
    values.update({k: how.param(rule, k) for k in rule.params})
    expr = rule.expr
    out = {"alert": rule.name, "expr": how.expr(_sub(expr, values)), "for": how.param(rule, "for")}
    for key in RULE_FIELDS:
        if key in rule.params:
            out[key] = how.param(rule, key)
    out["labels"] = {"severity": how.param(rule, "severity")}
    out["annotations"] = {
        "summary": rule.summary,
        "description": how.annotation(rule.description),
        "runbook_url": f"{how.runbook}#{rule.name.lower()}",
    }
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADERS = {
    "gme-recwatch-recording-rules.yaml": (
        "# Recording rules for gme-recwatch, written by dashboards/rules.py (edit there). Names follow\n"
        "# level:metric:operations; the alerts read these series, so load every file together.\n"
        "# Unit tests: dashboards/tests/recording-rules.test.yaml.\n"
    ),
    "gme-recwatch-slo-rules.yaml": (
        "# The SLIs of gme-recwatch's two SLOs (ingest, recording delivery), written by\n"
        "# dashboards/rules.py (edit there): events, errors and their ratio per release at each\n"
        "# window the budget-burn alerts read (labels `slo` and `window`, the window's role:\n"
        "# page_long, page_short, ticket_long, ticket_short; docs/alerting.md), and each SLO's\n"
        "# objective. Load with the other two files.\n"
    ),
    "gme-recwatch-alerts.yaml": (
        "# Alerting rules for gme-recwatch, written by dashboards/rules.py (edit there). Needs the\n"
        "# recording rules. Severity: `critical` pages, `warning` opens a ticket. Every alert has a\n"
        "# section in docs/runbook.md and promtool unit tests in dashboards/tests/alerts.test.yaml.\n"
        "# Every rule aggregates by cluster, namespace and job, so releases never merge. Outside the\n"
        '# Helm chart the rules select job=~".*gme-recwatch.*"; change it if your job is named\n'
        "# otherwise. The chart renders them with its own selector and knobs.\n"
    ),
}
FILES = {
    "gme-recwatch-recording-rules.yaml": ("gme-recwatch.rules",),
    # Their own file: a promtool test of other alerts can leave these long windows out.
    "gme-recwatch-slo-rules.yaml": ("gme-recwatch.slo",),
}
INHIBIT_FILE = HERE / "alertmanager-inhibit.yaml"
CHART_INHIBIT_FILE = ROOT / "helm" / "gme-recwatch" / "files" / "alertmanager" / "inhibit-rules.yaml"
EQUAL = ["cluster", "namespace", "job"]


def promtool_file(evaluation_interval: str) -> dict[str, Any]:
    """The head of a promtool test file under dashboards/tests that sees every rule file, the
    groups evaluated in their order (the scenarios and the SLO tests are written so)."""
    return {
        "rule_files": [f"../rules/{name}" for name in (*FILES, "gme-recwatch-alerts.yaml")],
        "evaluation_interval": evaluation_interval,
        "group_eval_order": [g.name for g in groups()],
    }


def render(how: Plain) -> dict[str, str]:
    gs = groups()
    recorded = {name for names in FILES.values() for name in names}
    files = {file: [g for g in gs if g.name in names] for file, names in FILES.items()}
    files["gme-recwatch-alerts.yaml"] = [g for g in gs if g.name not in recorded]
    out = {}
    for name, chosen in files.items():
        doc = {"groups": [{"name": g.name, "rules": [render_rule(r, how) for r in g.rules]} for g in chosen]}
        out[name] = HEADERS[name] + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    return out


def render_inhibit_plain() -> str:
    """dashboards/alertmanager-inhibit.yaml: for alertmanager.yml's `inhibit_rules:`."""
    lines = [
        "# Alertmanager inhibit rules for the gme-recwatch alerts, written by dashboards/rules.py",
        "# (edit there). Copy the list under `inhibit_rules:` into your alertmanager.yml, or let",
        "# the chart install them (alertmanagerConfig.enabled). See docs/alerting.md. Each rule",
        "# mutes the alerts a firing cause explains, within one release: `equal` names cluster,",
        "# namespace and job, so staging's alerts never mute production's.",
        "inhibit_rules:",
    ]
    for rule, targets in inhibit_rules({a.name for a in alerts()}):
        lines += textwrap.wrap(rule.why, 98, initial_indent="  # ", subsequent_indent="  # ")
        target = targets[0] if len(targets) == 1 else "|".join(targets)
        op = "=" if len(targets) == 1 else "=~"
        lines += [
            "  - source_matchers:",
            f'      - alertname="{rule.source}"',
            "    target_matchers:",
            f'      - alertname{op}"{target}"',
            f"    equal: [{', '.join(EQUAL)}]",
        ]
    return "\n".join(lines) + "\n"


def render_inhibit_chart() -> str:
    """The same rules as an AlertmanagerConfig's spec.inhibitRules (prometheus-operator)."""
    doc = []
    for rule, targets in inhibit_rules({a.name for a in alerts()}):
        many = len(targets) > 1
        doc.append(
            {
                "sourceMatch": [{"name": "alertname", "value": rule.source, "matchType": "="}],
                "targetMatch": [
                    {"name": "alertname", "value": "|".join(targets), "matchType": "=~" if many else "="}
                ],
                "equal": list(EQUAL),
            }
        )
    return (
        "# Written by dashboards/rules.py from the same definition as "
        "dashboards/alertmanager-inhibit.yaml.\n"
        + yaml.dump({"inhibitRules": doc}, Dumper=_Dumper, sort_keys=False, width=1000)
    )


def written() -> dict[Path, str]:
    """Every file this script writes, and its content."""
    out: dict[Path, str] = {}
    for directory, how in ((PLAIN_DIR, Plain()), (CHART_DIR, Chart())):
        for name, text in render(how).items():
            out[directory / name] = text
    out[INHIBIT_FILE] = render_inhibit_plain()
    out[CHART_INHIBIT_FILE] = render_inhibit_chart()
    return out


def main() -> int:
    for path, text in written().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
