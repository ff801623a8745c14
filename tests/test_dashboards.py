"""The monitoring assets in dashboards/: rules pass promtool, their unit tests pass, the dashboards
follow the monitoring-mixin conventions and every query parses in Prometheus.

The metric names a panel or rule may use come from gme_recwatch.metrics itself (a registry built
and collected here), so renaming a metric there breaks these tests until the dashboards follow.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import grafana_links as LINKS
import jsonschema
import pytest
import yaml
from conftest import ROOT, load_script, require_tool

from gme_recwatch import metrics as metrics_module
from gme_recwatch.lifecycle import STATE_NAMES

LINTER = load_script(ROOT / "tools" / "dashboard_lint.py")
DASHBOARDS_DIR = ROOT / "dashboards"
RULE_FILES = sorted((DASHBOARDS_DIR / "rules").glob("*.yaml"))
RULE_TEST_FILES = sorted((DASHBOARDS_DIR / "tests").glob("*.yaml"))
DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))
RUNBOOK = ROOT / "docs" / "runbook.md"
INHIBIT_FILE = DASHBOARDS_DIR / "alertmanager-inhibit.yaml"
RUNBOOK_URL = "https://github.com/gme-recwatch/gme-recwatch/blob/main/docs/runbook.md#"

PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "heatmap", "table"}
# Metrics other exporters or Prometheus itself provide; the service's own come from metrics.py.
STANDARD_METRICS = {"up"}
STANDARD_PREFIXES = ("process_",)


def test_there_is_something_to_check() -> None:
    assert len(RULE_FILES) == 3
    assert RULE_TEST_FILES
    assert {p.name for p in DASHBOARD_FILES} == {"gme-recordings-overview.json", "gme-recwatch-service.json"}


# --------------------------------------------------------------------------- exported metrics


class _EveryTally:
    """Stands in for store stats: one app, every tally empty, so the collector emits each family."""

    app_labels = ("lint",)
    capacity = 1
    app_overflow = 0

    def __getattr__(self, name: str) -> dict[Any, int]:
        return {}


@cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Every sample name the service exports, mapped to the label names seen on it."""
    m = metrics_module.Metrics()
    m.store.update(_EveryTally())  # type: ignore[arg-type]
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "unknown": ("",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    }
    names: dict[str, set[str]] = {}
    # Labelled metrics with no child yet emit no sample: their label names from the collector.
    for collector, sample_names in m.registry._collector_to_names.items():
        for name in sample_names:
            names.setdefault(name, set()).update(getattr(collector, "_labelnames", ()))
    for family in m.registry.collect():
        for suffix in suffixes[family.type]:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in names.items()}


def test_metric_collection_sees_the_store_and_request_metrics() -> None:
    names = exported_metrics()
    assert "gme_recording_stuck_recordings" in names
    assert "gme_recording_http_request_duration_seconds_bucket" in names
    assert "app_id" in names["gme_recording_uploads_missing"]


# --------------------------------------------------------------------------- PromQL scanning


def selectors(expr: str) -> Iterator[tuple[str | None, dict[str, tuple[str, str]]]]:
    """Each vector selector in a PromQL expression: (metric name or None, {label: (op, value)})."""
    for sel in LINTER.selectors(expr):
        yield sel.name, sel.matchers


def test_selector_scan_finds_metrics_and_matchers() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, job) (rate(a_bucket{job=~"$job", code=~"5..|4.."}'
        "[$__rate_interval]))) / on (job) group_left (x) b > 1e3 and c offset 5m"
    )
    assert list(selectors(expr)) == [
        ("a_bucket", {"job": ("=~", "$job"), "code": ("=~", "5..|4..")}),
        ("b", {}),
        ("c", {}),
    ]


# --------------------------------------------------------------------------- rules


YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: scenarios.test.yaml is 0.5 MB


@cache
def _parsed(text: str) -> Any:
    return yaml.load(text, Loader=YAML_LOADER)


def read_yaml(path: Path) -> Any:
    """`path` parsed once per worker for each content it has had (a test may rewrite a copy);
    each call gets its own copy to change."""
    return copy.deepcopy(_parsed(path.read_text()))


def load_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in read_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for r in load_rules() if "record" in r}


def known_metric(name: str) -> bool:
    return (
        name in exported_metrics()
        or name in STANDARD_METRICS
        or name.startswith(STANDARD_PREFIXES)
        or name in recorded_names()
        or name == "ALERTS"  # an alert that holds on its own firing series (AppSilent)
    )


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules_passes(path: Path) -> None:
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# ------------------------------------------------------------------ promtool unit tests

