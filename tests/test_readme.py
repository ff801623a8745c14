"""The README is part of the feature: its commands exist and run, and the docs' tables match the
code.

Every shell command in README.md is classified here: `make` targets must exist, `gme-recwatch`
commands must parse with the real CLI, `helm` must name files that exist, variables must be
settings. The commands of the 60-second try (and the by-hand callback of docs/signatures.md)
are run against the service started as `make run` starts it; the README's `simulate` command is
run by tests/e2e/test_simulator.py, which reads it from here. Scrape configurations are checked
with `promtool check config`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, require_tool

from gme_recwatch import cli, settings

sys.path.insert(0, str(ROOT / "tools"))
import readme_tables

README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
# Commands shown for the reader's own environment: checked for shape, never run here.
NOT_RUN = {"docker", "cosign", "kubectl", "openssl", "prometheus"}  # prometheus: e2e/test_readme_prometheus.py


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def commands(text: str) -> list[list[str]]:
    """Each shell command of ``text``'s ``sh`` blocks, as words (continuations joined, comments
    dropped)."""
    out = []
    for block in blocks(text, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def readme_simulate_args() -> list[str]:
    """The arguments of the README's `gme-recwatch simulate` command."""
    (found,) = [c for c in commands(README) if c[0].endswith("gme-recwatch") and c[1] == "simulate"]
    return found[2:]


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_the_readme_is_short_and_starts_with_what_matters() -> None:
    lines = README.splitlines()
    assert len(lines) < 300
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:3] == ["## Try it in 60 seconds", "## Run it for real", "## Documentation"]
    first_screen = "\n".join(lines[:70])
    for must in (
        "make run",
        "simulate",
        "GME_RECWATCH_KEYS_FILE",
        "GME_RECWATCH_REDIS_URL",
        "GME_RECWATCH_COS_BUCKET",
    ):
        assert must in first_screen, must


# Pages that other changes of the same issue write (#19, #20); they exist once those are merged.
WRITTEN_ELSEWHERE = {"docs/alerting.md", "docs/operations.md"}


def test_every_link_to_a_file_resolves() -> None:
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if str((page.parent / target).resolve().relative_to(ROOT)) in WRITTEN_ELSEWHERE:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_every_command_in_the_readme_is_known_and_well_formed() -> None:
    makefile = (ROOT / "Makefile").read_text()
    parser = cli.build_parser()
    env_names = {settings.env_name(f.name) for f in settings.fields()}
    found = commands(README)
    assert len(found) >= 10
    for words in found:
        tool = Path(words[0]).name
        if tool == "make":
            assert re.search(rf"^{words[1]}:", makefile, re.M), words
        elif tool == "gme-recwatch":
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"gme-recwatch rejects: {shlex.join(words)}")
        elif tool == "export":
            for assignment in words[1:]:
                assert assignment.split("=", 1)[0] in env_names, assignment
        elif tool == "helm":
            assert (ROOT / words[3]).is_dir(), words
            for i, w in enumerate(words):
                if w == "-f":
                    assert (ROOT / words[i + 1]).is_file(), words[i + 1]
        elif tool == "curl":  # at `make run`'s listeners (run below)
            assert any(re.match(r"localhost:808[01]/", w) for w in words), words
        else:
            assert tool in NOT_RUN, f"classify this README command: {shlex.join(words)}"


