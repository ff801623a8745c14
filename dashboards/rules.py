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
# The service's own upload grace (GME_RECWATCH_UPLOAD_GRACE_SECONDS, 15 min by default): the
# missing uploads counted now are of segments completed one grace ago.
UPLOAD_GRACE = "15m"


@dataclass
class Alert:
    name: str
    expr: str  # `$S` is the selector, `$BY` the release labels, `$<param>` a threshold
    summary: str
    description: str
    severity: str
    for_: str
    params: dict[str, float | int | str] = field(default_factory=dict)


@dataclass
class Group:
    name: str
    rules: list[Alert | tuple[str, str]]  # an alert, or (record, expr)


def _sub(text: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", one, text)


def groups() -> list[Group]:
    recording = Group("gme-recwatch.rules", [
        # Verified callbacks per second, by event type and what the tracker made of them.
        ("job:gme_recording_callbacks:rate5m",
         "sum by ($BY, event_type, result) (rate(gme_recording_callbacks_total{$S}[5m]))"),
        # Rejected signatures per second, by reason (missing, mismatch, unknown_app).
        ("job:gme_recording_signature_failures:rate5m",
         "sum by ($BY, reason) (rate(gme_recording_signature_failures_total{$S}[5m]))"),
        # Callbacks that carried a Signature: verified ones plus those whose signature failed.
        # Requests with no Signature at all (scanners, probes) are left out.
        ("job:gme_recording_signed_callbacks:rate5m",
         'sum by ($BY) (rate(gme_recording_signature_failures_total{$S, reason!="missing"}[5m]))\n'
         "+ sum by ($BY) (rate(gme_recording_callbacks_total{$S}[5m]))"),
        # Share of signed callbacks whose signature failed: 1 when the SecretKey is wrong.
        ("job:gme_recording_signature_mismatches:ratio_rate5m",
         'sum by ($BY) (rate(gme_recording_signature_failures_total{$S, reason!="missing"}[5m]))\n'
         "/ (job:gme_recording_signed_callbacks:rate5m > 0)"),
        # Segments completed, and completed segments whose upload never came, per app, an hour.
        ("job_app_id:gme_recording_segments_completed:increase1h",
         "sum by ($BY, app_id) (increase(gme_recording_segments_completed_total{$S}[1h]))"),
        ("job_app_id:gme_recording_missing_uploads:increase1h",
         "sum by ($BY, app_id) (increase(gme_recording_missing_uploads_total{$S}[1h]))"),
        # The uploads missing in the last hour are of segments completed one upload grace
        # earlier, so the completions are read that much earlier: both sides count the same
        # segments, and the ratio stays within 0..1.
        ("job_app_id:gme_recording_missing_uploads:ratio_increase1h",
         "job_app_id:gme_recording_missing_uploads:increase1h\n"
         f"/ (job_app_id:gme_recording_segments_completed:increase1h offset {UPLOAD_GRACE} > 0)"),
        # Share of the tracker's capacity in use, per instance.
        ("instance:gme_recording_tracker_utilisation:ratio",
         "sum by ($BY, instance) (gme_recording_tracked_segments{$S})\n"
         "/ on ($BY, instance) (max by ($BY, instance) (gme_recording_store_capacity{$S}) > 0)"),
        # Segments tracked by the release: one instance's count (replicas on one Redis all report
        # the shared total, so max, not sum).
        ("job:gme_recording_tracked_segments:max",
         "max by ($BY) (sum by ($BY, instance) (gme_recording_tracked_segments{$S}))"),
    ])
    availability = Group("gme-recwatch.availability", [
        # Nothing at all, or one release gone while others are up (it had targets within the
        # hour): staging being up must not hide production being absent.
        Alert("GmeRecwatchAbsent",
              "absent(up{$S} == 1)\n"
              "or\n"
              "count by ($BY) (max_over_time(up{$S}[1h]))\n"
              "unless\n"
              "count by ($BY) (up{$S} == 1)",
              "No gme-recwatch instance is up.",
              "Prometheus has scraped no healthy gme-recwatch target {{ with $labels.namespace }}in "
              "namespace {{ . }} {{ end }}for the alert's duration: GME recording callbacks are "
              "neither verified nor tracked. Outside the Helm chart, the selector in this rule "
              "must match your scrape job.", "critical", "5m"),
        Alert("GmeRecwatchDown", "up{$S} == 0",
              "A gme-recwatch instance cannot be scraped.",
              "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}, namespace "
              "{{ $labels.namespace }}).", "warning", "5m"),
        Alert("GmeRecwatchRestartLoop",
              "changes(process_start_time_seconds{$S}[1h]) >= $restarts",
              "gme-recwatch keeps restarting.",
              "{{ $labels.instance }} (job {{ $labels.job }}, namespace {{ $labels.namespace }}) "
              "restarted {{ $value }} times in the last hour; each restart is a window in which "
              "callbacks are refused.", "warning", "5m", {"restarts": 3}),
    ])
    callbacks = Group("gme-recwatch.callbacks", [
        Alert("GmeRecwatchCanaryFailing",
              "(time() - max by ($BY) (gme_recording_canary_last_success_timestamp_seconds{$S})"
              " > $seconds)\n"
              "and on ($BY)\n"
              "max by ($BY) (gme_recording_canary_interval_seconds{$S}) > 0",
              "The canary callback has not come through the public callback path.",
              "No canary callback (gme-recwatch canary) has been verified by job {{ $labels.job }} "
              "(namespace {{ $labels.namespace }}) for {{ $value | humanizeDuration }}: Tencent's "
              "callbacks cannot reach the service either (DNS, Ingress, TLS, NetworkPolicy, the "
              "listener or the key).", "critical", "2m", {"seconds": 150}),
        Alert("GmeRecordingCallbacksAbsent",
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
              "the service; GmeRecwatchCanaryFailing tells the two apart.",
              "critical", "10m", {"window": "10m", "ratio": 0.2, "min_last_week": 30}),
        Alert("GmeRecordingSignatureFailures",
              'sum by ($BY) (job:gme_recording_signature_failures:rate5m{reason!="missing"}) * 60'
              " > $per_minute",
              "GME callbacks are being rejected for a wrong signature.",
              "{{ $value | humanize }} signed callbacks per minute to job {{ $labels.job }} "
              "(namespace {{ $labels.namespace }}) fail verification (reason mismatch or "
              "unknown_app): a SecretKey or BizID missing from the keyring, or a key rotated in "
              "one place only. Unsigned requests (scanners) are not counted here.",
              "warning", "15m", {"per_minute": 1}),
        Alert("GmeRecordingSignatureFailureRatio",
              "job:gme_recording_signature_mismatches:ratio_rate5m > $ratio\n"
              "and on ($BY)\n"
              "job:gme_recording_signed_callbacks:rate5m * 300 >= $min_signed",
              "Most signed GME callbacks fail signature verification.",
              "{{ $value | humanizePercentage }} of the signed callbacks to job {{ $labels.job }} "
              "(namespace {{ $labels.namespace }}) fail verification, so their events are dropped. "
              "A SecretKey rotated in the GME console but not in gme-recwatch looks exactly like "
              "this.", "critical", "5m", {"ratio": 0.25, "min_signed": 10}),
        Alert("GmeRecordingCallbacksStale",
              'sum by ($BY) (increase(gme_recording_callbacks_invalid_total{$S, reason="stale"}'
              "[15m])) >= $count",
              "GME callbacks are rejected as stale: a clock is off.",
              "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) rejected "
              "{{ $value | humanize }} callbacks in 15 minutes because their Timestamp is outside "
              "the replay window: this node's clock or Tencent's delivery is that far off. Tencent "
              "does not resend a rejected callback.", "warning", "5m", {"count": 3}),
        Alert("GmeRecwatchCallbackErrors",
              'sum by ($BY) (rate(gme_recording_http_requests_total{$S, listener="callback", '
              'code=~"5.."}[5m]))\n'
              '/ sum by ($BY) (rate(gme_recording_http_requests_total{$S, listener="callback"}[5m]))'
              " > $ratio\n"
              "and on ($BY)\n"
              'sum by ($BY) (increase(gme_recording_http_requests_total{$S, listener="callback", '
              'code=~"5.."}[5m])) >= $min_errors',
              "gme-recwatch answers GME callbacks with server errors.",
              "{{ $value | humanizePercentage }} of the callbacks to job {{ $labels.job }} "
              "(namespace {{ $labels.namespace }}) are answered 5xx. Tencent retries each for "
              "about a minute, then drops it.", "critical", "5m",
              {"ratio": 0.05, "min_errors": 5}),
        Alert("GmeRecwatchCallbackSlow",
              "histogram_quantile(0.99, sum by ($BY, le) (rate("
              'gme_recording_http_request_duration_seconds_bucket{$S, listener="callback"}[5m])))'
              " > $seconds\n"
              "and on ($BY)\n"
              'sum by ($BY) (rate(gme_recording_http_request_duration_seconds_count{$S, '
              'listener="callback"}[5m])) * 300 >= $min_requests',
              "gme-recwatch answers GME callbacks close to Tencent's timeout.",
              "The 99th percentile answer time of the callback listener of job {{ $labels.job }} "
              "(namespace {{ $labels.namespace }}) is {{ $value | humanizeDuration }}; Tencent "
              "gives up on a callback after about 5 s and retries it.",
              "warning", "10m", {"seconds": 2.5, "min_requests": 10}),
    ])
    lifecycle = Group("gme-recwatch.lifecycle", [
        Alert("GmeRecordingStuck",
              "sum by ($BY, app_id) (increase(gme_recording_stuck_total{$S}[$window])) > $count",
              "GME recordings became stuck: recording for longer than the maximum duration.",
              "{{ $value | humanize }} segments of app {{ $labels.app_id }} (job {{ $labels.job }}, "
              "namespace {{ $labels.namespace }}) became stuck in the window: started longer ago "
              "than the maximum recording duration and never completed. The alert resolves when "
              "no new one comes; the dashboard keeps the standing count.",
              "warning", "0m", {"window": "30m", "count": 0}),
        Alert("GmeRecordingUploadsMissing",
              "sum by ($BY, app_id) (increase(gme_recording_missing_uploads_total{$S}[$window]))"
              " > $count",
              "Completed GME recordings have no upload.",
              "{{ $value | humanize }} completed segments of app {{ $labels.app_id }} (job "
              "{{ $labels.job }}, namespace {{ $labels.namespace }}) passed the upload grace with no "
              "upload callback in the window. The alert resolves when no new one comes; the "
              "dashboard keeps the standing count.", "warning", "0m", {"window": "30m", "count": 0}),
        Alert("GmeRecordingUploadsMissingRatio",
              "job_app_id:gme_recording_missing_uploads:ratio_increase1h > $ratio\n"
              "and on ($BY, app_id)\n"
              f"job_app_id:gme_recording_segments_completed:increase1h offset {UPLOAD_GRACE}"
              " >= $min_completed",
              "A large share of completed GME recordings is never uploaded.",
              "{{ $value | humanizePercentage }} of the segments of app {{ $labels.app_id }} (job "
              "{{ $labels.job }}, namespace {{ $labels.namespace }}) completed in the hour up to one "
              "upload grace ago have no upload callback.", "critical", "15m",
              {"ratio": 0.05, "min_completed": 20}),
        Alert("GmeRecordingOrphansSpike",
              "sum by ($BY) (increase(gme_recording_orphan_events_total{$S}[1h]))\n"
              "/ (sum by ($BY) (increase(gme_recording_callbacks_total{$S, "
              'event_type=~"completed|uploaded"}[1h])) > 0) > $ratio\n'
              "and on ($BY)\n"
              "sum by ($BY) (increase(gme_recording_orphan_events_total{$S}[1h])) >= $min_orphans",
              "Many GME recordings arrive without their start callback.",
              "{{ $value | humanizePercentage }} of the completed/uploaded callbacks to job "
              "{{ $labels.job }} (namespace {{ $labels.namespace }}) in the last hour belong to "
              "segments whose start never arrived: Tencent is losing start callbacks, or the "
              "service was blind when they were sent.", "warning", "15m",
              {"ratio": 0.05, "min_orphans": 10}),
        # Of the files that reached COS (an upload callback arrived, or the file was found in
        # COS after a deadline), the share whose callbacks the sender lost. Needs a COS bucket;
        # without one both counts of found files stay at 0 and this never fires.
        Alert("GmeRecordingCallbacksLost",
              "sum by ($BY) (increase(gme_recording_segments_reconciled_total{$S}[1h]))\n"
              "/ (sum by ($BY) (increase(gme_recording_segments_reconciled_total{$S}[1h]))\n"
              "  + sum by ($BY) (increase(gme_recording_callbacks_total{$S, event_type=\"uploaded\", "
              'result=~"accepted|out_of_order|late"}[1h])) > 0) > $ratio\n'
              "and on ($BY)\n"
              "sum by ($BY) (increase(gme_recording_segments_reconciled_total{$S}[1h]))\n"
              "+ sum by ($BY) (increase(gme_recording_callbacks_total{$S, event_type=\"uploaded\", "
              'result=~"accepted|out_of_order|late"}[1h])) >= $min_lifecycles',
              "Tencent is losing GME recording callbacks: files are in COS but were never "
              "reported.",
              "{{ $value | humanizePercentage }} of the recorded files of job {{ $labels.job }} "
              "(namespace {{ $labels.namespace }}) that reached COS in the last hour were found "
              "there by a lookup after a deadline: their completed and/or uploaded callbacks never "
              "arrived. No recording is lost; alerts about them were avoided, but anything fed by "
              "the callbacks (your own pipeline) missed these files.", "warning", "15m",
              {"ratio": 0.02, "min_lifecycles": 50}),
    ])
    service = Group("gme-recwatch.service", [
        Alert("GmeRecwatchBackendDown", "min by ($BY, instance) (gme_recording_backend_up{$S}) == 0",
              "gme-recwatch cannot reach its state store, and callbacks are refused.",
              "{{ $labels.instance }} (job {{ $labels.job }}, namespace {{ $labels.namespace }}) "
              "cannot reach its Redis: callbacks are answered 503 and Tencent retries each for "
              "about a minute only, so recordings are going untracked.", "critical", "1m"),
        Alert("GmeRecwatchKeyringFailing",
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
              "so a key added or rotated since is not.", "warning", "5m"),
        Alert("GmeRecwatchStateLost",
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
              "not on a volume, or not readable.", "warning", "0m",
              {"ratio": 0.5, "min_segments": 10}),
        # Redis came back empty (its epoch marker gone): one replica counts each reset, and
        # the sum over the release's replicas makes it one alert however many saw it.
        Alert("GmeRecwatchStoreReset",
              "sum by ($BY) (increase(gme_recording_store_resets_total{$S}[$window])) > 0",
              "The shared Redis store came back empty: the tracked recordings were lost.",
              "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) found its Redis store "
              "empty ({{ $value | humanize }} resets in the window: a restart without "
              "persistence, a failover to an empty replica, FLUSHALL): the segments tracked before are gone, "
              "so their stuck recordings and missing uploads will not be reported.",
              "warning", "0m", {"window": "30m"}),
        Alert("GmeRecwatchTrackerNearCapacity",
              "instance:gme_recording_tracker_utilisation:ratio > $ratio",
              "The gme-recwatch tracker is nearly full.",
              "{{ $labels.instance }} holds {{ $value | humanizePercentage }} of its tracker "
              "capacity (GME_RECWATCH_MAX_SEGMENTS); past it, segments are evicted.",
              "warning", "15m", {"ratio": 0.9}),
        Alert("GmeRecwatchEvictingLiveSegments",
              "sum by ($BY, instance) (increase(gme_recording_evictions_total{$S, "
              'reason="capacity", state!="uploaded"}[10m])) > 0',
              "The gme-recwatch tracker is full and forgets segments it still watches.",
              "{{ $labels.instance }} evicted {{ $value | humanize }} segments that were not yet "
              "uploaded in the last 10 minutes because the tracker is at capacity; their stuck "
              "or missing uploads will go unnoticed.", "warning", "5m"),
        Alert("GmeRecwatchAppLabelOverflow",
              "sum by ($BY) (increase(gme_recording_app_label_overflow_total{$S}[1h])) > 0",
              "More GME apps call gme-recwatch than it keeps apart.",
              "Job {{ $labels.job }} (namespace {{ $labels.namespace }}) counted "
              "{{ $value | humanize }} callbacks in the last hour from apps beyond "
              'GME_RECWATCH_MAX_APPS, reported as app_id="other": their problems cannot be told '
              "apart by app.", "warning", "15m"),
        Alert("GmeRecwatchSnapshotFailing",
              "sum by ($BY, instance, operation) "
              "(increase(gme_recording_snapshot_failures_total{$S}[15m])) > 0\n"
              "or\n"
              "(\n"
              "  max by ($BY, instance, operation) "
              '(gme_recording_snapshot_failures_total{$S, operation="restore"}) > 0\n'
              "  and on ($BY, instance)\n"
              "  (time() - max by ($BY, instance) (process_start_time_seconds{$S}) < 3600)\n"
              ")",
              "gme-recwatch cannot write or restore its state snapshot.",
              "{{ $labels.instance }} failed the state snapshot {{ $labels.operation }} "
              "({{ $value | humanize }} failures); a restart would lose the tracked segments.",
              "warning", "5m"),
        Alert("GmeRecwatchSnapshotStale",
              "(time() - max by ($BY, instance) "
              "(gme_recording_snapshot_last_success_timestamp_seconds{$S}) > $seconds)\n"
              "and on ($BY, instance)\n"
              "(max by ($BY, instance) (gme_recording_snapshot_last_success_timestamp_seconds{$S})"
              " > 0)",
              "The gme-recwatch state snapshot is out of date.",
              "The last state snapshot of {{ $labels.instance }} was written "
              "{{ $value | humanizeDuration }} ago; a restart now would lose what was tracked "
              "since.", "warning", "5m", {"seconds": 900}),
    ])
    return [recording, availability, callbacks, lifecycle, service]


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

    def annotation(self, text: str) -> str:
        # Alertmanager's own templates in annotations must come out of `tpl` untouched.
        return text.replace("{{", '{{ "{{" }}')

    def expr(self, text: str) -> str:
        # `{{{` would open an action at its first brace: the selector's own brace goes first.
        return text.replace("{{{", '{{ "{" }}{{')


def render_rule(rule: Alert | tuple[str, str], how: Plain) -> dict[str, Any]:
    values = {"S": how.selector, "BY": BY}
    if isinstance(rule, tuple):
        record, expr = rule
        return {"record": record, "expr": how.expr(_sub(expr, values))}
    values.update({k: how.param(rule, k) for k in rule.params})
    return {
        "alert": rule.name,
        "expr": how.expr(_sub(rule.expr, values)),
        "for": how.param(rule, "for"),
        "labels": {"severity": how.param(rule, "severity")},
        "annotations": {
            "summary": rule.summary,
            "description": how.annotation(rule.description),
            "runbook_url": f"{how.runbook}#{rule.name.lower()}",
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADERS = {
    "gme-recwatch-recording-rules.yaml":
        "# Recording rules for gme-recwatch, written by dashboards/rules.py (edit there). Names follow\n"
        "# level:metric:operations; the alerts read these series, so load both files together.\n"
        "# Unit tests: dashboards/tests/recording-rules.test.yaml.\n",
    "gme-recwatch-alerts.yaml":
        "# Alerting rules for gme-recwatch, written by dashboards/rules.py (edit there). Needs the\n"
        "# recording rules. Severity: `critical` pages, `warning` opens a ticket. Every alert has a\n"
        "# section in docs/runbook.md and promtool unit tests in dashboards/tests/alerts.test.yaml.\n"
        "# Every rule aggregates by cluster, namespace and job, so releases never merge. Outside the\n"
        '# Helm chart the rules select job=~".*gme-recwatch.*"; change it if your job is named\n'
        "# otherwise. The chart renders them with its own selector and knobs.\n",
}


def render(how: Plain) -> dict[str, str]:
    gs = groups()
    files = {
        "gme-recwatch-recording-rules.yaml": [g for g in gs if g.name == "gme-recwatch.rules"],
        "gme-recwatch-alerts.yaml": [g for g in gs if g.name != "gme-recwatch.rules"],
    }
    out = {}
    for name, chosen in files.items():
        doc = {"groups": [{"name": g.name, "rules": [render_rule(r, how) for r in g.rules]}
                          for g in chosen]}
        out[name] = HEADERS[name] + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    return out


def main() -> int:
    for directory, how in ((PLAIN_DIR, Plain()), (CHART_DIR, Chart())):
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in render(how).items():
            (directory / name).write_text(text, encoding="utf-8")
            print(f"wrote {(directory / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