PROMQL_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def rules_read_by(cases: list[dict[str, Any]], rules: list[dict[str, Any]]) -> set[str]:
    """The alerts and recording rules that can change what `cases` check: the alerts they name,
    the series their expressions read, and, over and over, the rules those rules read.

    Rules reach each other only through the series they write: a recorded name, or ALERTS
    (and ALERTS_FOR_STATE) for an alert. A rule outside this set writes only series that
    nothing checked reads, so leaving it out changes no result; it only costs evaluation
    (the whole set made promtool take 3-10 times as long: a week of 5-minute steps evaluated
    every SLO window at every step, for one alert)."""
    alerts = {r["alert"] for r in rules if "alert" in r}
    records = {r["record"] for r in rules if "record" in r}

    def reads(expr: str) -> set[str]:
        names = set(PROMQL_NAME.findall(expr))
        return (names & records) | (alerts if names & {"ALERTS", "ALERTS_FOR_STATE"} else set())

    wanted: set[str] = set()
    for case in cases:
        wanted |= {check["alertname"] for check in case.get("alert_rule_test", [])}
        for check in case.get("promql_expr_test", []):
            wanted |= reads(check["expr"])
    todo = list(wanted)
    while todo:
        name = todo.pop()
        for rule in rules:
            if rule.get("alert", rule.get("record")) == name:
                new = reads(rule["expr"]) - wanted
                wanted |= new
                todo.extend(new)
    return wanted


