"""Writes the Grafana dashboards in this folder: `python dashboards/generate.py`.

The JSON files are what Grafana and the Helm chart load; this script is how they are written, so
every panel gets the same datasource, filters and layout. Edit here, regenerate, commit both:
tests/test_dashboards.py fails when a JSON file differs from what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rules  # noqa: E402  (beside this script: the SLIs are defined once, for rules and panels)

DS = {"type": "prometheus", "uid": "${prometheus_datasource}"}
LOKI = {"type": "loki", "uid": "${loki_datasource}"}
RUNBOOK = "https://github.com/gme-recwatch/gme-recwatch/blob/main/docs/runbook.md"

# Selectors every query carries: the release (cluster, namespace, job) and the instance; APP adds
# the app filter for metrics that have an app_id label.
SEL = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job", instance=~"$instance"'
APP = SEL + ', app_id=~"$app_id"'
# State gauges describe the shared state: every replica on one Redis exports the same value,
# so replicas are collapsed with max before anything is summed (one replica: the value itself).
SHARED = "max without (instance, pod)"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping into new rows."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": True,
        "instant": False,
    }
    t.update(extra)
    return t


def _targets(queries: list[tuple[str, str]] | str) -> list[dict[str, Any]]:
    if isinstance(queries, str):
        queries = [(queries, "")]
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _thresholds(red: float | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red is not None:
        steps.append({"color": "red", "value": red})
    return {"mode": "absolute", "steps": steps}


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]] | str,
    *,
    stack: bool = False,
    minimum: float | None = 0,
    links: list[dict[str, Any]] | None = None,
    exemplars: bool = False,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
    }
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
        custom["fillOpacity"] = 40
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        defaults["min"] = minimum
    if links:
        defaults["links"] = links
    targets = _targets(queries)
    if exemplars:
        for t in targets:
            t["exemplar"] = True
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def stat(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    red: float | None = None,
    kind: str = "stat",
    decimals: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": _thresholds(red), "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    options: dict[str, Any] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    if kind == "stat":
        options.update({"colorMode": "value", "graphMode": "area", "textMode": "auto"})
    if kind == "gauge":
        defaults.update({"min": 0, "max": 1})
        options.update({"showThresholdLabels": False, "showThresholdMarkers": True})
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [target(expr, "", "A", instant=True, range=False)],
    }


def bargauge(
    title: str, description: str, unit: str, queries: list[tuple[str, str]], calc: str
) -> dict[str, Any]:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "thresholds": _thresholds(None),
                "color": {"mode": "palette-classic"},
            },
            "overrides": [],
        },
        "options": {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
            "reduceOptions": {"calcs": [calc], "fields": "", "values": False},
        },
        "targets": _targets(queries),
    }


def heatmap(title: str, description: str, unit: str, expr: str) -> dict[str, Any]:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}},
            },
            "overrides": [],
        },
        "options": {
            "calculate": False,
            "yAxis": {"unit": unit, "axisPlacement": "left"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"show": True, "yHistogram": True},
            "legend": {"show": True},
        },
        "targets": [target(expr, "{{le}}", "A", format="heatmap")],
    }


def table(
    title: str, description: str, unit: str, queries: list[tuple[str, str]], rename: dict[str, str]
) -> dict[str, Any]:
    targets = [
        target(expr, legend, chr(ord("A") + i), instant=True, range=False, format="table")
        for i, (expr, legend) in enumerate(queries)
    ]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"align": "auto"}}, "overrides": []},
        "options": {"showHeader": True, "sortBy": [{"displayName": next(iter(rename.values())), "desc": True}]},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": rename}},
        ],
        "targets": targets,
    }


def quantiles(metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def variable(name: str, label: str, query: str, *, all_value: str = ".+") -> dict[str, Any]:
    """A multi-select label variable, refreshed when the time range changes. `.+` as "All" for
    job and instance (every series has them); `.*` for cluster and namespace, which a
    Prometheus outside Kubernetes, or with one cluster, does not set."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": all_value,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "regex": "",
        "options": [],
    }


