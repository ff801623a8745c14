"""Fixtures that start the real service: `gme-recwatch serve` as a process on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import metric_value

from gme_recwatch.events import encode_callback
from gme_recwatch.signature import sign

SECRET = "e2e-secret-0123456789abcdef"
BIZ_ID = 1400000000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def callback_body(
    event_type: int,
    *,
    room: str = "room-1",
    user: str = "user-1",
    task: int = 446946705284000001,
    seq: int = 0,
    mode: int = 1,
    ts: int | None = None,
    biz: int = BIZ_ID,
) -> bytes:
    return encode_callback(
        biz_id=biz,
        room_id=room,
        user_id=user,
        task_id=task,
        seq_no=seq,
        event_type=event_type,
        record_mode=mode,
        timestamp=int(time.time()) if ts is None else ts,
        file_name=f"{biz}_{room}_{user}/x_{task}_audio.mp3",
    )


@dataclass
class RunningService:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log_path: Path
    secret: str = SECRET
    env: dict[str, str] = field(default_factory=dict)

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def post(
        self, body: bytes, *, secret: str | None = None, signature: str | None = None, timeout: float = 5.0
    ) -> httpx.Response:
        sig = signature if signature is not None else sign(body, secret or self.secret)
        return httpx.post(
            self.callback_url,
            content=body,
            timeout=timeout,
            headers={"Signature": sig, "Content-Type": "application/json"},
        )

    def send(self, event_type: int, **kw: object) -> httpx.Response:
        return self.post(callback_body(event_type, **kw))  # type: ignore[arg-type]

    def metrics_text(self) -> str:
        return httpx.get(self.admin_url + "/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return metric_value(self.metrics_text(), name, **labels)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of ``event``, in order."""
        out = []
        for line in self.logs().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == event:
                out.append(rec)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_service(tmp_path: Path, *serve_args: str, **env: str) -> RunningService:
    """Start `gme-recwatch serve [serve_args]` and wait until /readyz says ready.

    Ports are free ones unless `env` names them; another process (another xdist worker's
    service, a Prometheus) may take a free port before the service binds it, and then the
    service exits with "address already in use" and is started again on other ports."""
    if "GME_RECWATCH_PORT" not in env and "GME_RECWATCH_ADMIN_PORT" not in env:
        for _retry in range(2):
            try:
                return _start_service(tmp_path, serve_args, env)
            except _PortTaken:
                pass
    return _start_service(tmp_path, serve_args, env)


class _PortTaken(RuntimeError):
    pass


def _start_service(
    tmp_path: Path, serve_args: tuple[str, ...], env: dict[str, str], probe: str = "/readyz"
) -> RunningService:
    """Start it and wait until ``probe`` answers 200 (/healthz for a service meant to be up but
    not ready)."""
    port, admin = free_port(), free_port()
    while admin == port:  # each socket is closed before the next: the kernel may hand out one twice
        admin = free_port()
    full_env = {
        **os.environ,
        "GME_RECWATCH_SECRET_KEY": SECRET,
        "GME_RECWATCH_HOST": "127.0.0.1",
        "GME_RECWATCH_ADMIN_HOST": "127.0.0.1",
        "GME_RECWATCH_PORT": str(port),
        "GME_RECWATCH_ADMIN_PORT": str(admin),
        "GME_RECWATCH_LOG_FORMAT": "json",
        "GME_RECWATCH_LOG_LEVEL": "debug",
        **env,
    }
    for k in [k for k in full_env if k.startswith("OTEL_")]:
        if k not in env:
            del full_env[k]
    log_path = tmp_path / f"service-{port}.log"
    exe = Path(sys.executable).with_name("gme-recwatch")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", *serve_args], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    svc = RunningService(proc, port, admin, log_path, env=env)
    # A start takes about a second; at load 25 on 2 cores (seven developers' suites and two CPU
    # hogs) services took over 30 s to become ready, and the test failed before it began.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            error = _PortTaken if "address already in use" in svc.logs() else RuntimeError
            raise error(f"gme-recwatch exited with {proc.returncode}:\n{svc.logs()}")
        try:
            if httpx.get(svc.admin_url + probe, timeout=1).status_code == 200:
                return svc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    svc.stop(signal.SIGKILL)
    raise RuntimeError(f"gme-recwatch did not become ready:\n{svc.logs()}")


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[object]:
    started: list[RunningService] = []

    def factory(*serve_args: str, **env: str) -> RunningService:
        svc = start_service(tmp_path, *serve_args, **env)
        started.append(svc)
        return svc

    yield factory
    for svc in started:
        if svc.proc.poll() is None:
            svc.stop(signal.SIGKILL)


@pytest.fixture
def service(service_factory: object) -> RunningService:
    return service_factory()  # type: ignore[operator]
