"""Three replicas on one Redis, scraped by a real Prometheus, give the single-process answers.

The same callbacks go to an in-memory process (job `single`) and, spread over the replicas, to
three Redis-backed ones (job `gme-recwatch`). Every shipped alert that fires for one job fires
for the other with the same labels and value, and every dashboard query on state gauges returns
the same numbers for both.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer, require_tool

from .conftest import RunningService, callback_body, start_service
from .prometheus import PrometheusServer, shorten_rules
from .test_prometheus_e2e import REPLACE, RULE_FILES, _dashboard_queries

pytestmark = pytest.mark.e2e

DEADLINES = {
    "GME_RECWATCH_MAX_RECORDING_SECONDS": "3",
    "GME_RECWATCH_UPLOAD_GRACE_SECONDS": "3",
    "GME_RECWATCH_REORDER_WINDOW_SECONDS": "2",
    "GME_RECWATCH_LOG_LEVEL": "info",
}
# The one in-memory process, scraped as another job the rules' selector also matches.
SINGLE = "single-gme-recwatch"
# No COS bucket here: the stuck and missing segments are unconfirmed misses, one ticket per app
# counting them (#31); the alerts of confirmed misses stay quiet for both jobs.
LIFECYCLE_ALERTS = ("GmeRecordingMissesUnconfirmed",)
CONFIRMED_ONLY = ("GmeRecordingStuck", "GmeRecordingUploadsMissing", "GmeRecordingDeliveryBudgetBurn")
# Both jobs have counted every problem of the scenario: two stuck, one missing upload.
ALL_PROBLEMS_COUNTED = (
    'count(sum by (job) (gme_recording_problem_segments_total{state="stuck"}) == 2'
    ' and on (job) sum by (job) (gme_recording_problem_segments_total{state="upload_missing"}) == 1) == 2'
)


@pytest.fixture(scope="module")
def both(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[RunningService, list[RunningService], PrometheusServer]]:
    require_tool("prometheus")
    tmp: Path = tmp_path_factory.mktemp("prom-replicas")
    single = start_service(tmp, **DEADLINES)
    shared = {
        **DEADLINES,
        "GME_RECWATCH_REDIS_URL": redis_server.url,
        "GME_RECWATCH_REDIS_PREFIX": f"prom-{uuid.uuid4().hex[:8]}:",
    }
    replicas = [start_service(tmp, **shared) for _ in range(3)]
    prom = None
    try:
        rules = shorten_rules(RULE_FILES, tmp / "rules", for_duration="1s", replace=REPLACE)
        prom = PrometheusServer(
            [f"127.0.0.1:{r.admin_port}" for r in replicas],
            rules,
            tmp / "prom",
            more_jobs={SINGLE: [f"127.0.0.1:{single.admin_port}"]},
        )
        prom.start()
        prom.wait_for("count(up == 1) == 4")
        _deliver_the_same_to_both(single, replicas, prom)
        yield single, replicas, prom
    finally:
        if prom is not None:
            prom.stop()
        for svc in (single, *replicas):
            svc.stop()


def _deliver_the_same_to_both(
    single: RunningService, replicas: list[RunningService], prom: PrometheusServer
) -> None:
    now = int(time.time())
    sends = [
        (1, "r-stuck", 1, now),
        (1, "r-missing", 2, now - 120),
        (2, "r-missing", 2, now - 20),
        (1, "r-ok", 3, now - 600),
        (2, "r-ok", 3, now - 60),
        (3, "r-ok", 3, now),
        (3, "r-orphan", 4, now),
        (1, "r-stuck-2", 5, now),
    ]
    # The per-app series appear with the first callback: scrape them at zero first.
    first, *rest = sends
    for target in (single, replicas[0]):
        body = callback_body(first[0], room=first[1], task=446946705284000000 + first[2], ts=first[3])
        assert target.post(body).status_code == 200
    prom.wait_for("count(gme_recording_segments_completed_total == 0) == 4")
    time.sleep(1.5)
    for i, (event, room, task, ts) in enumerate(rest):
        body = callback_body(event, room=room, task=446946705284000000 + task, ts=ts)
        assert single.post(body).status_code == 200
        assert replicas[(i + 1) % 3].post(body).status_code == 200


def _firing(
    prom: PrometheusServer, job: str, names: tuple[str, ...] = LIFECYCLE_ALERTS
) -> dict[tuple[str, str], str]:
    return {
        (a["labels"]["alertname"], a["labels"].get("app_id", "")): a["value"]
        for a in prom.alerts()
        if a["state"] == "firing" and a["labels"].get("job") == job and a["labels"]["alertname"] in names
    }


def test_lifecycle_alerts_of_three_replicas_are_those_of_one_process(
    both: tuple[RunningService, list[RunningService], PrometheusServer],
) -> None:
    _, _, prom = both
    prom.wait_for(ALL_PROBLEMS_COUNTED, timeout=60)
    for job in (SINGLE, "gme-recwatch"):
        for name in LIFECYCLE_ALERTS:
            prom.wait_for_alert(name, timeout=60, labels={"job": job})
    time.sleep(2)  # one more evaluation after the last problem was scraped
    single, replicated = _firing(prom, SINGLE), _firing(prom, "gme-recwatch")
    # Per app.
    assert set(single) == {(name, "1400000000") for name in LIFECYCLE_ALERTS}
    assert set(replicated) == set(single)  # one alert each, no more
    for key, value in single.items():
        # increase()s of per-replica counters: Prometheus extrapolates each replica's series
        # from its own first sample, so they are close, not equal: the same number of segments.
        assert round(float(replicated[key])) == round(float(value)) >= 3, (key, value, replicated[key])
    assert not _firing(prom, SINGLE, CONFIRMED_ONLY) and not _firing(prom, "gme-recwatch", CONFIRMED_ONLY)


def _normalised(result: list[dict[str, object]]) -> list[tuple[tuple[tuple[str, str], ...], str]]:
    """The (labels, value) pairs, without job and instance; a per-instance panel's identical
    lines (one per replica, the same shared value) count once."""
    out = set()
    for item in result:
        labels = {k: v for k, v in item["metric"].items() if k not in ("job", "instance")}  # type: ignore[union-attr]
        out.add((tuple(sorted(labels.items())), item["value"][1]))  # type: ignore[index]
    return sorted(out)


def test_dashboard_state_queries_give_the_single_process_numbers(
    both: tuple[RunningService, list[RunningService], PrometheusServer],
) -> None:
    _, _, prom = both
    prom.wait_for(ALL_PROBLEMS_COUNTED, timeout=60)
    time.sleep(2)  # one more scrape of both after the last transition
    compared = 0
    for dash, title, expr in _dashboard_queries():
        if re.search(
            r"rate\(|increase\(|time\(\)|_bucket|build_info|process_|http_|keyring|snapshot|up\{", expr
        ):
            continue  # timing, per-process or per-replica series: equal only by accident
        one = _normalised(prom.query(expr.replace('job=~"gme-recwatch"', f'job=~"{SINGLE}"')))
        three = _normalised(prom.query(expr))
        assert one == three, (dash, title, expr, one, three)
        compared += 1 if one else 0
    assert compared >= 6  # the stat, table and graph panels of the state gauges