def promtool_test(
    test_file: Path, tmp_path: Path, cases: list[dict[str, Any]] | None = None, rules_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules test_file`, on `cases` of it (all by default), with each rule file
    (from `rules_dir` if given) cut to the rules those cases can see (:func:`rules_read_by`);
    groups keep their order, the rules theirs, and ``group_eval_order`` what is left of it."""
    doc = read_yaml(test_file)
    if cases is not None:
        doc["tests"] = cases
    sources = [
        (rules_dir / Path(name).name) if rules_dir else (test_file.parent / name).resolve()
        for name in doc["rule_files"]
    ]
    files = [read_yaml(path) for path in sources]
    wanted = rules_read_by(doc["tests"], [r for f in files for g in f["groups"] for r in g["rules"]])
    out = tmp_path / "promtool"
    out.mkdir(exist_ok=True)
    doc["rule_files"], kept_groups = [], set()
    for path, f in zip(sources, files, strict=True):
        for group in f["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert", r.get("record")) in wanted]
        f["groups"] = [g for g in f["groups"] if g["rules"]]
        kept_groups |= {g["name"] for g in f["groups"]}
        if f["groups"]:
            (out / path.name).write_text(yaml.safe_dump(f, sort_keys=False))
            doc["rule_files"].append(path.name)
    if "group_eval_order" in doc:
        doc["group_eval_order"] = [g for g in doc["group_eval_order"] if g in kept_groups]
    test = out / test_file.name
    test.write_text(yaml.safe_dump(doc, sort_keys=False))
    # Go's collector at a quarter of its default pace: about a fifth less CPU for promtool, whose
    # unit tests hold about 100 MB.
    env = {**os.environ, "GOGC": os.environ.get("GOGC", "400")}
    return subprocess.run(
        [require_tool("promtool"), "test", "rules", str(test)], capture_output=True, text=True, env=env
    )


def _promtool_cases() -> list[Any]:
    """One pytest case per promtool test case, so that the workers share them out."""
    # An incident scenario evaluates every rule, the 3-day SLO windows too, minute by minute for
    # up to eight hours of series: minutes of CPU on a busy machine, not the default 120 s.
    return [
        pytest.param(
            path,
            i,
            id=f"{path.name}:{i}",
            marks=[pytest.mark.timeout(900)] if path.name.startswith(("scenarios", "alerts-slo")) else [],
        )
        for path in RULE_TEST_FILES
        for i in range(len(read_yaml(path)["tests"]))
    ]


@pytest.mark.parametrize(("path", "index"), _promtool_cases())
def test_promtool_rule_unit_tests_pass(path: Path, index: int, tmp_path: Path) -> None:
    out = promtool_test(path, tmp_path, [read_yaml(path)["tests"][index]])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_cases_see_every_rule_they_read() -> None:
    """What :func:`rules_read_by` keeps: an alert alone when it reads raw series only; an alert
    and the recording rule it reads; an SLO burn alert with the ratios it reads and, a level
    down, the increases those divide; for a check of ALERTS (the scenarios), every alert and
    exactly the recording rules read by what is kept."""
    rules = load_rules()

    def for_alert(name: str) -> set[str]:
        return rules_read_by([{"alert_rule_test": [{"alertname": name}]}], rules)

    assert for_alert("GmeRecordingCallbacksAbsent") == {"GmeRecordingCallbacksAbsent"}
    assert for_alert("GmeRecordingStuck") == {"GmeRecordingStuck"}
    burn = for_alert("GmeRecordingDeliveryBudgetBurn")
    assert {
        "job:gme_recording_slo_errors:ratio_increase",
        "job:gme_recording_slo_errors:increase",
        "job:gme_recording_slo_events:increase",
    } <= burn
    assert [n for n in burn if n.startswith("Gme")] == ["GmeRecordingDeliveryBudgetBurn"]
    kept = rules_read_by(
        [{"promql_expr_test": [{"expr": 'group by (alertname) (ALERTS{alertstate="firing"})'}]}], rules
    )
    assert {r["alert"] for r in alerts()} <= kept
    read = {n for r in rules if r.get("alert", r.get("record")) in kept for n in PROMQL_NAME.findall(r["expr"])}
    assert kept - {r["alert"] for r in alerts()} == recorded_names() & read


DELIVERY_ERRORS_1H = 'gme_recording_problem_segments_total{job=~".*gme-recwatch.*", confirmed="true"}[1h]))'


def test_promtool_rule_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests are not vacuous, and neither is the cut to the rules a case reads: loosen
    an alert, or a recording rule two levels under a burn-rate alert, and the cases checking
    that alert fail, naming it; on the rules as they are, they pass."""
    shutil.copytree(DASHBOARDS_DIR / "rules", tmp_path / "rules")

    def cases(path: Path, alert: str) -> list[dict[str, Any]]:
        found = [
            case
            for case in read_yaml(path)["tests"]
            if any(c["alertname"] == alert for c in case.get("alert_rule_test", []))
            or any(f'alertname="{alert}"' in c["expr"] for c in case.get("promql_expr_test", []))
        ]
        assert found
        return found

    for alert, test_file, rule_file, before, after in (
        (
            "GmeRecordingStuck",
            "alerts.test.yaml",
            "gme-recwatch-alerts.yaml",
            'state="stuck", confirmed="true"}[30m])) > 0',
            'state="stuck", confirmed="true"}[30m])) > 5',
        ),
        (
            "GmeRecordingDeliveryBudgetBurn",
            "alerts-slo.test.yaml",
            "gme-recwatch-slo-rules.yaml",
            # the delivery errors of the hour, a level under the ratio the alert reads
            "|-\n      (sum by (cluster, namespace, job) (increase(" + DELIVERY_ERRORS_1H,
            "|-\n      (0.01 * sum by (cluster, namespace, job) (increase(" + DELIVERY_ERRORS_1H,
        ),
    ):
        chosen = cases(DASHBOARDS_DIR / "tests" / test_file, alert)
        out = promtool_test(DASHBOARDS_DIR / "tests" / test_file, tmp_path, chosen, tmp_path / "rules")
        assert out.returncode == 0, out.stdout + out.stderr
        target = tmp_path / "rules" / rule_file
        text = target.read_text()
        assert text.count(before) == 1, before
        target.write_text(text.replace(before, after))
        out = promtool_test(DASHBOARDS_DIR / "tests" / test_file, tmp_path, chosen, tmp_path / "rules")
        target.write_text(text)
        assert out.returncode != 0, f"{alert}: the cases pass with {after!r}"
        assert alert in out.stdout + out.stderr


def test_rule_expressions_use_only_exported_metrics() -> None:
    unknown = {
        (r.get("alert") or r.get("record"), name)
        for r in load_rules()
        for name, _ in selectors(r["expr"])
        if name is not None and not known_metric(name)
    }
    assert not unknown


def test_recording_rules_follow_level_metric_operations_naming() -> None:
    for name in recorded_names():
        level, metric, operations = name.split(":")
        assert level and operations, name
        assert metric.startswith("gme_recording_") and not metric.endswith("_total"), name


def runbook_anchors() -> set[str]:
    return {
        m.group(1).strip().lower().replace(" ", "-")
        for m in re.finditer(r"^#{2,3} (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    }


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_follows_mixin_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Gme(Recording|Recwatch)[A-Z][A-Za-z]+", name)
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert "for" in rule
    ann = rule["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}
    assert ann["summary"].endswith(".") and "{{" not in ann["summary"]
    if not rule["expr"].startswith("absent("):  # absent() has no value or labels to show
        assert "{{" in ann["description"]
    assert ann["runbook_url"] == RUNBOOK_URL + name.lower()
    assert name.lower() in runbook_anchors(), f"docs/runbook.md has no section `## {name}`"


def _test_cases() -> list[tuple[int, dict[str, Any]]]:
    """(evaluation step in minutes, test case) of every promtool test file."""
    cases = []
    for path in RULE_TEST_FILES:
        doc = read_yaml(path)
        step = _minutes(doc.get("evaluation_interval", "1m"))
        cases.extend((step, case) for case in doc.get("tests", []))
    return cases


def _minutes(value: str) -> int:
    total = 0
    for n, unit in re.findall(r"(\d+)([dhm])", value):
        total += int(n) * {"d": 1440, "h": 60, "m": 1}[unit]
    assert total or value in ("0m", "0s"), value
    return total


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_every_alert_has_fire_not_yet_and_healthy_unit_tests(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    fires, just_before, healthy = False, False, False
    # A check of the alert's own firing ALERTS series counts as one of it (the SLO tests).
    own = f'ALERTS{{alertname="{name}", alertstate="firing"}}'
    for step, case in _test_cases():
        checks = [c for c in case.get("alert_rule_test", []) if c["alertname"] == name]
        series = [c for c in case.get("promql_expr_test", []) if c["expr"] == own]
        firing = {_minutes(c["eval_time"]) for c in checks if c.get("exp_alerts")}
        firing |= {_minutes(c["eval_time"]) for c in series if c.get("exp_samples")}
        quiet = {_minutes(c["eval_time"]) for c in checks if not c.get("exp_alerts")}
        quiet |= {_minutes(c["eval_time"]) for c in series if not c.get("exp_samples")}
        checks += series
        fires = fires or bool(firing)
        just_before = just_before or bool(firing & {t + step for t in quiet})
        healthy = healthy or bool(checks and not firing)
    assert fires, f"no test expects {name} to fire"
    assert just_before, f"no test checks {name} is quiet one evaluation before it fires"
    assert healthy, f"no test shows {name} quiet on healthy series"


def test_inhibit_rules_name_existing_alerts_and_are_documented() -> None:
    names = {r["alert"] for r in alerts()}
    rules = read_yaml(INHIBIT_FILE)["inhibit_rules"]
    assert rules
    for rule in rules:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname(=~|=)"([^"]+)"', matcher)
            assert m, matcher
            pattern = m.group(2) if m.group(1) == "=~" else re.escape(m.group(2))
            assert any(re.fullmatch(pattern, n) for n in names), matcher
            for part in m.group(2).split("|"):
                assert part in names, part
    source_names = {m for r in rules for m in r["source_matchers"]}
    assert 'alertname="GmeRecordingCallbacksSilent"' in source_names
    # #31.4: a page is never muted by a ticket.
    severity = {r["alert"]: r["labels"]["severity"] for r in alerts()}
    for rule in rules:
        (source,) = (re.fullmatch(r'alertname="(\w+)"', m).group(1) for m in rule["source_matchers"])  # type: ignore[union-attr]
        targets = re.fullmatch(r'alertname=~?"([^"]+)"', rule["target_matchers"][0]).group(1).split("|")  # type: ignore[union-attr]
        if severity[source] == "warning":
            assert all(severity[t] == "warning" for t in targets), (source, targets)
    assert "alertmanager-inhibit.yaml" in RUNBOOK.read_text()
    # #18: every rule stays within one release; none mutes another release's alerts.
    assert all(rule["equal"] == ["cluster", "namespace", "job"] for rule in rules)