def datasource_variable(kind: str, label: str) -> dict[str, Any]:
    return {
        "name": f"{kind}_datasource",
        "label": label,
        "type": "datasource",
        "query": kind,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
        "includeAll": False,
        "multi": False,
    }


def segments_link(state: str) -> list[dict[str, Any]]:
    """Data links from a problem count to the segments behind it: the drill-down API (through
    `api_url`, e.g. a `kubectl port-forward` of the admin Service) and the log lines in Loki."""
    event = f"segment_{state}"
    logs = '{namespace=~"${namespace}"} | json | event="' + event + '" | biz_id="${__field.labels.app_id}"'
    explore = (
        '/explore?left={"datasource":"${loki_datasource}","queries":[{"refId":"A",'
        '"expr":"' + logs + '"}],"range":{"from":"${__from}","to":"${__to}"}}'
    )
    return [
        {
            "title": f"Segments {state} in app ${{__field.labels.app_id}} (API)",
            "targetBlank": True,
            "url": f"${{api_url}}/api/v1/segments?state={state}&app_id=${{__field.labels.app_id}}",
        },
        {"title": f"{event} log lines (Loki)", "targetBlank": True, "url": explore},
    ]


def dashboard(
    uid: str, title: str, description: str, tags: list[str], panels: list[dict[str, Any]], *, with_app: bool
) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        datasource_variable("prometheus", "Prometheus data source"),
        datasource_variable("loki", "Loki data source"),
        variable("cluster", "Cluster", "label_values(gme_recording_build_info, cluster)", all_value=".*"),
        variable(
            "namespace",
            "Namespace",
            'label_values(gme_recording_build_info{cluster=~"$cluster"}, namespace)',
            all_value=".*",
        ),
        variable(
            "job",
            "Job",
            'label_values(gme_recording_build_info{cluster=~"$cluster", namespace=~"$namespace"}, job)',
        ),
        variable(
            "instance",
            "Instance",
            'label_values(gme_recording_build_info{cluster=~"$cluster", '
            'namespace=~"$namespace", job=~"$job"}, instance)',
        ),
    ]
    if with_app:
        variables.append(
            variable("app_id", "App (BizID)", f"label_values(gme_recording_active_recordings{{{SEL}}}, app_id)")
        )
        variables.append(
            {
                "name": "api_url",
                "label": "Segments API",
                "type": "textbox",
                "description": "Base URL of the admin listener for the data links, e.g. after "
                "kubectl port-forward svc/<release>-gme-recwatch-admin 8081",
                "query": "http://127.0.0.1:8081",
                "current": {"text": "http://127.0.0.1:8081", "value": "http://127.0.0.1:8081"},
                "hide": 0,
                "options": [],
            }
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [{"title": "Runbook", "type": "link", "icon": "doc", "targetBlank": True, "url": RUNBOOK}],
        "templating": {"list": variables},
        "panels": panels,
    }


def _sli(slo: str, window: str) -> tuple[str, str]:
    if slo == "ingest":
        return rules.ingest_sli(window, str(rules.KNOBS["ingest_slow_le"][1]), SEL, "sum")
    return rules.delivery_sli(window, SEL, APP, "sum")


