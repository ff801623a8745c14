"""Grafana's variable interpolation, for testing the dashboards' links without a Grafana.

What Grafana does to a data link or dashboard link URL before the browser follows it
(public/app/features/templating/template_srv.ts and @grafana/scenes' formatRegistry): every
`$var`, `${var}`, `${var:format}` and `[[var]]` is replaced by the variable's current value in
that format; the built-in `__from`, `__to`, `__url_time_range` and `__org`, and a data link's
`__field.labels.<name>`, are filled in from the time range and the series clicked on. Only the
formats our links use or could use are here; an unknown format is an error, not a guess.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

ALL_TEXT = "All"
ALL_VALUE = "$__all"


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current state: its selected values, or All (with its custom
    `allValue` when the variable has one, else every option's value)."""

    values: tuple[str, ...]
    all_value: str | None = None
    is_all: bool = False


def encode_strict(value: str) -> str:
    """JavaScript's encodeURIComponent, plus !'()* as Grafana's encodeURIComponentStrict."""
    return urllib.parse.quote(value, safe="-_.~")


def _regex_escape(value: str) -> str:
    # Grafana's escapeRegex (app/core/utils/kbn): the characters special in a regex.
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value)


def format_value(name: str, var: Variable, fmt: str | None) -> str:
    values = list(var.values)
    if var.is_all and var.all_value is not None:
        # A custom all value is inserted as it is, except for these formats.
        if fmt == "text":
            return ALL_TEXT
        if fmt == "percentencode":
            return encode_strict(var.all_value)
        if fmt == "queryparam":
            return f"var-{name}={ALL_TEXT}"
        return var.all_value
    multi = len(values) != 1
    if fmt in (None, "glob"):
        return "{" + ",".join(values) + "}" if multi else values[0]
    if fmt == "raw":
        return ",".join(values)
    if fmt == "regex":
        escaped = [_regex_escape(v) for v in values]
        return "(" + "|".join(escaped) + ")" if multi else escaped[0]
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "json":
        return json.dumps(values if multi else values[0], separators=(",", ":"))
    if fmt == "percentencode":
        return encode_strict("{" + ",".join(values) + "}" if multi else values[0])
    if fmt == "queryparam":
        return "&".join(f"var-{name}={encode_strict(v)}" for v in values)
    if fmt == "text":
        return " + ".join(values)
    raise ValueError(f"format {fmt!r} of ${{{name}}} is not one this interpolator knows")


def _format_scalar(value: str, fmt: str | None) -> str:
    """A built-in or a series' label: one value."""
    return format_value("", Variable((value,)), fmt)


# ${name}, ${name:format}, $name, [[name]], [[name:format]] (Grafana's variableRegex).
_REFERENCE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{([\w.]+?)(?::([^}]+))?\}")


@dataclass(frozen=True)
class Context:
    """What a link is interpolated with: the dashboard's variables, the time range (epoch
    milliseconds), the organisation, and the clicked series' labels (data links only)."""

    variables: Mapping[str, Variable]
    time_from: int = 1_700_000_000_000
    time_to: int = 1_700_003_600_000
    org: int = 1
    labels: Mapping[str, str] | None = None


def interpolate(template: str, ctx: Context) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name == "__from":
            return _format_scalar(str(ctx.time_from), fmt)
        if name == "__to":
            return _format_scalar(str(ctx.time_to), fmt)
        if name == "__url_time_range":
            return f"from={ctx.time_from}&to={ctx.time_to}"
        if name == "__org":
            return str(ctx.org)
        if name.startswith("__field.labels."):
            if ctx.labels is None:
                raise ValueError(f"${{{name}}} outside a data link")
            # A series without the label gives the empty string, as in Grafana.
            return _format_scalar(ctx.labels.get(name.removeprefix("__field.labels."), ""), fmt)
        if name not in ctx.variables:
            raise ValueError(f"${{{name}}} is no variable of the dashboard")
        return format_value(name, ctx.variables[name], fmt)

    return _REFERENCE.sub(one, template)


def references(template: str) -> list[tuple[str, str | None]]:
    """(name, format) of every variable reference in `template`."""
    return [
        (m.group(1) or m.group(2) or m.group(4), m.group(3) or m.group(5))
        for m in _REFERENCE.finditer(template)
    ]


# RFC 3986: what may appear in a URL unescaped (unreserved, reserved) plus percent-escapes.
_URL_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


def url_problems(url: str) -> list[str]:
    """Why `url` is not a valid URL (RFC 3986 characters; a path or an absolute http(s) URL);
    empty when it is."""
    problems = []
    if not _URL_CHARS.fullmatch(url):
        rest = re.sub(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2}", "", url)
        problems.append(f"characters not allowed in a URL: {sorted(set(rest))}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("", "http", "https") or (parts.scheme and not parts.netloc):
        problems.append(f"not a path or an http(s) URL: {url[:80]}")
    if not parts.scheme and not url.startswith("/"):
        problems.append(f"a relative URL that is not a path: {url[:80]}")
    return problems


# A LogQL stream selector and label filters: name, operator, double-quoted Go string.
_GO_STRING = r'"(?:[^"\\]|\\[abfnrtv\\"]|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4})*"'
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(" + _GO_STRING + r")\s*")


def loki_selector_problems(logql: str) -> list[str]:
    """Why Loki would refuse the stream selector `{...}` that starts `logql` and the
    `| label="value"` filters after it; empty when it accepts them. Loki parses each matcher
    (a label name, an operator, a Go string literal; a regex must compile) and refuses a
    selector whose every matcher matches the empty string ("queries require at least one
    regexp or equality matcher that does not have an empty-compatible value")."""
    m = re.match(r"\{(.*?)\}(.*)", logql, re.S)
    if not m:
        return [f"no stream selector: {logql!r}"]
    body, pipeline = m.groups()
    problems: list[str] = []
    non_empty = False
    for part in _split_matchers(body):
        mm = _MATCHER.fullmatch(part)
        if not mm:
            problems.append(f"malformed matcher {part!r}")
            continue
        name, op, quoted = mm.groups()
        value = json.loads(quoted)  # a Go string without \x escapes is a JSON string
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)
            except re.error as e:
                problems.append(f"{name}{op}{quoted}: {e}")
                continue
            matches_empty = pattern.fullmatch("") is not None
        else:
            matches_empty = value == ""
        if op in ("=", "=~") and not matches_empty:
            non_empty = True
    if not non_empty:
        problems.append("every matcher matches the empty string: Loki refuses the selector")
    for stage in pipeline.split("|")[1:]:
        stage = stage.strip()
        if stage in ("json", "logfmt"):
            continue
        if not _MATCHER.fullmatch(stage):
            problems.append(f"malformed pipeline stage {stage!r}")
    return problems


def _split_matchers(body: str) -> list[str]:
    """The comma-separated matchers of a selector, commas inside strings left alone."""
    parts, current, in_string, escaped = [], "", False, False
    for c in body:
        if c == "," and not in_string:
            parts.append(current)
            current = ""
            continue
        current += c
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_string = not in_string
    return [*parts, current] if current.strip() or parts else []