# --------------------------------------------------------------------------- incident scenarios

SCENARIOS = load_script(DASHBOARDS_DIR / "scenarios.py")
RULES = load_script(DASHBOARDS_DIR / "rules.py")


def test_scenario_tests_are_what_the_simulation_writes() -> None:
    assert SCENARIOS.OUT.read_text(encoding="utf-8") == SCENARIOS.render(), (
        "dashboards/tests/scenarios.test.yaml is stale: run `python dashboards/scenarios.py`"
    )


def test_the_simulation_reads_metric_names_from_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renaming a metric in metrics.py breaks the simulation, not silently the scenarios."""
    real = metrics_module.Metrics

    class Renamed(real):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.registry.unregister(self.problem_segments)

    monkeypatch.setattr(metrics_module, "Metrics", Renamed)
    with pytest.raises(KeyError, match="gme_recording_problem_segments_total"):
        SCENARIOS.render()


@pytest.mark.parametrize("scenario", SCENARIOS.SCENARIOS, ids=lambda s: s.name)
def test_each_incident_pages_once_as_the_scenario_says(scenario: Any) -> None:
    """What Alertmanager sends with the inhibit rules of rules.py, for the alerts the promtool
    scenario checks prove firing: the pages (critical) are the scenario's, one per incident."""
    inhibits = [
        (rule.source, targets) for rule, targets in RULES.inhibit_rules({a.name for a in RULES.alerts()})
    ]
    critical = {a.name for a in RULES.alerts() if a.severity == "critical"}
    sent = SCENARIOS.notified(scenario, inhibits)
    assert {a: t for a, t in sent.items() if a in critical} == scenario.pages
    assert len(scenario.pages) <= 1
    # #31.7: per checked minute, the one page inside the paged span, nothing outside it, and
    # nothing starts after the incident ends.
    for minute, pages in SCENARIOS.paging_at(scenario, inhibits, critical).items():
        inside = scenario.paged is not None and scenario.paged[0] <= minute <= scenario.paged[1]
        assert pages == (set(scenario.pages) if inside else set()), (minute, pages)
    if scenario.paged is not None:
        assert min(scenario.pages.values()) == scenario.paged[0]
        assert scenario.ends is None or scenario.paged[0] < scenario.ends
        assert scenario.paged[1] + 1 in scenario.checks or scenario.paged[1] == scenario.minutes - 1
        assert scenario.paged[0] - 1 in scenario.checks, "no check just before the page"


def test_alerting_md_incident_table_is_the_scenarios() -> None:
    inhibits = [
        (rule.source, targets) for rule, targets in RULES.inhibit_rules({a.name for a in RULES.alerts()})
    ]
    critical = {a.name for a in RULES.alerts() if a.severity == "critical"}
    assert SCENARIOS.incident_table(inhibits, critical) in (ROOT / "docs" / "alerting.md").read_text(), (
        "docs/alerting.md's incident table is stale: paste dashboards/scenarios.py's incident_table()"
    )


# --------------------------------------------------------------------------- dashboards


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def app_labelled(name: str) -> bool:
    return "app_id" in exported_metrics().get(name, ())


def lint_dashboard(d: dict[str, Any], promtool: str | None = None) -> list[str]:
    """tools/dashboard_lint.py with the metrics the service exports and the rules record."""
    return [str(f) for f in LINTER.lint(d, promtool, known=known_metric, app_labelled=app_labelled)]


DASHBOARD_IDS = [p.name for p in DASHBOARD_FILES]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_dashboard_passes_the_lint(path: Path) -> None:
    """tools/dashboard_lint.py, warnings included, known metrics only, every query compiles."""
    d = load_dashboard(path)
    assert lint_dashboard(d, require_tool("promtool")) == []
    assert list(panels(d)), "no panels"


