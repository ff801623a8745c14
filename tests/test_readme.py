"""The README is part of the feature: its tables must match the code, and its commands exist."""

from __future__ import annotations

import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import readme_tables

README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_configuration_table_matches_settings() -> None:
    assert readme_tables.config_table() in README, "run: python tools/readme_tables.py --write"


def test_metrics_table_matches_the_registry() -> None:
    assert readme_tables.metrics_table() in README, "run: python tools/readme_tables.py --write"


def test_every_alert_has_a_runbook_section() -> None:
    rules = (ROOT / "dashboards/rules/gme-recwatch-alerts.yaml").read_text()
    runbook = (ROOT / "docs/runbook.md").read_text().lower()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert alerts
    for alert in alerts:
        assert f"## {alert.lower()}" in runbook or f'id="{alert.lower()}"' in runbook, alert


def test_make_targets_named_in_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w[\w-]*)`", README)):
        assert re.search(rf"^{target}:", makefile, re.M), target
