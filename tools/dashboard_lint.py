"""What no library checks in our dashboards: `python tools/dashboard_lint.py [--promtool P] FILE...`

grafana-foundation-sdk (dashboards/generate.py) gives every panel, option and link the shape
Grafana's schema wants, and tests/test_dashboards.py validates the output against that schema.
Neither knows what a query means. These rules do, after grafana/dashboard-linter's (same names)
and the monitoring-mixin conventions:

- every panel has a title, a description, a unit Grafana knows, and queries;
- every query uses the templated Prometheus data source, `$__rate_interval` in every rate() and
  increase(), counters only inside rate/irate/increase, and every selector the release's
  filters (cluster, namespace, job, instance; app where the metric has an app and the whole
  query is per app);
- every metric a query or a variable reads exists (`known`: the service's registry and the
  recording rules, given by the caller), and every query compiles (promtool, when given);
- the variables: templated data sources, multi-select job and instance with `.+` for All,
  refreshed when the time range changes; a stable uid.

Exit status 1 when any rule reports an error (or a warning with ``--strict``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Units Grafana knows (its valueFormats categories); the subset a monitoring dashboard uses. The
# schema types a unit as any string, so a typo would pass it.
UNITS = frozenset(
    "none short percent percentunit bytes decbytes bits kbytes mbytes gbytes Bps bps pps "
    "dateTimeAsIso dateTimeFromNow ns µs ms s m h d dtdurations dtdhms cps ops reqps rps wps iops "
    "cpm opm rpm wpm bool hertz".split()
)
QUERY_PANELS = frozenset({"stat", "table", "timeseries", "gauge", "bargauge", "heatmap"})
PROM_DS_UIDS = frozenset({"$prometheus_datasource", "${prometheus_datasource}"})
# Filters on every selector: the release and the instance.
RELEASE = ("cluster", "namespace", "job", "instance")
# What dashboard-linter substitutes for Grafana's own variables before parsing a query.
GLOBALS = {
    "$__rate_interval": "8869990787ms",
    "${__rate_interval}": "8869990787ms",
    "$__interval": "4867856611ms",
    "$__range": "6080494788ms",
    "$__range_s": "6080",
    "$__interval_ms": "4867856611",
}
RATE_INTERVAL = "8869990787ms"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # "error" or "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.rule}: {self.where}: {self.message}"


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        yield p


def templates(d: dict[str, Any]) -> list[dict[str, Any]]:
    return list(d.get("templating", {}).get("list", []))


def _uid(ds: Any) -> str:
    return ds.get("uid", "") if isinstance(ds, dict) else str(ds or "")


def expand(expr: str, d: dict[str, Any]) -> str:
    """A query with Grafana's variables replaced as dashboard-linter does: its own magic
    durations for the time variables, and a plausible value for each dashboard variable."""
    for name, value in GLOBALS.items():
        expr = expr.replace(name, value)
    for t in templates(d):
        name = t["name"]
        value = "1m" if t.get("type") == "interval" else ".+"
        expr = re.sub(r"\$\{" + name + r"(:[a-z]+)?\}|\$" + name + r"\b", value, expr)
    return expr


_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2"}
# Aggregations may put `by (...)` between their name and their parenthesis.
_AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
}
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def _closing(expr: str, i: int, open_: str, close: str) -> int:
    depth = 0
    in_string = False
    while i < len(expr):
        c = expr[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced {open_!r} in {expr!r}")


@dataclass(frozen=True)
class Selector:
    name: str | None  # None for a bare {...}
    matchers: dict[str, tuple[str, str]]  # label: (operator, value)
    start: int
    end: int  # just past the selector (its closing brace, or its name)


def selectors(expr: str) -> Iterator[Selector]:
    """Each vector selector in a PromQL expression, found by a small scanner that knows strings,
    ranges, numbers, keywords, function calls and label lists."""
    i = 0
    while i < len(expr):
        c = expr[i]
        if c == '"' or c == "'":
            end = expr.index(c, i + 1)
            i = end + 1
        elif c == "[":
            i = _closing(expr, i, "[", "]") + 1
        elif c == "{":
            end = _closing(expr, i, "{", "}")
            yield Selector(None, {m[0]: (m[1], m[2]) for m in _MATCHER.findall(expr[i + 1 : end])}, i, end + 1)
            i = end + 1
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            number = _NUMBER.match(expr, i)
            i = number.end() if number else i + 1
        elif _IDENT.match(expr, i):
            word = _IDENT.match(expr, i).group(0)  # type: ignore[union-attr]
            j = i + len(word)
            while j < len(expr) and expr[j].isspace():
                j += 1
            if word in _LABEL_LIST_KEYWORDS:
                i = _closing(expr, j, "(", ")") + 1 if j < len(expr) and expr[j] == "(" else j
            elif word in _KEYWORDS or word in _AGGREGATIONS or (j < len(expr) and expr[j] == "("):
                i = j
            elif j < len(expr) and expr[j] == "{":
                end = _closing(expr, j, "{", "}")
                yield Selector(
                    word, {m[0]: (m[1], m[2]) for m in _MATCHER.findall(expr[j + 1 : end])}, i, end + 1
                )
                i = end + 1
            else:
                yield Selector(word, {}, i, i + len(word))
                i = j
        else:
            i += 1


def _rule_template_datasource(d: dict[str, Any]) -> Iterator[Finding]:
    ds = [t for t in templates(d) if t.get("type") == "datasource"]
    if not ds:
        yield Finding("template-datasource-rule", "error", d.get("title", ""), "no templated data source")
        return
    for t in ds:
        kind = str(t.get("query", ""))
        names = {f"{kind.lower()}_datasource"} | ({"datasource"} if len(ds) == 1 else set())
        labels = {f"{kind.title()} data source"} | ({"Data source"} if len(ds) == 1 else set())
        if t["name"] not in names:
            yield Finding(
                "template-datasource-rule", "error", t["name"], f"should be named {' or '.join(sorted(names))}"
            )
        elif t.get("label") not in labels:
            yield Finding(
                "template-datasource-rule",
                "warning",
                t["name"],
                f"should be labeled {' or '.join(sorted(labels))}",
            )


def _check_template(d: dict[str, Any], name: str, rule: str) -> Iterator[Finding]:
    t = next((t for t in templates(d) if t["name"] == name), None)
    if t is None:
        yield Finding(rule, "error", d.get("title", ""), f"is missing the {name} template")
        return
    if _uid(t.get("datasource")) not in PROM_DS_UIDS:
        yield Finding(rule, "error", name, "should use the templated Prometheus data source")
    if t.get("type") != "query":
        yield Finding(rule, "error", name, "should be a Prometheus query")
    if t.get("label") != name.title():
        yield Finding(rule, "warning", name, f"should be labeled {name.title()!r}")
    if not t.get("multi"):
        yield Finding(rule, "error", name, "should be a multi select")
    if t.get("allValue") != ".+":
        yield Finding(rule, "error", name, f"allValue should be '.+', is {t.get('allValue')!r}")


_LABEL_VALUES = re.compile(r"label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)")


def _rule_template_label_promql(d: dict[str, Any], known: Callable[[str], bool]) -> Iterator[Finding]:
    for t in templates(d):
        if t.get("type") != "query":
            continue
        m = _LABEL_VALUES.fullmatch(str(t.get("query", "")).strip())
        if not m:
            yield Finding(
                "template-label-promql-rule", "error", t["name"], "not a label_values(selector, label)"
            )
            continue
        for sel in selectors(m.group(1)):
            if sel.name and not known(sel.name):
                yield Finding("template-metric-rule", "error", t["name"], f"unknown metric {sel.name}")


def _rule_on_time_change_reload(d: dict[str, Any]) -> Iterator[Finding]:
    for t in templates(d):
        if t.get("type") == "query" and t.get("refresh") != 2:
            yield Finding(
                "template-on-time-change-reload-rule",
                "error",
                t["name"],
                "should refresh on time range change (refresh: 2)",
            )


def _targets(p: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in p.get("targets", []) if "expr" in t]


def _rule_panels(d: dict[str, Any]) -> Iterator[Finding]:
    for p in panels(d):
        where = f"panel {p.get('title')!r}"
        kind = p.get("type")
        if kind == "row":
            continue
        if kind in QUERY_PANELS and _uid(p.get("datasource")) not in PROM_DS_UIDS:
            yield Finding("panel-datasource-rule", "error", where, "does not use the templated data source")
        if not (p.get("title") or "").strip() or not (p.get("description") or "").strip():
            yield Finding("panel-title-description-rule", "error", where, "needs a title and a description")
        if kind in QUERY_PANELS:
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            if unit not in UNITS:
                yield Finding("panel-units-rule", "error", where, f"no or invalid unit {unit!r}")
        if kind in QUERY_PANELS and not p.get("targets"):
            yield Finding("panel-no-targets-rule", "error", where, "has no queries")


def _rule_targets(
    d: dict[str, Any], known: Callable[[str], bool], app_labelled: Callable[[str], bool]
) -> Iterator[Finding]:
    has_app = any(t["name"] == "app_id" for t in templates(d))
    for p in panels(d):
        for t in _targets(p):
            where = f"panel {p.get('title')!r} query {t.get('refId')}"
            expr = expand(t["expr"], d)
            for fn in re.finditer(r"\b(i?rate)\s*\(", expr):
                body = expr[fn.end() - 1 : _closing(expr, fn.end() - 1, "(", ")") + 1]
                ranges = re.findall(r"\[([^\]:]+)(?::[^\]]*)?\]", body)
                if any(r != RATE_INTERVAL for r in ranges):
                    yield Finding(
                        "target-rate-interval-rule",
                        "error",
                        where,
                        f"{fn.group(1)}() should use $__rate_interval",
                    )
            raw = t["expr"]
            found = list(selectors(raw))
            # A query that also reads a metric without app (an SLO's denominator) is the
            # release's figure: no app filter in it anywhere (tests/test_dashboards.py checks).
            per_app = has_app and all(sel.name and app_labelled(sel.name) for sel in found)
            for sel in found:
                if sel.name and not known(sel.name):
                    yield Finding("target-metric-rule", "error", where, f"unknown metric {sel.name}")
                wanted = [*RELEASE, "app_id"] if per_app else RELEASE
                for label in wanted:
                    if sel.matchers.get(label) != ("=~", f"${label}"):
                        yield Finding(
                            f"target-{label.removesuffix('_id')}-rule",
                            "error",
                            where,
                            f'{sel.name or "selector"} lacks {label}=~"${label}"',
                        )
                if sel.name and sel.name.endswith("_total"):
                    metric = sel.name
                    before = raw[: sel.start].rstrip()
                    after = raw[sel.end :].lstrip()
                    if not (re.search(r"\b(rate|irate|increase)\s*\($", before) and after.startswith("[")):
                        yield Finding(
                            "target-counter-agg-rule",
                            "error",
                            where,
                            f"counter {metric} is not inside rate, irate or increase",
                        )


def _rule_promql(d: dict[str, Any], promtool: str) -> Iterator[Finding]:
    """Every query and every label_values() selector compiles, checked by promtool."""
    exprs: list[tuple[str, str, str]] = []
    for p in panels(d):
        for t in _targets(p):
            exprs.append(
                ("target-promql-rule", f"panel {p.get('title')!r} query {t.get('refId')}", expand(t["expr"], d))
            )
    for t in templates(d):
        m = _LABEL_VALUES.fullmatch(str(t.get("query", "")).strip())
        if t.get("type") == "query" and m:
            exprs.append(("template-label-promql-rule", t["name"], expand(m.group(1), d)))
    if not exprs or _compiles([e for _, _, e in exprs], promtool) is None:
        return  # one promtool run for the whole dashboard when all is well
    for rule, where, expr in exprs:
        message = _compiles([expr], promtool)
        if message is not None:
            yield Finding(rule, "error", where, f"invalid PromQL: {message}")


def _compiles(exprs: list[str], promtool: str) -> str | None:
    """None when promtool compiles every expression (as recording rules), else its complaint."""
    doc = {
        "groups": [
            {
                "name": "lint",
                "rules": [{"record": f"lint:query_{i}:check", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(doc, f)
    try:
        out = subprocess.run(  # noqa: S603
            [promtool, "check", "rules", f.name],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        Path(f.name).unlink()
    if out.returncode == 0:
        return None
    return (out.stderr or out.stdout).strip().splitlines()[-1]


def _everything(name: str) -> bool:
    return True


def _nothing(name: str) -> bool:
    return False


def lint(
    d: dict[str, Any],
    promtool: str | None = None,
    known: Callable[[str], bool] = _everything,
    app_labelled: Callable[[str], bool] = _nothing,
) -> list[Finding]:
    """The findings on dashboard `d`. `known(metric)` says whether a metric exists (default:
    all do), `app_labelled(metric)` whether it has an app_id label (default: none has)."""
    found = [
        *_rule_template_datasource(d),
        *_check_template(d, "job", "template-job-rule"),
        *_check_template(d, "instance", "template-instance-rule"),
        *_rule_template_label_promql(d, known),
        *_rule_on_time_change_reload(d),
        *_rule_panels(d),
        *_rule_targets(d, known, app_labelled),
    ]
    if not re.fullmatch(r"[a-z0-9-]{3,40}", d.get("uid") or ""):
        found.append(Finding("dashboard-uid-rule", "error", d.get("title", ""), "uid missing or unstable"))
    for name in RELEASE:
        if not any(t["name"] == name for t in templates(d)):
            found.append(Finding("template-release-rule", "error", d.get("title", ""), f"no `{name}` variable"))
    if promtool:
        found.extend(_rule_promql(d, promtool))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--promtool", help="path of promtool, to check that queries parse")
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    args = parser.parse_args(argv)
    failed = False
    for path in args.files:
        for f in lint(json.loads(path.read_text(encoding="utf-8")), args.promtool):
            print(f"{path}: {f}")
            failed |= f.severity == "error" or args.strict
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