def test_dashboard_uids_are_unique_and_as_published() -> None:
    uids = {load_dashboard(p)["uid"]: p.name for p in DASHBOARD_FILES}
    assert uids == {
        "gme-rec-overview": "gme-recordings-overview.json",
        "gme-recwatch-svc": "gme-recwatch-service.json",
    }


def test_overview_filters_by_app_and_links_to_the_segments() -> None:
    d = load_dashboard(DASHBOARDS_DIR / "gme-recordings-overview.json")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"app_id", "api_url", "loki_datasource"} <= set(variables)
    linked = {p["title"]: p["fieldConfig"]["defaults"].get("links", []) for p in panels(d)}
    for title, state in (
        ("Stuck recordings by app", "stuck&app_id=${__field.labels.app_id:percentencode}"),
        ("Missing uploads by app", "upload_missing&app_id=${__field.labels.app_id:percentencode}"),
        # The orphan and unverified counts have no app label: every app's segments.
        ("Orphan events (lost starts)", "orphan"),
        ("Unverified segments", "unverified"),
    ):
        urls = [link["url"] for link in linked[title]]
        assert f"${{api_url:raw}}/api/v1/segments?state={state}" in urls
        event = "segment_" + state.split("&")[0]
        assert any("${loki_datasource:percentencode}" in u and event in u for u in urls)


def _first_query_panel(d: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in panels(d) if any("rate(" in t["expr"] for t in p["targets"]))


def _no_unit(p: dict[str, Any]) -> None:
    del p["fieldConfig"]["defaults"]["unit"]


def _no_description(p: dict[str, Any]) -> None:
    p["description"] = " "


def _fixed_rate_window(p: dict[str, Any]) -> None:
    p["targets"][0]["expr"] = p["targets"][0]["expr"].replace("$__rate_interval", "5m")


def _no_instance_filter(p: dict[str, Any]) -> None:
    p["targets"][0]["expr"] = p["targets"][0]["expr"].replace(', instance=~"$instance"', "", 1)


def _fixed_datasource(p: dict[str, Any]) -> None:
    p["datasource"] = {"type": "prometheus", "uid": "prometheus"}


def _bare_counter(p: dict[str, Any]) -> None:
    p["targets"][0]["expr"] = 'sum(gme_recording_callbacks_total{job=~"$job", instance=~"$instance"})'


def _broken_promql(p: dict[str, Any]) -> None:
    p["targets"][0]["expr"] += ")"


@pytest.mark.parametrize(
    ("breakage", "rule"),
    [
        (_no_unit, "panel-units-rule"),
        (_no_description, "panel-title-description-rule"),
        (_fixed_rate_window, "target-rate-interval-rule"),
        (_no_instance_filter, "target-instance-rule"),
        (_fixed_datasource, "panel-datasource-rule"),
        (_bare_counter, "target-counter-agg-rule"),
        (_broken_promql, "target-promql-rule"),
    ],
)
def test_the_linter_catches_a_broken_panel(breakage: Any, rule: str) -> None:
    d = copy.deepcopy(load_dashboard(DASHBOARDS_DIR / "gme-recwatch-service.json"))
    panel = _first_query_panel(d)
    breakage(panel)
    findings = LINTER.lint(d, require_tool("promtool"), known=known_metric, app_labelled=app_labelled)
    assert any(f.rule == rule and panel["title"] in f.where for f in findings), findings


def test_the_linter_catches_broken_variables() -> None:
    d = copy.deepcopy(load_dashboard(DASHBOARDS_DIR / "gme-recwatch-service.json"))
    job = next(v for v in d["templating"]["list"] if v["name"] == "job")
    job["allValue"] = ".*"
    instance = next(v for v in d["templating"]["list"] if v["name"] == "instance")
    instance["refresh"] = 1
    prom = next(v for v in d["templating"]["list"] if v["name"] == "prometheus_datasource")
    prom["name"] = "ds"
    rules = {f.rule for f in LINTER.lint(d)}
    assert {"template-job-rule", "template-on-time-change-reload-rule", "template-datasource-rule"} <= rules


def test_the_lint_catches_a_missing_app_filter_and_an_unknown_metric() -> None:
    d = copy.deepcopy(load_dashboard(DASHBOARDS_DIR / "gme-recordings-overview.json"))
    panel = next(p for p in panels(d) if "gme_recording_stuck_recordings" in p["targets"][0]["expr"])
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace(', app_id=~"$app_id"', "")
    other = next(p for p in panels(d) if p is not panel and p["targets"][0]["expr"].startswith("sum"))
    other["targets"][0]["expr"] = other["targets"][0]["expr"].replace(
        "gme_recording_", "gme_recording_no_such_", 1
    )
    d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "namespace"]
    app = next(v for v in d["templating"]["list"] if v["name"] == "app_id")
    app["query"] = "label_values(gme_recording_no_such_metric, app_id)"
    d["uid"] = ""
    errors = lint_dashboard(d)
    assert any('lacks app_id=~"$app_id"' in e and panel["title"] in e for e in errors), errors
    assert any("unknown metric gme_recording_no_such_" in e and other["title"] in e for e in errors), errors
    assert any("no `namespace` variable" in e for e in errors), errors
    assert any("uid missing" in e for e in errors), errors
    assert any("app_id: unknown metric gme_recording_no_such_metric" in e for e in errors), errors