def slo_row(lay: Layout) -> None:
    """Budget left over the budget period, and the burn rate over the page and ticket windows,
    of both SLOs: read from the counters with the SLIs of rules.py, against the objective the
    rules record (`instance:gme_recording_slo_objective:ratio`, the chart's value)."""
    lay.row("SLOs")
    what = {
        "ingest": "signed callbacks answered 2xx within the slow threshold (unsigned requests left out)",
        "delivery": "segments that reached uploaded, against those stuck or missing their "
        "upload (confirmed by COS, or with no bucket to look in)",
    }
    for slo, title in (("ingest", "Ingest"), ("delivery", "Delivery")):
        objective = f'max(instance:gme_recording_slo_objective:ratio{{{SEL}, slo="{slo}"}})'
        events, errors = _sli(slo, rules.BUDGET_PERIOD)
        lay.add(
            stat(
                f"{title} error budget left",
                f"The {slo} SLO ({what[slo]}): the share of "
                f"its error budget left over the last {rules.BUDGET_PERIOD}. Below 0 the "
                f"objective is missed.",
                "percentunit",
                f"1 - ({errors}) / (({events}) > 0) / (1 - {objective})",
                red=0,
                decimals=1,
            ),
            4,
            6,
        )
        burns = []
        for role in ("page_long", "ticket_long"):
            window = str(rules.KNOBS[role][1])
            events, errors = _sli(slo, window)
            burns.append((f"({errors}) / (({events}) > 0) / (1 - {objective})", f"over {window}"))
        page = rules.defaults()[f"Gme{'Recwatch' if slo == 'ingest' else 'Recording'}{title}BudgetBurn"][
            "factor"
        ]
        lay.add(
            timeseries(
                f"{title} burn rate",
                f"How many times faster than the objective allows "
                f"the {slo} SLO spends its error budget (1 = the whole budget in "
                f"{rules.BUDGET_PERIOD}). Paged above {page} over both the long and the "
                "short page windows; ticketed above the slow factor over the ticket "
                "windows (docs/alerting.md).",
                "short",
                burns,
            ),
            8,
            6,
        )


