"""The shipped rules and inhibit rules as an on-call meets them: a real Prometheus scraping real
services, a real Alertmanager with dashboards/alertmanager-inhibit.yaml.

- Scanners knocking on the public port all day, beside healthy traffic, page nobody.
- Two releases (namespaces prod and staging) in one Prometheus: each alert carries its namespace,
  and a cause firing in staging mutes staging's consequences only, never production's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ROOT, require_tool

from .conftest import RunningService, callback_body, start_service
from .prometheus import AlertmanagerServer, PrometheusServer, shorten_rules
from .test_prometheus_e2e import RULE_FILES

pytestmark = pytest.mark.e2e
INHIBIT = yaml.safe_load((ROOT / "dashboards" / "alertmanager-inhibit.yaml").read_text())


def _healthy_lifecycle(svc: RunningService, i: int) -> None:
    now = int(time.time())
    for event, ts in ((1, now - 300), (2, now - 10), (3, now)):
        assert svc.send(event, room=f"ok-{i}", user="u", task=446946705284100000 + i, ts=ts).status_code == 200


def _scan(svc: RunningService, n: int) -> None:
    """What the internet sends a public port: no Signature, odd paths, junk bodies."""
    with httpx.Client(timeout=5) as client:
        for i in range(n):
            r = client.post(svc.callback_url, content=b'{"hello": "world"}')
            assert r.status_code == 401
            if i % 10 == 0:
                assert client.get(svc.callback_url.replace("/callback", "/wp-login.php")).status_code == 404


def test_scanners_beside_healthy_traffic_page_nobody(tmp_path: Path) -> None:
    require_tool("prometheus")
    svc = start_service(tmp_path)
    try:
        rules = shorten_rules(RULE_FILES, tmp_path / "rules", for_duration="1s")
        with PrometheusServer(f"127.0.0.1:{svc.admin_port}", rules, tmp_path / "prom") as prom:
            prom.wait_for('up{job="gme-recwatch"} == 1')
            for round_ in range(6):
                _scan(svc, 60)
                _healthy_lifecycle(svc, round_)
                time.sleep(1)
            # Enough scans to have tripped the old rules, seen by Prometheus: noise, not a sender.
            prom.wait_for('sum(gme_recording_noise_requests_total{reason="not_a_callback"}) >= 360')
            time.sleep(3)  # a few more evaluations, every `for:` being 1 s
            assert prom.alerts() == []
            assert all(h == "ok" for _, h, _ in prom.rule_health()), prom.rule_health()
    finally:
        svc.stop()


def _inhibited_by(am: AlertmanagerServer) -> dict[tuple[str, str], list[str]]:
    return {
        (a["labels"]["alertname"], a["labels"].get("namespace", "")): a["status"]["inhibitedBy"]
        for a in am.alerts()
    }


def _wait_am(
    am: AlertmanagerServer, want: set[tuple[str, str]], timeout: float = 60
) -> dict[tuple[str, str], list[str]]:
    deadline = time.monotonic() + timeout
    seen: dict[tuple[str, str], list[str]] = {}
    while time.monotonic() < deadline:
        seen = _inhibited_by(am)
        if want <= set(seen):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"Alertmanager never had {want - set(seen)}; it had {sorted(seen)}")


def test_two_releases_alert_apart_and_never_inhibit_each_other(tmp_path: Path) -> None:
    require_tool("prometheus")
    am_binary = require_tool("prometheus-alertmanager")
    deadlines = {"GME_RECWATCH_MAX_RECORDING_SECONDS": "4"}
    (tmp_path / "prod").mkdir()
    (tmp_path / "staging").mkdir()
    prod = start_service(tmp_path / "prod", **deadlines)
    staging = start_service(tmp_path / "staging", **deadlines)
    config: dict[str, Any] = {
        "route": {"receiver": "null", "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "null"}],
        "inhibit_rules": INHIBIT["inhibit_rules"],
    }
    try:
        rules = shorten_rules(RULE_FILES, tmp_path / "rules", for_duration="1s")
        targets = {
            f"127.0.0.1:{prod.admin_port}": {"namespace": "prod"},
            f"127.0.0.1:{staging.admin_port}": {"namespace": "staging"},
        }
        with (
            AlertmanagerServer(config, tmp_path / "am", am_binary) as am,
            PrometheusServer(
                list(targets), rules, tmp_path / "prom", target_labels=targets, alertmanager=am.address
            ) as prom,
        ):
            prom.wait_for('count(up{job="gme-recwatch"} == 1) == 2')
            # Both releases get a segment that will be stuck (its app's counters are scraped at
            # zero first, so the increase is seen); only staging's SecretKey was rotated.
            for svc in (prod, staging):
                assert svc.send(1, room="r-stuck", user="u").status_code == 200
            # Staging's completion of its segment is refused (the key was rotated in the console):
            # that one segment is attributed to us, before its deadline passes.
            r = staging.post(callback_body(2, room="r-stuck", user="u"), secret="rotated-in-the-console")
            assert r.status_code == 401
            prom.wait_for("count(gme_recording_stuck_total == 0) == 2")
            for i in range(30):
                r = staging.post(callback_body(1, room=f"bad-{i}"), secret="rotated-in-the-console")
                assert r.status_code == 401
            ratio = prom.wait_for_alert("GmeRecordingSignatureFailureRatio", timeout=60)
            assert ratio["labels"]["namespace"] == "staging"
            stuck = {
                a["labels"]["namespace"]
                for a in prom.alerts()
                if a["labels"]["alertname"] == "GmeRecordingMissesUnconfirmed" and a["state"] == "firing"
            }
            deadline = time.monotonic() + 60
            while stuck != {"prod"} and time.monotonic() < deadline:
                time.sleep(0.5)
                stuck = {
                    a["labels"]["namespace"]
                    for a in prom.alerts()
                    if a["labels"]["alertname"] == "GmeRecordingMissesUnconfirmed" and a["state"] == "firing"
                }
            # Staging's stuck segment follows from its own rotated key, a loss of our own making:
            # the refused completion marked that segment (unverified, no ticket); production's
            # key is fine, its ticket fires. No release-wide quiet: only the segment it named.
            assert stuck == {"prod"}
            # Only staging's signature alerts: production's keys are fine.
            fired = {
                (a["labels"]["alertname"], a["labels"]["namespace"])
                for a in prom.alerts()
                if a["labels"]["alertname"].startswith("GmeRecordingSignature")
            }
            assert {ns for _, ns in fired} == {"staging"}
            seen = _wait_am(
                am,
                {("GmeRecordingSignatureFailureRatio", "staging"), ("GmeRecordingMissesUnconfirmed", "prod")},
            )
            # Staging's cause mutes nothing of production's: its stuck segment is its own problem.
            assert seen[("GmeRecordingMissesUnconfirmed", "prod")] == []
            assert seen[("GmeRecordingSignatureFailureRatio", "staging")] == []
    finally:
        prod.stop()
        staging.stop()