def test_committed_dashboards_match_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS_DIR / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name, build in generate.DASHBOARDS.items():
        assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == generate.render(build), (
            f"dashboards/{name} is stale: run `python dashboards/generate.py`"
        )


def test_alerting_page_names_every_alert_and_every_scenario() -> None:
    text = (ROOT / "docs" / "alerting.md").read_text()
    missing = [r["alert"] for r in alerts() if f"[{r['alert']}](runbook.md#" not in text]
    assert missing == []
    for scenario in SCENARIOS.SCENARIOS:
        for alert in scenario.pages:
            assert alert in text


# --------------------------------------------------------------------------- Grafana's schema

SCHEMA_DIR = ROOT / "tests" / "grafana_schema"


@cache
def grafana_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{kind}.jsonschema.json").read_text())
    if kind == "dashboard":
        # The one correction (tests/grafana_schema/README.md): a threshold's base step is null.
        value = schema["definitions"]["Threshold"]["properties"]["value"]
        value["type"] = ["number", "null"]
    return schema


def _errors(schema: dict[str, Any], definition: str | None, instance: Any, where: str) -> list[str]:
    if definition is not None:
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(instance)
    ]


def schema_errors(d: dict[str, Any]) -> list[str]:
    """What Grafana's published schemas (tests/grafana_schema) find wrong with dashboard `d`:
    the dashboard itself, each panel's options and field config against its kind's schema, and
    each Prometheus query. Empty when it is valid."""
    errors = _errors(grafana_schema("dashboard"), None, d, "dashboard")
    for p in panels(d):
        where = f"panel {p.get('title')!r}"
        kind = grafana_schema(p["type"])
        errors += _errors(kind, "Options", p.get("options", {}), f"{where} options")
        if "FieldConfig" in kind["definitions"]:
            custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
            errors += _errors(kind, "FieldConfig", custom, f"{where} fieldConfig.defaults.custom")
        for t in p.get("targets", []):
            errors += _errors(grafana_schema("prometheus"), None, t, f"{where} query {t.get('refId')}")
    return errors


def test_every_panel_kind_has_its_schema_vendored() -> None:
    kinds = {p["type"] for path in DASHBOARD_FILES for p in panels(load_dashboard(path))}
    assert kinds <= PANEL_TYPES
    assert {f"{k}.jsonschema.json" for k in kinds} <= {p.name for p in SCHEMA_DIR.glob("*.json")}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_dashboard_is_valid_under_grafanas_published_schema(path: Path) -> None:
    assert schema_errors(load_dashboard(path)) == []


def test_the_schema_catches_what_the_hand_written_dashboards_got_wrong() -> None:
    """The mistakes of the hand-written builder: a variable query as an object with a
    `definition` beside it, a dashboard link without its flags, a stat without its layout."""
    d = copy.deepcopy(load_dashboard(DASHBOARDS_DIR / "gme-recordings-overview.json"))
    job = next(v for v in d["templating"]["list"] if v["name"] == "job")
    job["definition"] = job["query"]
    job["query"] = {"query": job["query"], "refId": "job-values"}
    d["links"][0] = {"title": "Runbook", "type": "link", "icon": "doc", "url": "https://example.com"}
    stat = next(p for p in panels(d) if p["type"] == "stat")
    del stat["options"]["justifyMode"]
    errors = schema_errors(d)
    assert any("templating/list" in e and "definition" in e for e in errors), errors
    assert any("templating/list" in e and "query" in e for e in errors), errors
    assert any("links/0" in e and "keepTime" in e for e in errors), errors
    assert any(stat["title"] in e and "justifyMode" in e for e in errors), errors


# --------------------------------------------------------------------------- links


def data_links(d: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, link) for every data link, in a panel's defaults or in one of its overrides."""
    for p in panels(d):
        for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", []):
            yield p, link
        for override in p.get("fieldConfig", {}).get("overrides", []):
            for prop in override.get("properties", []):
                if prop.get("id") == "links":
                    for link in prop["value"]:
                        yield p, link


def variable_samples(d: dict[str, Any]) -> dict[str, dict[str, LINKS.Variable]]:
    """The dashboard's variables in three states: one value each, two values each, All."""
    single, multi, every = {}, {}, {}
    for v in d["templating"]["list"]:
        name = v["name"]
        if v["type"] == "textbox":
            value = v["query"]
            single[name] = multi[name] = every[name] = LINKS.Variable((value,))
        elif v["type"] == "datasource":
            single[name] = multi[name] = every[name] = LINKS.Variable((f"{v['query']}-uid",))
        else:
            samples = {"app_id": ("1400000000", "1400000001")}.get(name, (f"{name}-a", f"{name}-b"))
            single[name] = LINKS.Variable(samples[:1])
            multi[name] = LINKS.Variable(samples)
            every[name] = LINKS.Variable(samples, all_value=v.get("allValue"), is_all=True)
    return {"single": single, "multi": multi, "all": every}