def overview() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "Active recordings",
            "Segments recording now (started, not completed), stuck ones included.",
            "short",
            f"sum({SHARED} (gme_recording_active_recordings{{{APP}}}))",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Active rooms",
            "Rooms with at least one segment recording.",
            "short",
            f"sum({SHARED} (gme_recording_active_rooms{{{APP}}}))",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Stuck recordings",
            "Segments recording for longer than the maximum recording duration (GmeRecordingStuck).",
            "short",
            f"sum({SHARED} (gme_recording_stuck_recordings{{{APP}}}))",
            red=1,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Missing uploads",
            "Completed segments with no upload callback within the upload grace (GmeRecordingUploadsMissing).",
            "short",
            f"sum({SHARED} (gme_recording_uploads_missing{{{APP}}}))",
            red=1,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Since last verified callback",
            "Time since the most recent verified callback on "
            "any selected instance (GmeRecordingCallbacksAbsent compares with last week).",
            "s",
            f"time() - max(gme_recording_last_callback_timestamp_seconds{{{SEL}}} > 0)",
            red=1800,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Since last canary",
            "Time since a canary callback (gme-recwatch canary, the "
            "chart's CronJob) last came through the public path; empty when no canary runs "
            "(GmeRecwatchCanaryFailing past 150 s).",
            "s",
            f"time() - max(gme_recording_canary_last_success_timestamp_seconds{{{SEL}}} > 0)",
            red=150,
        ),
        4,
        4,
    )
    signed_failures = (
        f'sum(rate(gme_recording_signature_failures_total{{{SEL}, reason!="missing"}}[$__rate_interval]))'
    )
    lay.add(
        stat(
            "Signature failure ratio",
            "Share of signed callbacks rejected for their signature "
            "(unsigned scanner requests left out). Near 100% means the SecretKey is wrong or "
            "was rotated (GmeRecordingSignatureFailureRatio).",
            "percentunit",
            f"{signed_failures} / ({signed_failures} + "
            f"sum(rate(gme_recording_callbacks_total{{{SEL}}}[$__rate_interval])))",
            red=0.25,
            decimals=1,
        ),
        4,
        4,
    )

    slo_row(lay)

    lay.row("Callbacks")
    lay.add(
        timeseries(
            "Callbacks by event type and result",
            "Verified callbacks per second, by "
            "event type and what the store made of them (accepted, duplicate, "
            "out_of_order, late, ignored).",
            "reqps",
            [
                (
                    f"sum by (event_type, result) (rate(gme_recording_callbacks_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "{{event_type}} {{result}}",
                )
            ],
            stack=True,
        ),
        12,
        8,
    )
    funnel = [
        (
            f'sum(rate(gme_recording_callbacks_total{{{SEL}, event_type="{e}", '
            f'result!~"duplicate|ignored"}}[$__rate_interval]))',
            e,
        )
        for e in ("started", "completed", "uploaded")
    ]
    lay.add(
        bargauge(
            "Lifecycle funnel",
            "Mean rate of new started, completed and uploaded events "
            "over the time range (duplicates and ignored events left out). Uploads well "
            "below completions mean files do not reach COS.",
            "reqps",
            funnel,
            "mean",
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Lifecycle over time",
            "New started, completed and uploaded events per second; "
            "the three lines should run together, shifted by recording length.",
            "reqps",
            funnel,
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Signature failures by reason",
            "Callbacks rejected for their Signature: "
            "`mismatch` is a wrong or rotated SecretKey, `unknown_app` a BizID with no "
            "key, `missing` a request without the header (scanners; graphed here, pages "
            "nobody).",
            "reqps",
            [
                (
                    f"sum by (reason) (rate(gme_recording_signature_failures_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Invalid callbacks by reason",
            "Callbacks rejected as malformed, too large or stale.",
            "reqps",
            [
                (
                    f"sum by (reason) (rate(gme_recording_callbacks_invalid_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Orphan events (lost starts)",
            "Completed/uploaded events whose start never "
            "arrived within the reorder window, per interval (GmeRecordingCallbacksLost). "
            "Links: the orphan segments in the API and the segment_orphan log lines.",
            "short",
            [
                (
                    f"sum by (event_type) (increase(gme_recording_orphan_events_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "{{event_type}}",
                )
            ],
            links=segments_link("orphan"),
        ),
        8,
        8,
    )

    lay.row("Problems")
    lay.add(
        timeseries(
            "Stuck recordings by app",
            "Segments recording for longer than the maximum "
            "recording duration, by app (the standing count; GmeRecordingStuck pages on "
            "new ones). Links: that app's stuck segments in the API, and the "
            "segment_stuck log lines.",
            "short",
            [(f"sum by (app_id) ({SHARED} (gme_recording_stuck_recordings{{{APP}}}))", "{{app_id}}")],
            links=segments_link("stuck"),
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Missing uploads by app",
            "Completed segments with no upload within the "
            "upload grace, by app (the standing count; GmeRecordingUploadsMissing pages "
            "on new ones). Links: that app's segments in the API, and the log lines.",
            "short",
            [(f"sum by (app_id) ({SHARED} (gme_recording_uploads_missing{{{APP}}}))", "{{app_id}}")],
            links=segments_link("upload_missing"),
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Unverified segments",
            "Segments live when a blind window opened whose "
            "deadline passed with no callback and no COS check to settle them: they "
            "would be stuck or missing an upload, but the callback may have been lost "
            "while the service was not listening. Not paged: look them up in COS "
            "(runbook: Blind windows). Standing count, and new ones per interval by "
            "app.",
            "short",
            [
                (
                    f'sum({SHARED} (gme_recording_tracked_segments{{{SEL}, state="unverified"}}))',
                    "unverified now",
                ),
                (
                    f"sum by (app_id) (increase(gme_recording_unverified_total{{{APP}}}[$__rate_interval]))",
                    "new {{app_id}}",
                ),
            ],
            links=segments_link("unverified"),
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "New stuck and missing uploads",
            "Segments per interval that became stuck or "
            "whose upload did not arrive within the grace. With exemplar storage on, "
            "the dots carry the room, user, task and SeqNo of the last one.",
            "short",
            [
                (
                    f"sum by (app_id) (increase(gme_recording_stuck_total{{{APP}}}[$__rate_interval]))",
                    "stuck {{app_id}}",
                ),
                (
                    f"sum by (app_id) (increase(gme_recording_missing_uploads_total{{{APP}}}"
                    f"[$__rate_interval]))",
                    "missing upload {{app_id}}",
                ),
            ],
            exemplars=True,
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Problems by COS answer",
            "New stuck and missing segments per interval by "
            "whether COS confirmed them: `true` looked up and absent, `false` the lookup "
            "failed (a COS outage: never paged, GmeRecwatchCosLookupsFailing names it), "
            "`unchecked` no bucket. The pages count `true` and `unchecked` only.",
            "short",
            [
                (
                    f"sum by (state, confirmed) (increase(gme_recording_problem_segments_total"
                    f"{{{APP}}}[$__rate_interval]))",
                    "{{state}} confirmed={{confirmed}}",
                )
            ],
        ),
        6,
        8,
    )
    lay.add(
        table(
            "Apps now",
            "Per app: segments recording, stuck, missing an upload, and the start "
            "of the oldest recording still running.",
            "short",
            [
                (f"sum by (app_id) ({SHARED} (gme_recording_active_recordings{{{APP}}}))", ""),
                (f"sum by (app_id) ({SHARED} (gme_recording_stuck_recordings{{{APP}}}))", ""),
                (f"sum by (app_id) ({SHARED} (gme_recording_uploads_missing{{{APP}}}))", ""),
                (
                    f"time() - max by (app_id) "
                    f"(gme_recording_oldest_recording_start_timestamp_seconds{{{APP}}} > 0)",
                    "",
                ),
            ],
            {
                "Value #A": "recording",
                "Value #B": "stuck",
                "Value #C": "missing upload",
                "Value #D": "oldest recording age (s)",
            },
        ),
        24,
        8,
    )
    reconciled = f"sum(increase(gme_recording_segments_reconciled_total{{{SEL}}}[1h]))"
    uploads_seen = (
        f'sum(increase(gme_recording_callbacks_total{{{SEL}, event_type="uploaded", '
        f'result=~"accepted|out_of_order|late"}}[1h]))'
    )
    lay.add(
        timeseries(
            "Callbacks lost by Tencent",
            "Of the recorded files that reached COS in the "
            "last hour (an upload callback arrived, or a lookup found the file after a "
            "deadline), the share only found by the lookup: their completed and/or "
            "uploaded callbacks never arrived (GmeRecordingCallbacksLost). Needs a COS "
            "bucket (GME_RECWATCH_COS_BUCKET); empty without one.",
            "percentunit",
            [(f"{reconciled} / ({reconciled} + {uploads_seen} > 0)", "lost")],
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "COS lookups",
            "Files looked up in COS before a segment is called stuck or "
            "its upload missing, per interval, by result (found: reconciled, the "
            "callbacks were lost; not_found: the problem is confirmed; error: it stands "
            "unconfirmed), the callbacks found lost by event type, and the segments "
            "waiting for a lookup.",
            "short",
            [
                (
                    f"sum by (result) (increase(gme_recording_reconcile_checks_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "lookup {{result}}",
                ),
                (
                    f"sum by (event_type) (increase(gme_recording_callbacks_lost_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "lost {{event_type}} callbacks",
                ),
                (f"max(gme_recording_reconcile_pending{{{SEL}}})", "waiting for a lookup"),
            ],
        ),
        12,
        8,
    )

    lay.row("Delays and durations")
    lay.add(
        timeseries(
            "Callback delivery delay",
            "Receive time minus the callback's Timestamp: how "
            "late Tencent delivers, p50/p90/p99 by event type.",
            "s",
            quantiles("gme_recording_callback_delay_seconds", "event_type", SEL),
        ),
        12,
        8,
    )
    lay.add(
        heatmap(
            "Callback delivery delay distribution",
            "Callbacks per delay bucket.",
            "s",
            f"sum by (le) (increase(gme_recording_callback_delay_seconds_bucket{{{SEL}}}[$__rate_interval]))",
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Recording duration",
            "Recorded length of completed segments, p50/p90/p99 by record mode.",
            "s",
            quantiles("gme_recording_duration_seconds", "record_mode", SEL),
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Upload delay",
            "Time from completion to upload (sender Timestamps), p50/p90/p99 by record mode.",
            "s",
            quantiles("gme_recording_upload_delay_seconds", "record_mode", SEL),
        ),
        12,
        8,
    )
    lay.add(
        heatmap(
            "Upload delay distribution",
            "Uploads per delay bucket.",
            "s",
            f"sum by (le) (increase(gme_recording_upload_delay_seconds_bucket{{{SEL}}}[$__rate_interval]))",
        ),
        24,
        8,
    )
    return dashboard(
        "gme-rec-overview",
        "GME recordings: overview",
        "Tencent Cloud GME server-side recordings as gme-recwatch sees them: lifecycle "
        "started -> completed -> uploaded, stuck recordings, missing uploads, callback "
        "health.",
        ["gme", "gme-recwatch"],
        lay.panels,
        with_app=True,
    )


def service() -> dict[str, Any]:
    lay = Layout()
    lay.row("Overview")
    lay.add(
        stat(
            "Instances up",
            "Targets of the selected jobs that Prometheus scraped successfully.",
            "short",
            f"sum(up{{{SEL}}})",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Uptime",
            "Time since the newest selected process started.",
            "s",
            f"time() - max(process_start_time_seconds{{{SEL}}})",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Store capacity used",
            "Largest share of store capacity in use on any selected "
            "instance (GmeRecwatchStoreNearCapacity above 90%).",
            "percentunit",
            f"max(sum by (instance) (gme_recording_tracked_segments{{{SEL}}}) / on (instance) "
            f"(max by (instance) (gme_recording_store_capacity{{{SEL}}}) > 0))",
            red=0.9,
            kind="gauge",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Snapshot age",
            "Time since the last state snapshot was written; empty when "
            "snapshots are off (GmeRecwatchSnapshotFailing).",
            "s",
            f"time() - max(gme_recording_snapshot_last_success_timestamp_seconds{{{SEL}}} > 0)",
            red=900,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "SecretKeys loaded",
            "Keys in the keyring, all apps, rotation keys included.",
            "short",
            f"sum(gme_recording_keyring_keys{{{SEL}}})",
        ),
        4,
        4,
    )
    lay.add(
        table(
            "Versions",
            "gme-recwatch and Python version per instance.",
            "short",
            [(f"max by (instance, version, python_version) (gme_recording_build_info{{{SEL}}})", "")],
            {"Value": "up"},
        ),
        4,
        4,
    )

    lay.row("HTTP")
    lay.add(
        timeseries(
            "Requests by listener and code",
            "HTTP requests answered per second: "
            "`callback` is Tencent's traffic, `admin` is probes, scrapes and the API.",
            "reqps",
            [
                (
                    f"sum by (listener, code) (rate(gme_recording_http_requests_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "{{listener}} {{code}}",
                )
            ],
            stack=True,
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Errors by listener",
            "4xx and 5xx answers per second. On the callback "
            "listener, 4xx include rejected (unsigned, badly signed, malformed) callbacks.",
            "reqps",
            [
                (
                    f"sum by (listener, code) (rate(gme_recording_http_requests_total{{{SEL}, "
                    f'code=~"5..|4.."}}[$__rate_interval]))',
                    "{{listener}} {{code}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Error ratio by listener",
            "Share of answers that are 4xx or 5xx.",
            "percentunit",
            [
                (
                    f"sum by (listener) (rate(gme_recording_http_requests_total{{{SEL}, "
                    f'code=~"5..|4.."}}[$__rate_interval])) / (sum by (listener) '
                    f"(rate(gme_recording_http_requests_total{{{SEL}}}[$__rate_interval])) > 0)",
                    "{{listener}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Latency by listener",
            "Time to answer, p50/p90/p99 per listener. Tencent gives a callback about 5 s before it retries.",
            "s",
            quantiles("gme_recording_http_request_duration_seconds", "listener", SEL),
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Requests in flight",
            "Requests being answered now, per listener.",
            "short",
            [(f"sum by (listener) (gme_recording_http_requests_in_flight{{{SEL}}})", "{{listener}}")],
        ),
        12,
        8,
    )

    lay.row("Store")
    lay.add(
        timeseries(
            "Tracked segments by state",
            "Segments held in memory, by lifecycle state.",
            "short",
            [
                (f"sum by (state) ({SHARED} (gme_recording_tracked_segments{{{SEL}}}))", "{{state}}"),
                (f"max(gme_recording_store_capacity{{{SEL}}})", "capacity"),
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Store capacity used",
            "Tracked segments as a share of the capacity (GME_RECWATCH_MAX_SEGMENTS), per instance.",
            "percentunit",
            [
                (
                    f"sum by (instance) (gme_recording_tracked_segments{{{SEL}}}) / on "
                    f"(instance) (max by (instance) (gme_recording_store_capacity{{{SEL}}})"
                    f" > 0)",
                    "{{instance}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Evictions by reason and state",
            "Segments dropped from memory per second. "
            "`capacity` evictions of states other than `uploaded` lose live segments "
            "(GmeRecwatchStoreNearCapacity).",
            "ops",
            [
                (
                    f"sum by (reason, state) (rate(gme_recording_evictions_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}} {{state}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "App label overflow",
            'Callbacks per second from apps beyond max_apps, counted as app_id="other".',
            "reqps",
            [(f"sum(rate(gme_recording_app_label_overflow_total{{{SEL}}}[$__rate_interval]))", "overflow")],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Snapshot age",
            "Time since the last state snapshot was written, per instance.",
            "s",
            [
                (
                    f"time() - (gme_recording_snapshot_last_success_timestamp_seconds{{{SEL}}} > 0)",
                    "{{instance}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Snapshot failures",
            "Snapshot writes/restores that failed per interval, by operation (GmeRecwatchSnapshotFailing).",
            "short",
            [
                (
                    f"sum by (operation) (increase(gme_recording_snapshot_failures_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "failed {{operation}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Blind seconds",
            "Seconds in which callbacks may have been sent and "
            "never recorded, beyond what Tencent's retries cover, per interval, by "
            "cause: a crash (from the last snapshot), a clean restart longer than the "
            "retry horizon, a store outage beyond it. Each window is logged as "
            "blind_window. Every replica of a shared store sees the same store "
            "outage: the max over them, not the sum.",
            "s",
            [
                (
                    f"max by (cause) (increase(gme_recording_blind_seconds_total{{{SEL}}}[$__rate_interval]))",
                    "{{cause}}",
                )
            ],
        ),
        8,
        8,
    )

    lay.row("Process")
    lay.add(
        timeseries(
            "CPU",
            "CPU time used per second (1 = one core), per instance.",
            "percentunit",
            [
                (
                    f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval]))",
                    "{{instance}}",
                )
            ],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Resident memory",
            "Resident set size per instance; grows with tracked segments.",
            "bytes",
            [(f"sum by (instance) (process_resident_memory_bytes{{{SEL}}})", "{{instance}}")],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Snapshot write duration",
            "How long the last state snapshot write took.",
            "s",
            [(f"max by (instance) (gme_recording_snapshot_duration_seconds{{{SEL}}})", "{{instance}}")],
        ),
        8,
        8,
    )
    return dashboard(
        "gme-recwatch-svc",
        "gme-recwatch: service health",
        "The gme-recwatch process: HTTP listeners, store memory and capacity, state snapshots, CPU and memory.",
        ["gme", "gme-recwatch"],
        lay.panels,
        with_app=False,
    )


DASHBOARDS = {
    "gme-recordings-overview.json": overview,
    "gme-recwatch-service.json": service,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build), encoding="utf-8")
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