def test_make_targets_named_in_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w[\w-]*)`", README)):
        assert re.search(rf"^{target}:", makefile, re.M), target


# -- the commands run -------------------------------------------------------------------------


def _on_ports(command: str, port: int, admin: int) -> str:
    for host in ("localhost", "127.0.0.1"):
        command = command.replace(f"{host}:8080", f"127.0.0.1:{port}")
        command = command.replace(f"{host}:8081", f"127.0.0.1:{admin}")
    return command


def test_the_60_second_try_and_the_hand_signed_callback_run(tmp_path: Path) -> None:
    """`make run`'s service (serve --demo, no key set), then every command of the README's try
    but the simulator, and the by-hand callback of docs/signatures.md, each exit 0."""
    from e2e.conftest import start_service

    for tool in ("curl", "openssl"):
        require_tool(tool)
    svc = start_service(tmp_path, "--demo", GME_RECWATCH_SECRET_KEY="")
    try:
        venv_bin = str(Path(sys.executable).parent)
        try_block = blocks(README.split("## Try it in 60 seconds")[1], "sh")[1]
        by_hand = next(b for b in blocks((DOCS / "signatures.md").read_text(), "sh") if "openssl dgst" in b)
        for script in (try_block, by_hand):
            script = _on_ports(script, svc.port, svc.admin_port).replace(".venv/bin", venv_bin)
            r = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert r.returncode == 0, (script, r.stdout, r.stderr)
        assert r.stdout.strip() == '{"code":0}'  # the by-hand callback was accepted
        assert svc.metric("gme_recording_callbacks_total", result="accepted") == 1
        assert svc.metric("gme_recording_callback_delay_seconds_count") == 1
        assert svc.metric("gme_recording_callback_delay_seconds_sum") < 60  # a current Timestamp
    finally:
        svc.stop()


def test_the_readme_simulate_command_parses_and_uses_the_demo_key() -> None:
    args = cli.build_parser().parse_args(["simulate", *readme_simulate_args()])
    assert args.url == "http://127.0.0.1:8080/callback"  # where `make run` listens
    assert args.secret == settings.DEMO_KEY and args.time_scale == 100


@pytest.mark.parametrize("page", ["README.md", "docs/metrics.md", "helm/gme-recwatch/README.md"])
def test_scrape_configs_in_the_docs_are_valid_prometheus_configuration(page: str, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    found = [b for b in blocks((ROOT / page).read_text(), "yaml") if "scrape_configs:" in b]
    assert found
    for i, block in enumerate(found):
        config = yaml.safe_load(block)
        assert "scrape_configs" in config
        if not _has_kubernetes_sd(promtool, tmp_path):  # Debian's Prometheus is built without it
            for job in config["scrape_configs"]:
                if job.pop("kubernetes_sd_configs", None) is not None:
                    job["static_configs"] = [{"targets": ["placeholder:8081"]}]
        path = tmp_path / f"prometheus-{i}.yml"
        path.write_text(yaml.safe_dump(config))
        r = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr


def _has_kubernetes_sd(promtool: str, tmp_path: Path) -> bool:
    probe = tmp_path / "k8s-sd-probe.yml"
    probe.write_text("scrape_configs:\n  - job_name: x\n    kubernetes_sd_configs:\n      - role: pod\n")
    r = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(probe)], capture_output=True, text=True, timeout=60
    )
    return "kubernetes_sd_configs not found" not in r.stdout + r.stderr


# -- generated tables -------------------------------------------------------------------------


def test_configuration_table_matches_settings() -> None:
    assert readme_tables.config_table() in (DOCS / "configuration.md").read_text(), "run: make docs"


def test_metrics_table_matches_the_registry() -> None:
    assert readme_tables.metrics_table() in (DOCS / "metrics.md").read_text(), "run: make docs"


def test_every_alert_has_a_runbook_section() -> None:
    rules = (ROOT / "dashboards/rules/gme-recwatch-alerts.yaml").read_text()
    runbook = (ROOT / "docs/runbook.md").read_text().lower()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert alerts
    for alert in alerts:
        assert f"## {alert.lower()}" in runbook or f'id="{alert.lower()}"' in runbook, alert


# Where "tracker", the old word for the store, may still be read: the deprecated alias metric,
# the retired alert's row, and history (what a measurement or a fixed bug was made on).
OLD_WORD_KEPT = (
    '"tracker_capacity"',
    "`gme_recording_tracker_capacity`",
    "| GmeRecwatchTrackerNearCapacity |",
    "`Tracker` class",
    "(then the tracker's)",
)


def test_users_read_one_word_for_where_segments_are_kept() -> None:
    """The word is "store", never "tracker", wherever users and operators read: the service's own texts
    (help, logs, settings), the rules, the dashboards, the chart and the docs."""
    trees = [ROOT / "src", ROOT / "dashboards", ROOT / "helm", ROOT / "docs", ROOT / "README.md"]
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for tree in trees
        for path in ([tree] if tree.is_file() else sorted(p for p in tree.rglob("*") if p.is_file()))
        if path.suffix in {".py", ".lua", ".md", ".json", ".yaml", ".yml", ".tpl", ".txt"}
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "tracker" in line.lower() and not any(kept in line for kept in OLD_WORD_KEPT)
    ]
    assert found == []
