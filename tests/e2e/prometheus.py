"""A real Prometheus for end-to-end tests: scrapes one target every second with given rule files.

    rules = shorten_rules(RULE_FILES, tmp_path / "rules", for_duration="2s",
                          replace={"GmeRecordingCallbacksAbsent": {"> 1800": "> 5"}})
    with PrometheusServer(f"127.0.0.1:{admin_port}", rules, tmp_path / "prom") as prom:
        prom.wait_for_alert("GmeRecordingStuck", timeout=60)
        prom.query('sum(gme_recording_active_recordings)')

Nothing is mocked: the `prometheus` binary from PATH runs with its own TSDB in a temporary directory
and is stopped (and waited for) on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shorten_rules(
    rule_files: Iterable[Path],
    dest: Path,
    *,
    for_duration: str = "2s",
    replace: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Path]:
    """Copy rule files into `dest`, every `for:` and `keep_firing_for:` set to `for_duration`,
    and return the copies.

    `replace` maps an alert (or recorded series) name to text replacements in its expression, e.g.
    ``{"GmeRecordingCallbacksAbsent": {"> 1800": "> 5"}}`` to lower a threshold. A replacement that
    does not match raises, so a test cannot silently go on testing the unchanged rule.
    """
    replace = {name: dict(subs) for name, subs in (replace or {}).items()}
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in rule_files:
        doc = yaml.safe_load(Path(path).read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        rule[key] = for_duration
                name = rule.get("alert") or rule.get("record")
                for old, new in replace.pop(name, {}).items():
                    if old not in rule["expr"]:
                        raise ValueError(f"{name}: {old!r} not in its expression {rule['expr']!r}")
                    rule["expr"] = rule["expr"].replace(old, new)
        out = dest / Path(path).name
        out.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
        written.append(out)
    if replace:
        raise ValueError(f"no rule named {sorted(replace)} in {[str(p) for p in rule_files]}")
    return written


class PrometheusError(RuntimeError):
    pass


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; always reaped."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class PrometheusServer:
    """`prometheus` on a free loopback port, scraping `target` (host:port, or several) as job
    `job` every 1s, and each of `more_jobs` (job -> targets) likewise.

    `target=None` makes it scrape itself, which is enough to exercise rules about scrape health.
    """

    def __init__(
        self,
        target: str | Sequence[str] | None,
        rule_files: Sequence[Path],
        workdir: Path,
        *,
        job: str = "gme-recwatch",
        metrics_path: str = "/metrics",
        interval: str = "1s",
        binary: str | None = None,
        more_jobs: Mapping[str, Sequence[str]] | None = None,
        target_labels: Mapping[str, Mapping[str, str]] | None = None,
        alertmanager: str | None = None,
    ) -> None:
        self.target = target
        # host:port -> labels Prometheus adds to that target's series (e.g. its namespace)
        self.target_labels = {t: dict(v) for t, v in (target_labels or {}).items()}
        self.alertmanager = alertmanager
        self.more_jobs = dict(more_jobs or {})
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.workdir = workdir
        self.job = job
        self.metrics_path = metrics_path
        self.interval = interval
        self.binary = binary or shutil.which("prometheus") or "prometheus"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = {
            "global": {
                "scrape_interval": self.interval,
                "evaluation_interval": self.interval,
                "scrape_timeout": self.interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [
                        {"targets": [t], "labels": self.target_labels.get(t, {})} for t in targets
                    ],
                }
                for job, targets in ((self.job, self._targets()), *self.more_jobs.items())
            ],
        }
        if self.alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]}
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _targets(self) -> list[str]:
        if self.target is None:
            return [f"127.0.0.1:{self.port}"]
        return [self.target] if isinstance(self.target, str) else list(self.target)

    def start(self, timeout: float = 30) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            config = self._write_config()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        self.binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={self.workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--storage.tsdb.retention.time=1d",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready(timeout):
                return self
            if "address already in use" not in self.logs():
                break
        self.stop()
        raise PrometheusError(f"prometheus did not become ready:\n{self.logs()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        terminate(self.proc, timeout=15)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _api(self, path: str, **params: str) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {r.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (each item has `metric` and `value`)."""
        data = self._api("/api/v1/query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), as GET /api/v1/alerts returns them."""
        return list(self._api("/api/v1/alerts")["alerts"])

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(name, health, lastError) of every loaded rule."""
        return [
            (r["name"], r["health"], r.get("lastError", ""))
            for g in self._api("/api/v1/rules")["groups"]
            for r in g["rules"]
        ]

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll an instant query until it returns something."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"{expr!r} still empty after {timeout}s")
            time.sleep(0.5)

    def wait_for_alert(
        self, name: str, state: str = "firing", timeout: float = 60, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Poll /api/v1/alerts until alert `name` (with `labels`) is in `state`; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for alert in self.alerts():
                if (
                    alert["labels"].get("alertname") == name
                    and alert["state"] == state
                    and all(alert["labels"].get(k) == v for k, v in (labels or {}).items())
                ):
                    return alert
            if time.monotonic() > deadline:
                seen = [(a["labels"].get("alertname"), a["state"]) for a in self.alerts()]
                raise PrometheusError(f"alert {name} not {state} after {timeout}s; active: {seen}")
            time.sleep(0.5)


class AlertmanagerServer:
    """Debian's `prometheus-alertmanager` on a free loopback port with the given config (e.g.
    the shipped inhibit rules), its state in `workdir`, clustering off."""

    def __init__(self, config: Mapping[str, Any], workdir: Path, binary: str) -> None:
        self.config = config
        self.workdir = workdir
        self.binary = binary
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> AlertmanagerServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(dict(self.config), sort_keys=False))
        self.port = free_port()
        with open(self.workdir / "alertmanager.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={path}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{self.address}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise PrometheusError(
            "alertmanager did not become ready: "
            + (self.workdir / "alertmanager.log").read_text(errors="replace")
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        terminate(self.proc, timeout=10)

    def alerts(self) -> list[dict[str, Any]]:
        r = httpx.get(f"http://{self.address}/api/v2/alerts", timeout=5)
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()
        return result