# Label values of the series a data link is clicked on.
SAMPLE_LABELS = {"namespace": "gme", "app_id": "1400000000"}
BUILT_INS = {"__from", "__to", "__url_time_range", "__org"}


def _series_labels(p: dict[str, Any]) -> list[dict[str, str]]:
    """The labels of the series panel `p` shows (what its queries aggregate by), and the same
    without `namespace` (a Prometheus outside Kubernetes)."""
    out = []
    for t in p["targets"]:
        by = set.intersection(*_by_labels(t["expr"])) if _by_labels(t["expr"]) else set()
        labels = {label: SAMPLE_LABELS.get(label, f"{label}-value") for label in by}
        out += [labels, {k: v for k, v in labels.items() if k != "namespace"}]
    return out


def _rendered_links() -> Iterator[tuple[str, str, str]]:
    """(where, template, rendered URL) of every data link and every `link` dashboard link of
    both dashboards, for each variable state and each kind of series."""
    for path in DASHBOARD_FILES:
        d = load_dashboard(path)
        for state, variables in variable_samples(d).items():
            for p, link in data_links(d):
                for labels in _series_labels(p):
                    ctx = LINKS.Context(variables, labels=labels)
                    where = f"{path.name} {p['title']!r} {link['title']!r} [{state}, {sorted(labels)}]"
                    yield where, link["url"], LINKS.interpolate(link["url"], ctx)
            for link in d["links"]:
                if link["type"] == "link":
                    ctx = LINKS.Context(variables)
                    yield (
                        f"{path.name} {link['title']!r} [{state}]",
                        link["url"],
                        LINKS.interpolate(link["url"], ctx),
                    )


def test_the_interpolator_formats_values_as_grafana_documents() -> None:
    """The examples of Grafana's "Advanced variable format options" page (servers = test1.,
    test2), and a custom All value that only `percentencode`, `text` and `queryparam` format."""
    servers = {"servers": LINKS.Variable(("test1.", "test2"))}
    expected = {
        "": "{test1.,test2}",
        ":csv": "test1.,test2",
        ":json": '["test1.","test2"]',
        ":pipe": "test1.|test2",
        ":regex": "(test1\\.|test2)",
        ":percentencode": "%7Btest1.%2Ctest2%7D",
        ":queryparam": "var-servers=test1.&var-servers=test2",
    }
    for fmt, out in expected.items():
        assert LINKS.interpolate(f"${{servers{fmt}}}", LINKS.Context(servers)) == out, fmt
    every = {"ns": LINKS.Variable(("a", "b"), all_value=".*", is_all=True)}
    assert LINKS.interpolate("${ns:regex}|${ns:percentencode}", LINKS.Context(every)) == ".*|.%2A"
    assert LINKS.interpolate("${ns:queryparam}", LINKS.Context(every)) == "var-ns=All"
    assert LINKS.interpolate("?${__url_time_range}", LINKS.Context({}, 1, 2)) == "?from=1&to=2"
    with pytest.raises(ValueError, match="no variable"):
        LINKS.interpolate("${nope}", LINKS.Context({}))


def test_the_link_checks_catch_the_old_explore_link() -> None:
    """The hand-written explore link: its selector's quotes unescaped inside the `left` JSON,
    the namespace unformatted, All giving a selector that matches the empty string only."""
    old = (
        '/explore?left={"datasource":"${loki_datasource}","queries":[{"refId":"A",'
        '"expr":"{namespace=~"${namespace}"} | json | event="segment_stuck""}]}'
    )
    every = {
        "loki_datasource": LINKS.Variable(("loki-uid",)),
        "namespace": LINKS.Variable(("a", "b"), all_value=".*", is_all=True),
    }
    url = LINKS.interpolate(old, LINKS.Context(every))
    assert LINKS.url_problems(url)
    with pytest.raises(json.JSONDecodeError):
        json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["left"][0])
    assert LINKS.loki_selector_problems('{namespace=~".*"} | json | event="segment_stuck"')


def test_there_are_links_to_check() -> None:
    rendered = list(_rendered_links())
    assert sum("(API)" in where for where, _, _ in rendered) >= 4 * 3
    assert sum("(Loki)" in where for where, _, _ in rendered) >= 4 * 3
    assert any("Runbook" in where for where, _, _ in rendered)


def test_every_link_renders_a_valid_url() -> None:
    problems = [
        f"{where}: {problem}"
        for where, _, url in _rendered_links()
        for problem in LINKS.url_problems(url) + (["a reference left"] if LINKS.references(url) else [])
    ]
    assert problems == []


def test_every_variable_in_a_link_has_an_explicit_format() -> None:
    """Grafana's default format depends on where the link is and how many values are
    selected; an explicit one (`raw` for a base URL, `percentencode` for a value) makes the
    URL the same everywhere."""
    loose = {
        (where.split(" [")[0], name)
        for where, template, _ in _rendered_links()
        for name, fmt in LINKS.references(template)
        if name not in BUILT_INS and fmt is None
    }
    assert loose == set()


def _explore_state(url: str) -> dict[str, Any]:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert set(query) >= {"panes", "schemaVersion"}, url
    panes: dict[str, Any] = json.loads(query["panes"][0])
    return panes


