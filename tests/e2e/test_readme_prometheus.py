"""The README's "See it in Prometheus": its configuration (scrape interval, the shipped rule
files, the job) with a real Prometheus beside `make run`'s service, then the README's simulator:
the alert the README names for the demo's stuck and missing uploads fires. Without a COS bucket
they are unconfirmed misses (#31): a ticket, and the pages of confirmed misses stay quiet."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import ROOT, require_tool
from test_readme import README, blocks, readme_simulate_args

from .conftest import RunningService
from .prometheus import PrometheusServer


def readme_prometheus_config() -> dict[str, object]:
    (block,) = [b for b in blocks(README, "yaml") if "rule_files" in b and "scrape_configs" in b]
    return dict(yaml.safe_load(block))


def readme_prometheus_alerts() -> tuple[str, list[str]]:
    """The alert the README says fires after its simulator, and the ones it says page only with
    a bucket."""
    text = " ".join(README.split("shows\n`", 1)[1].split("runs these steps")[0].split())
    fires = text.split("`", 1)[0]
    with_bucket = text.split("page instead, as ", 1)[1]
    return fires, [w for w in with_bucket.split("`")[1::2] if w.startswith("Gme")]


def test_the_readme_prometheus_steps_show_the_demo_alerts_firing(
    service_factory: object, tmp_path: Path
) -> None:
    binary = require_tool("prometheus")
    config = readme_prometheus_config()
    glob = config["global"]
    assert isinstance(glob, dict)
    interval = glob["scrape_interval"]
    assert interval == glob["evaluation_interval"] == "15s"  # not Prometheus's 1m default
    (job,) = config["scrape_configs"]  # type: ignore[misc]
    assert job["static_configs"] == [{"targets": ["localhost:8081"]}]  # where `make run` listens
    (pattern,) = config["rule_files"]  # type: ignore[misc]
    rules = sorted(ROOT.glob(pattern))  # relative to the file, saved in the checkout
    assert rules == sorted((ROOT / "dashboards" / "rules").glob("*.yaml")) and rules

    svc: RunningService = service_factory("--demo", GME_RECWATCH_SECRET_KEY="")  # type: ignore[operator]
    with PrometheusServer(
        f"127.0.0.1:{svc.admin_port}",
        rules,
        tmp_path / "prom",
        job=job["job_name"],
        interval=interval,
        binary=binary,
    ) as prom:
        assert all(health != "err" for _, health, _ in prom.rule_health()), prom.rule_health()
        prom.wait_for('up{job="gme-recwatch"} == 1', timeout=60)  # watching before the simulator
        args = readme_simulate_args()
        args[args.index("--url") + 1] = svc.callback_url
        # A seed whose plan has both problems (a fresh one each run otherwise). No bad signatures:
        # today five in 5 minutes count as an own loss and mute these alerts for 7 h
        # (job:gme_recording_own_losses:present5m), which #26 replaces.
        args[args.index("--bad-signature-fraction") + 1] = "0"
        args += ["--seed", "0"]
        started = time.monotonic()
        r = subprocess.run(
            [str(Path(sys.executable).with_name("gme-recwatch")), "simulate", *args, "--expected-file", ""],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr
        ends = json.loads(r.stdout)["expected_end_states"]
        assert ends["stuck"] > 0 and ends["upload_missing"] > 0, ends
        fires, paging_with_a_bucket = readme_prometheus_alerts()
        assert (fires, paging_with_a_bucket) == (
            "GmeRecordingMissesUnconfirmed",
            ["GmeRecordingStuck", "GmeRecordingUploadsMissing"],
        )
        # The demo's deadlines pass within half a minute of its end, then a scrape and an
        # evaluation (15 s each): bounded well under the test's 120 s.
        alert = prom.wait_for_alert(fires, timeout=60, labels={"app_id": "1400000000"})
        print(f"{fires} firing {time.monotonic() - started:.0f} s after the simulator's start")
        assert alert["annotations"]["runbook_url"].endswith(fires.lower())
        assert float(alert["value"]) > 0
        firing = {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}
        assert not firing & set(paging_with_a_bucket), firing
