"""Writes the promtool tests of the SLO burn alerts: `python dashboards/slo_tests.py`.

Generated from the one SLO definition in rules.py (:data:`rules.BURNS`, :data:`rules.KNOBS`):
for each SLO and each window pair, a steady burn just above the pair's factor (and under every
faster pair's, so no other pair can be the one that fires) must fire the pair's alert, not one
evaluation before the pair's windows allow; a burn just under the slowest pair's factor must
never fire; the same burn under each pair's minimum events must never fire; and the burn must
resolve one short window after the errors stop. The expected minutes are computed here from the
windows and factors (the errors needed in the long window), not taken from a run.

Written to dashboards/tests/alerts-slo.test.yaml.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rules  # noqa: E402  (beside this script: the one SLO definition)

# The page windows evaluated every 5 minutes, the ticket windows (days) every 30: each in its
# own file, as promtool's evaluation interval is per file (hours at one minute take minutes).
OUT = {
    "page": HERE / "tests" / "alerts-slo.test.yaml",
    "ticket": HERE / "tests" / "alerts-slo-ticket.test.yaml",
}
STEP = {"page": 5, "ticket": 30}
JOB = 'job="gme-recwatch", namespace="prod", instance="10.0.0.7:8081"'
ALERT = {
    ("ingest", "page"): "GmeRecwatchIngestBudgetBurn",
    ("ingest", "ticket"): "GmeRecwatchIngestBudgetBurnSlow",
    ("delivery", "page"): "GmeRecordingDeliveryBudgetBurn",
    ("delivery", "ticket"): "GmeRecordingDeliveryBudgetBurnSlow",
}
SLACK = 1  # evaluations past a resolution (promtool's increase() extrapolates a step)


def minutes(duration: str) -> int:
    n, unit = int(duration[:-1]), duration[-1]
    return n * {"m": 1, "h": 60, "d": 1440}[unit]


def window(role: str) -> int:
    return minutes(str(rules.KNOBS[role][1]))


def series(slo: str, step: int, total: int, per_step: float, bad: list[float]) -> list[dict[str, str]]:
    """Cumulative counters for `total` steps: `per_step` events a step, `bad[i]` of them errors."""
    good_vals, bad_vals, g, b = [], [], 0.0, 0.0
    for i in range(total + 1):
        good_vals.append(g)
        bad_vals.append(b)
        e = bad[i] if i < len(bad) else 0.0
        g += per_step - e
        b += e
    enc = lambda vs: " ".join(f"{v:g}" for v in vs)  # noqa: E731
    if slo == "ingest":
        http = 'listener="callback", route="/callback", method="POST"'
        return [
            {
                "series": f'gme_recording_http_requests_total{{{JOB}, {http}, code="200"}}',
                "values": enc(good_vals),
            },
            {
                "series": f'gme_recording_http_requests_total{{{JOB}, {http}, code="500"}}',
                "values": enc(bad_vals),
            },
            {
                "series": f'gme_recording_signature_failures_total{{{JOB}, reason="mismatch"}}',
                "values": f"0x{total}",
            },
            {
                "series": f'gme_recording_callbacks_invalid_total{{{JOB}, reason="stale"}}',
                "values": f"0x{total}",
            },
        ]
    app = 'app_id="1400000000"'
    return [
        {
            "series": f"gme_recording_callbacks_total{{{JOB}, {app}, "
            'event_type="uploaded", result="accepted"}',
            "values": enc(good_vals),
        },
        {"series": f"gme_recording_segments_reconciled_total{{{JOB}}}", "values": f"0x{total}"},
        {
            "series": f"gme_recording_problem_segments_total{{{JOB}, {app}, "
            'state="upload_missing", confirmed="true"}',
            "values": enc(bad_vals),
        },
    ]


def test(
    slo: str,
    kind: str,
    name: str,
    step: int,
    total: int,
    rate: float,
    bad: list[float],
    checks: list[tuple[int, bool]],
) -> dict[str, Any]:
    alert = ALERT[(slo, kind)]
    severity = rules.BURNS[kind][0]
    labels = (
        f'alertname="{alert}", alertstate="firing", job="gme-recwatch", namespace="prod", '
        f'severity="{severity}", slo="{slo}"'
    )
    return {
        "name": f"{alert}: {name}",
        "interval": f"{step}m",
        "input_series": series(slo, step, total, rate * step, bad),
        # ALERTS, not alert_rule_test: the description carries the burn's value, which is not
        # what these tests are about.
        "promql_expr_test": [
            {
                "expr": f'ALERTS{{alertname="{alert}", alertstate="firing"}}',
                "eval_time": f"{m}m",
                "exp_samples": [{"labels": f"ALERTS{{{labels}}}", "value": 1}] if firing else [],
            }
            for m, firing in checks
        ],
    }


def pair_tests(slo: str, kind: str) -> list[dict[str, Any]]:
    budget = 1 - float(rules.KNOBS[f"{slo}_objective"][1])
    pairs = rules.BURNS[kind][2]
    for_ = minutes(rules.BURNS[kind][1])
    out = []
    # Coarse steps where exactness allows: the ticket windows are days long.
    step = STEP[kind]
    for i, b in enumerate(pairs):
        long_m, short_m = window(b.long), window(b.short)
        faster = pairs[i - 1].factor if i else None
        # Just above this pair's factor, under the faster pair's.
        burn = b.factor * 1.5 if faster is None else (b.factor + faster) / 2
        ratio = burn * budget
        # Events a minute: ten times the minimum over the long window.
        rate = 10 * b.min_events / long_m
        clean = max(window(p.long) for p in pairs)  # a full clean history for every pair
        # The long window's ratio crosses the factor after `need` minutes of burning.
        need = math.ceil(long_m * b.factor / burn)
        lasts = need + for_ + 4 * step + short_m
        total_m = clean + lasts + max(window(p.short) for p in pairs) + 6 * step
        onset, stop = clean, clean + lasts
        bad = [0.0 if not onset <= k * step < stop else ratio * rate * step for k in range(total_m // step + 1)]
        # The first evaluation past the crossing finds it; `for` holds it one evaluation more
        # (each `for` here is under the step).
        fires = _at(onset + need, step) + step + (step if for_ else 0)
        checks = [
            (fires - step, False),
            (fires, True),
            (_at(stop, step), True),
            # Resolved once every pair's short window has passed the burn (a long burn of one
            # pair spends what a slower pair also sees).
            (_at(stop + max(window(p.short) for p in pairs) + SLACK * step + step, step), False),
        ]
        out.append(
            test(
                slo,
                kind,
                f"{burn:g}x over {b.long}/{b.short} ({rules.KNOBS[b.long][1]}/{rules.KNOBS[b.short][1]}) "
                f"fires about {need + for_} min after it starts, resolves a short window after it stops",
                step,
                total_m // step,
                rate,
                bad,
                checks,
            )
        )
        # The same burn under the pair's minimum events never fires (nor any other pair's).
        low = 0.5 * min(p.min_events / window(p.long) for p in pairs)
        out.append(
            test(
                slo,
                kind,
                f"the same burn under {b.min_events} events in {rules.KNOBS[b.long][1]} never fires",
                step,
                total_m // step,
                low,
                [
                    0.0 if not onset <= k * step < stop else ratio * low * step
                    for k in range(total_m // step + 1)
                ],
                [(_at(fires + SLACK * step, step), False), (_at(stop, step), False)],
            )
        )
    slowest = pairs[-1]
    under = slowest.factor * 0.8 * budget
    long_m = window(slowest.long)
    rate = 10 * slowest.min_events / long_m
    total_m = 2 * long_m
    out.append(
        test(
            slo,
            kind,
            f"{slowest.factor * 0.8:g}x, under every pair's factor, never fires however long it lasts",
            step,
            total_m // step,
            rate,
            [under * rate * step] * (total_m // step + 1),
            [(_at(long_m, step), False), (_at(total_m, step), False)],
        )
    )
    return out


def _at(m: int, step: int) -> int:
    return (m // step) * step


def header(kind: str) -> str:
    return (
        f"# promtool unit tests of the SLO {kind} burn alerts, every window pair of rules.BURNS,\n"
        "# written by dashboards/slo_tests.py (edit there, never here):\n"
        f"#   promtool test rules dashboards/tests/{OUT[kind].name}\n"
    )


def render(kind: str) -> str:
    doc = {
        **rules.promtool_file(f"{STEP[kind]}m"),
        "tests": [t for slo in rules.SLOS for t in pair_tests(slo, kind)],
    }
    return header(kind) + yaml.safe_dump(doc, sort_keys=False, width=1000)


def main() -> int:
    for kind, path in OUT.items():
        path.write_text(render(kind), encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
