"""Writes the Grafana dashboards in this folder: `python dashboards/generate.py`.

The dashboards are built with Grafana's typed builder, grafana-foundation-sdk (its Grafana 11.6
build, pinned in pyproject.toml), so every panel, option and link has the shape Grafana's schema
gives it; tests/test_dashboards.py validates the output against that schema (vendored in
tests/grafana_schema/) and fails when a JSON file differs from what this script writes.
Edit here, regenerate, commit both (and the chart's copies: helm/sync-assets.sh).

To add a panel: pick the helper for its kind (stat, timeseries, bargauge, heatmap, table), give
it a title, a description, a unit and its queries with the SEL/APP selectors, and `add` it to a
row. Queries may read the service's metrics and the recording rules of rules.py.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge as bargauge_builder
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import gauge as gauge_builder
from grafana_foundation_sdk.builders import heatmap as heatmap_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rules  # noqa: E402  (beside this script: the SLIs are defined once, for rules and panels)

DS = model.DataSourceRef(type_val="prometheus", uid="${prometheus_datasource}")
RUNBOOK = "https://github.com/gme-recwatch/gme-recwatch/blob/main/docs/runbook.md"
TAGS = ["gme", "gme-recwatch"]

# Selectors every query carries: the release (cluster, namespace, job) and the instance; APP adds
# the app filter for metrics that have an app_id label.
SEL = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job", instance=~"$instance"'
APP = SEL + ', app_id=~"$app_id"'
# State gauges describe the shared state: every replica on one Redis exports the same value,
# so replicas are collapsed with max before anything is summed (one replica: the value itself).
SHARED = "max without (instance, pod)"
# The log lines of the chart's pods, as Loki's Kubernetes discovery (Alloy, Promtail) labels
# them: the container name is a matcher that never matches the empty string, so the selector is
# one Loki accepts whatever namespace label the series clicked on has (none, outside Kubernetes).
LOG_STREAM = 'container="gme-recwatch"'

Queries = Sequence[tuple[str, str]] | str
PanelBuilder = (
    timeseries_builder.Panel
    | stat_builder.Panel
    | gauge_builder.Panel
    | bargauge_builder.Panel
    | heatmap_builder.Panel
    | table_builder.Panel
)


class Board:
    """A dashboard's panels in reading order: rows, and panels placed left to right on Grafana's
    24-column grid, a panel that does not fit starting a new line (the SDK's own placement lets
    it overflow). Ids are given here so that links to a panel stay stable."""

    def __init__(self, uid: str, title: str) -> None:
        self.builder = dashboard_builder.Dashboard(title).uid(uid)
        self.next_id = 1
        self.x = self.y = self.line_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.builder.with_row(
            dashboard_builder.Row(title).id(self._id()).grid_pos(model.GridPos(h=1, w=24, x=0, y=self.y))
        )
        self.y += 1

    def add(self, panel: PanelBuilder, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel.id(self._id()).grid_pos(model.GridPos(h=h, w=w, x=self.x, y=self.y))
        self.builder.with_panel(panel)
        self.x += w
        self.line_h = max(self.line_h, h)

    def _newline(self) -> None:
        self.y += self.line_h
        self.x = self.line_h = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False
) -> prometheus_builder.Dataquery:
    query = (
        prometheus_builder.Dataquery()
        .datasource(DS)
        .expr(expr)
        .legend_format(legend or "__auto")
        .ref_id(ref)
        .editor_mode(prometheus_model.QueryEditorMode.CODE)
    )
    return query.instant() if instant else query.range()


def _targets(queries: Queries, *, instant: bool = False) -> list[prometheus_builder.Dataquery]:
    if isinstance(queries, str):
        queries = [(queries, "")]
    return [target(e, legend, chr(ord("A") + i), instant=instant) for i, (e, legend) in enumerate(queries)]


def _queries(queries: Sequence[Builder[variants.Dataquery]]) -> list[Builder[variants.Dataquery]]:
    """The SDK's builders take a list of any query type's builders (a list is invariant)."""
    return list(queries)


def _links(links: Sequence[Builder[model.DashboardLink]]) -> list[Builder[model.DashboardLink]]:
    return list(links)


def _thresholds(red: float | None) -> dashboard_builder.ThresholdsConfig:
    steps = [model.Threshold(value=None, color="green")]
    if red is not None:
        steps.append(model.Threshold(value=red, color="red"))
    return dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def _color(mode: model.FieldColorModeId) -> dashboard_builder.FieldColor:
    return dashboard_builder.FieldColor().mode(mode)


def _reduce(calc: str) -> common_builder.ReduceDataOptions:
    return common_builder.ReduceDataOptions().calcs([calc]).fields("").values(False)


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Queries,
    *,
    stack: bool = False,
    minimum: float | None = 0,
    links: list[dashboard_builder.DashboardLink] | None = None,
    exemplars: bool = False,
) -> timeseries_builder.Panel:
    targets = _targets(queries)
    if exemplars:
        targets = [t.exemplar(True) for t in targets]
    panel = (
        timeseries_builder.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .color_scheme(_color(model.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(40 if stack else 10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
        .targets(_queries(targets))
    )
    if stack:
        panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL).group("A"))
    if minimum is not None:
        panel.min(minimum)
    if links:
        panel.data_links(_links(links))
    return panel


def stat(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    red: float | None = None,
    decimals: int | None = None,
) -> stat_builder.Panel:
    panel = (
        stat_builder.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .thresholds(_thresholds(red))
        .color_scheme(_color(model.FieldColorModeId.THRESHOLDS))
        .reduce_options(_reduce("lastNotNull"))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .text_mode(common.BigValueTextMode.AUTO)
        .targets(_queries(_targets(expr, instant=True)))
    )
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def gauge(title: str, description: str, unit: str, expr: str, *, red: float) -> gauge_builder.Panel:
    return (
        gauge_builder.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .min(0)
        .max(1)
        .thresholds(_thresholds(red))
        .color_scheme(_color(model.FieldColorModeId.THRESHOLDS))
        .reduce_options(_reduce("lastNotNull"))
        .show_threshold_labels(False)
        .show_threshold_markers(True)
        .targets(_queries(_targets(expr, instant=True)))
    )


def bargauge(title: str, description: str, unit: str, queries: Queries, calc: str) -> bargauge_builder.Panel:
    return (
        bargauge_builder.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .min(0)
        .thresholds(_thresholds(None))
        .color_scheme(_color(model.FieldColorModeId.PALETTE_CLASSIC))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
        .reduce_options(_reduce(calc))
        .targets(_queries(_targets(queries)))
    )


def heatmap(title: str, description: str, unit: str, expr: str) -> heatmap_builder.Panel:
    return (
        heatmap_builder.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .calculate(False)
        .y_axis(heatmap_builder.YAxisConfig().unit(unit).axis_placement(common.AxisPlacement.LEFT))
        .cell_gap(1)
        .color(
            heatmap_builder.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .exponent(0.5)
            .steps(64)
        )
        .rows_frame(heatmap_builder.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
        .show_legend()
        .show_y_histogram()
        .targets(
            [
                prometheus_builder.Dataquery()
                .datasource(DS)
                .expr(expr)
                .legend_format("{{le}}")
                .ref_id("A")
                .editor_mode(prometheus_model.QueryEditorMode.CODE)
                .format(prometheus_model.PromQueryFormat.HEATMAP)
                .range()
            ]
        )
    )


def table(
    title: str, description: str, unit: str, queries: Queries, rename: dict[str, str]
) -> table_builder.Panel:
    targets = [t.format(prometheus_model.PromQueryFormat.TABLE) for t in _targets(queries, instant=True)]
    return (
        table_builder.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .align(common.FieldTextAlignment.AUTO)
        .show_header(True)
        .sort_by([common_builder.TableSortByFieldState().display_name(next(iter(rename.values()))).desc(True)])
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": rename}
            )
        )
        .targets(_queries(targets))
    )


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


def variable(name: str, label: str, query: str, *, all_value: str = ".+") -> dashboard_builder.QueryVariable:
    """A multi-select label variable, refreshed when the time range changes. `.+` as "All" for
    job and instance (every series has them); `.*` for cluster and namespace, which a
    Prometheus outside Kubernetes, or with one cluster, does not set."""
    return (
        dashboard_builder.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .multi(True)
        .all_value(all_value)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def datasource_variable(kind: str, label: str) -> dashboard_builder.DatasourceVariable:
    return (
        dashboard_builder.DatasourceVariable(f"{kind}_datasource")
        .label(label)
        .type(kind)
        .current(model.VariableOption(text="", value=""))
    )


def link(title: str, url: str, tooltip: str = "") -> dashboard_builder.DashboardLink:
    """A data or dashboard link. Grafana's schema types data links as dashboard links, so the
    fields a data link ignores (tags, asDropdown...) are set to their defaults."""
    return (
        dashboard_builder.DashboardLink(title)
        .type(model.DashboardLinkType.LINK)
        .url(url)
        .icon("external link")
        .tooltip(tooltip)
        .tags([])
        .as_dropdown(False)
        .target_blank(True)
        .include_vars(False)
        .keep_time(False)
    )


def url_quote(template: str) -> str:
    """`template` percent-encoded for a URL query, its Grafana variables (`${...}`) left for
    Grafana to fill in: each of them must be formatted to be URL-safe itself."""
    parts = []
    rest = template
    while "${" in rest:
        before, _, after = rest.partition("${")
        name, _, rest = after.partition("}")
        parts.append(urllib.parse.quote(before, safe="") + "${" + name + "}")
    return "".join(parts) + urllib.parse.quote(rest, safe="")


def explore_logs(event: str, *, per_app: bool) -> str:
    """An Explore URL (Grafana 11 `panes` state) showing the `event` log lines of the series'
    namespace, for the series' app when it has one, over the panel's time range. The state is
    JSON, percent-encoded; the values Grafana fills in are percent-encoded by their format."""
    logql = (
        f'{{namespace="${{__field.labels.namespace:percentencode}}", {LOG_STREAM}}} | json | event="{event}"'
    )
    if per_app:
        logql += ' | app_id="${__field.labels.app_id:percentencode}"'
    state = {
        "logs": {
            "datasource": "${loki_datasource:percentencode}",
            "queries": [
                {
                    "refId": "A",
                    "datasource": {"type": "loki", "uid": "${loki_datasource:percentencode}"},
                    "expr": logql,
                    "queryType": "range",
                }
            ],
            "range": {"from": "${__from}", "to": "${__to}"},
        }
    }
    return "/explore?schemaVersion=1&orgId=${__org}&panes=" + url_quote(
        json.dumps(state, separators=(",", ":"))
    )


def segments_links(state: str, *, per_app: bool = True) -> list[dashboard_builder.DashboardLink]:
    """Data links from a problem count to the segments behind it: the drill-down API (through
    `api_url`, e.g. a `kubectl port-forward` of the admin Service) and the log lines in Loki.
    `per_app` when the series has an app_id label (the query keeps it in its `by`)."""
    app = "&app_id=${__field.labels.app_id:percentencode}" if per_app else ""
    where = " in app ${__field.labels.app_id}" if per_app else ""
    return [
        link(f"Segments {state}{where} (API)", f"${{api_url:raw}}/api/v1/segments?state={state}{app}"),
        link(f"segment_{state} log lines (Loki)", explore_logs(f"segment_{state}", per_app=per_app)),
    ]


def dashboard(board: Board, description: str, *, with_app: bool) -> dict[str, object]:
    variables: list[Builder[model.VariableModel]] = [
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
            dashboard_builder.TextBoxVariable("api_url")
            .label("Segments API")
            .description(
                "Base URL of the admin listener for the data links, e.g. after "
                "kubectl port-forward svc/<release>-gme-recwatch-admin 8081"
            )
            .default_value("http://127.0.0.1:8081")
            .current(model.VariableOption(text="http://127.0.0.1:8081", value="http://127.0.0.1:8081"))
        )
    built = (
        board.builder.description(description)
        .tags(TAGS)
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("")
        .fiscal_year_start_month(0)
        .live_now(False)
        .annotation(
            dashboard_builder.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .link(link("Runbook", RUNBOOK, "What each alert means and what to do").icon("doc"))
        .link(
            # The other dashboards of the mixin, on the same time range and variables.
            dashboard_builder.DashboardLink("gme-recwatch dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["gme-recwatch"])
            .icon("dashboard")
            .tooltip("")
            .as_dropdown(True)
            .target_blank(False)
            .include_vars(True)
            .keep_time(True)
        )
        .variables(variables)
        .build()
    )
    return built.to_json()


def _sli(slo: str, window: str) -> tuple[str, str]:
    if slo == "ingest":
        return rules.ingest_sli(window, str(rules.KNOBS["ingest_slow_le"][1]), SEL, "sum")
    return rules.delivery_sli(window, SEL, SEL, "sum")


def slo_row(lay: Board) -> None:
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
                f"objective is missed. All apps of the release, as the alerts see it "
                f"(the App filter does not apply: the objective is the release's).",
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
                "windows (docs/alerting.md). All apps of the release, as the alerts see it.",
                "short",
                burns,
            ),
            8,
            6,
        )


def overview() -> dict[str, object]:
    lay = Board("gme-rec-overview", "GME recordings: overview")
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
                    f"sum by (event_type, result) (rate(gme_recording_callbacks_total{{{APP}}}"
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
            f'sum(rate(gme_recording_callbacks_total{{{APP}, event_type="{e}", '
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
            "arrived within the reorder window, per interval (GmeRecordingCallbacksLost), "
            "all apps (the counter has no app label). Links: the release's orphan segments "
            "in the API and the segment_orphan log lines.",
            "short",
            [
                (
                    f"sum by (namespace, event_type) (increase(gme_recording_orphan_events_total{{{SEL}}}"
                    f"[$__rate_interval]))",
                    "{{event_type}}",
                )
            ],
            links=segments_links("orphan", per_app=False),
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
            [
                (
                    f"sum by (namespace, app_id) ({SHARED} (gme_recording_stuck_recordings{{{APP}}}))",
                    "{{app_id}}",
                )
            ],
            links=segments_links("stuck"),
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
            [(f"sum by (namespace, app_id) ({SHARED} (gme_recording_uploads_missing{{{APP}}}))", "{{app_id}}")],
            links=segments_links("upload_missing"),
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
            "app. Links: the release's unverified segments in the API, and the log lines.",
            "short",
            [
                (
                    f"sum by (namespace) ({SHARED} "
                    f'(gme_recording_tracked_segments{{{SEL}, state="unverified"}}))',
                    "unverified now",
                ),
                (
                    f"sum by (namespace, app_id) (increase(gme_recording_unverified_total{{{APP}}}"
                    f"[$__rate_interval]))",
                    "new {{app_id}}",
                ),
            ],
            # The standing count has no app label: the links list every app's unverified segments.
            links=segments_links("unverified", per_app=False),
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
    lost_by_type = f"sum by (event_type) (increase(gme_recording_callbacks_lost_total{{{SEL}}}[1h]))"
    lost_1h = (
        f"(({lost_by_type} + on (event_type) label_replace(sum (increase("
        f'gme_recording_orphan_events_total{{{SEL}}}[1h])), "event_type", "started", "", ""))'
        f" or {lost_by_type})"
    )
    delivered_1h = (
        f"sum by (event_type) (increase(gme_recording_callbacks_total{{{SEL}, "
        f'result=~"accepted|out_of_order|late"}}[1h]))'
    )
    lay.add(
        timeseries(
            "Tencent's delivery: callbacks never delivered",
            "Share of Tencent's callbacks over the last hour that never arrived, by event type: "
            "found lost when the file was in COS (a segment no callback announced lost all "
            "three), and starts of segments whose completion or upload came (orphans), against "
            "those delivered; the recording rule job_event:gme_recording_callbacks_lost:ratio1h "
            "is the release's same figure, and GmeRecordingCallbacksLost tickets it.",
            "percentunit",
            [(f"{lost_1h} / ({lost_1h} + on (event_type) {delivered_1h} > 0)", "{{event_type}} lost")],
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Segments no callback announced",
            "Segments revealed by a later SeqNo of their stream (or found by listing a quiet "
            "stream's COS folder) that got no callback at all, per interval, by what became of "
            "them: found and tail_found (in COS: Tencent lost every callback), missing (not in "
            "COS: a recording is missing, in the delivery SLO), unconfirmed (no bucket or no "
            "answer), by app. Links: that app's unannounced segments in the API.",
            "short",
            [
                (
                    f"sum by (namespace, app_id, result) (increase("
                    f"gme_recording_unannounced_segments_total{{{APP}}}[$__rate_interval]))",
                    "{{app_id}} {{result}}",
                )
            ],
            links=segments_links("unannounced"),
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
        lay,
        "Tencent Cloud GME server-side recordings as gme-recwatch sees them: lifecycle "
        "started -> completed -> uploaded, stuck recordings, missing uploads, callback "
        "health.",
        with_app=True,
    )


def service() -> dict[str, object]:
    lay = Board("gme-recwatch-svc", "gme-recwatch: service health")
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
        gauge(
            "Store capacity used",
            "Largest share of store capacity in use on any selected "
            "instance (GmeRecwatchStoreNearCapacity above 90%).",
            "percentunit",
            f"max(sum by (instance) (gme_recording_tracked_segments{{{SEL}}}) / on (instance) "
            f"(max by (instance) (gme_recording_store_capacity{{{SEL}}}) > 0))",
            red=0.9,
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
        lay,
        "The gme-recwatch process: HTTP listeners, store memory and capacity, state snapshots, CPU and memory.",
        with_app=False,
    )


DASHBOARDS: dict[str, Callable[[], dict[str, object]]] = {
    "gme-recordings-overview.json": overview,
    "gme-recwatch-service.json": service,
}


def render(build: Callable[[], dict[str, object]]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False, cls=JSONEncoder) + "\n"


def main() -> int:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build), encoding="utf-8")
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