def test_explore_links_open_a_valid_state_with_a_selector_loki_accepts() -> None:
    seen = 0
    for where, _, url in _rendered_links():
        if "(Loki)" not in where:
            continue
        seen += 1
        (pane,) = _explore_state(url).values()
        assert pane["datasource"] == "loki-uid", where
        assert pane["range"] == {"from": "1700000000000", "to": "1700003600000"}, where
        (query,) = pane["queries"]
        assert query["datasource"] == {"type": "loki", "uid": "loki-uid"}, where
        assert LINKS.loki_selector_problems(query["expr"]) == [], (where, query["expr"])
        event = re.search(r'event="(segment_\w+)"', query["expr"])
        assert event and f"{event.group(1)} log lines" in where, where
        if "app_id" in query["expr"]:
            assert 'app_id="1400000000"' in query["expr"] and "'app_id'" in where, where
    assert seen


def test_api_links_name_the_state_and_the_series_app() -> None:
    for where, _, url in _rendered_links():
        if "(API)" not in where:
            continue
        parts = urllib.parse.urlsplit(url)
        assert parts.path == "/api/v1/segments", where
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        assert query["state"][0] in STATE_NAMES, where
        # An app filter only with the series' app: an empty one lists nothing.
        if "app_id" in query:
            assert query["app_id"] == ["1400000000"] and "'app_id'" in where, (where, url)


def _by_labels(expr: str) -> list[set[str]]:
    return [{label.strip() for label in m.split(",")} for m in re.findall(r"\bby \(([^)]*)\)", expr)]


def test_data_links_read_only_labels_their_panels_queries_keep() -> None:
    """A link that reads `${__field.labels.X}` is on a panel whose every aggregation keeps X
    in its `by`: else the label is empty and the link lists nothing (the orphan panel's
    `sum by (event_type)` gave `?state=orphan&app_id=`)."""
    missing = []
    for path in DASHBOARD_FILES:
        for p, link in data_links(load_dashboard(path)):
            prefix = "__field.labels."
            labels = {n.removeprefix(prefix) for n, _ in LINKS.references(link["url"]) if n.startswith(prefix)}
            for t in p["targets"]:
                for by in _by_labels(t["expr"]):
                    missing += [
                        f"{p['title']} [{t['refId']}] {link['title']}: by {by} lacks {x}" for x in labels - by
                    ]
    assert missing == []


def test_dashboard_links_reach_the_other_dashboards_with_the_same_time_and_variables() -> None:
    boards = [load_dashboard(p) for p in DASHBOARD_FILES]
    for d in boards:
        (group,) = [link for link in d["links"] if link["type"] == "dashboards"]
        assert group["includeVars"] and group["keepTime"], d["uid"]
        reached = {other["uid"] for other in boards if set(group["tags"]) <= set(other["tags"])}
        assert reached == {b["uid"] for b in boards}
        (runbook,) = [link for link in d["links"] if link["title"] == "Runbook"]
        assert runbook["url"] + "#" == RUNBOOK_URL


def test_per_app_queries_filter_numerator_and_denominator_alike() -> None:
    """A query that filters by $app_id reads only metrics with an app_id label, each filtered
    by it: a ratio whose numerator is one app's and denominator every app's is wrong by the
    share of that app ("Delivery error budget left" was)."""
    exported = exported_metrics()
    mixed = []
    for path in DASHBOARD_FILES:
        for p in panels(load_dashboard(path)):
            for t in p["targets"]:
                found = [(m, matchers) for m, matchers in selectors(t["expr"]) if m]
                if not any(matchers.get("app_id") == ("=~", "$app_id") for _, matchers in found):
                    continue
                for metric, matchers in found:
                    if "app_id" not in exported.get(metric, ()) or matchers.get("app_id") != ("=~", "$app_id"):
                        mixed.append(f"{p['title']} [{t['refId']}]: {metric} is not filtered by app")
    assert mixed == []


def api_links(state: str, labels: dict[str, str], api_url: str) -> list[str]:
    """The overview's drill-down API links for `state`, rendered as Grafana would for a series
    with `labels` (with every variable on All): what tests/e2e follow against a service."""
    d = load_dashboard(DASHBOARDS_DIR / "gme-recordings-overview.json")
    variables = dict(variable_samples(d)["all"], api_url=LINKS.Variable((api_url,)))
    ctx = LINKS.Context(variables, labels=labels)
    return [
        LINKS.interpolate(link["url"], ctx)
        for _, link in data_links(d)
        if "(API)" in link["title"] and f"state={state}&" in link["url"] + "&"
    ]


def api_linked_panels() -> dict[str, list[dict[str, Any]]]:
    """State -> the overview panels with an API link for it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p, link in data_links(load_dashboard(DASHBOARDS_DIR / "gme-recordings-overview.json")):
        m = re.search(r"state=(\w+)", link["url"])
        if "(API)" in link["title"] and m:
            out.setdefault(m.group(1), []).append(p)
    return out


def test_every_problem_state_has_an_api_link() -> None:
    assert set(api_linked_panels()) == {"stuck", "upload_missing", "orphan", "unverified", "unannounced"}
