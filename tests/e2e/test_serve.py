"""The real process: both listeners over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import RunningService, callback_body


def test_signed_callback_is_accepted_and_tracked(service: RunningService) -> None:
    r = service.send(1, room="r-accept")
    assert r.status_code == 200 and r.json() == {"code": 0}
    assert service.metric("gme_recording_callbacks_total", event_type="started", result="accepted") == 1
    assert service.metric("gme_recording_active_recordings", app_id="1400000000", record_mode="mixed") == 1
    assert service.metric("gme_recording_active_rooms", app_id="1400000000") == 1


def test_metrics_are_never_served_on_the_callback_port(service: RunningService) -> None:
    base = f"http://127.0.0.1:{service.port}"
    for path in ("/metrics", "/readyz", "/api/v1/segments", "/schema/openapi.json"):
        assert httpx.get(base + path).status_code == 404, path
    assert httpx.get(base + "/healthz").status_code == 200


def test_sigterm_exits_cleanly(service: RunningService) -> None:
    service.send(1)
    assert service.stop(signal.SIGTERM) == 0
    assert '"event": "stopped"' in service.logs()


def test_bad_signature_is_rejected_and_counted(service: RunningService) -> None:
    r = service.post(callback_body(1), secret="wrong-key")
    assert r.status_code == 401 and r.json()["error"] == "mismatch"
    assert service.metric("gme_recording_signature_failures_total", reason="mismatch") == 1
    assert service.metric("gme_recording_tracked_segments") == 0


def test_port_in_use_fails_fast_with_a_clear_message(service: RunningService) -> None:
    env = {
        **os.environ,
        "GME_RECWATCH_SECRET_KEY": "k",
        "GME_RECWATCH_HOST": "127.0.0.1",
        # both ports are already held by `service`
        "GME_RECWATCH_PORT": str(service.port),
        "GME_RECWATCH_ADMIN_PORT": str(service.admin_port),
        "GME_RECWATCH_LOG_FORMAT": "json",
    }
    exe = str(Path(sys.executable).with_name("gme-recwatch"))
    r = subprocess.run([exe, "serve"], env=env, capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "address already in use" in out and "could not listen" in out
    assert "Task exception was never retrieved" not in out
    assert f"127.0.0.1:{service.port} (GME_RECWATCH_PORT)" in r.stderr
    assert f":{service.admin_port} (GME_RECWATCH_ADMIN_PORT)" in r.stderr


def test_a_demo_on_taken_ports_names_the_settings_before_any_banner(service: RunningService) -> None:
    """A second `make run` beside the first: one line naming both settings that move the
    listeners, and no banner announcing URLs that are someone else's."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GME_RECWATCH_")},
        "GME_RECWATCH_PORT": str(service.port),
        "GME_RECWATCH_ADMIN_PORT": str(service.admin_port),
    }
    exe = str(Path(sys.executable).with_name("gme-recwatch"))
    r = subprocess.run([exe, "serve", "--demo"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == ""
    assert "GME_RECWATCH_PORT" in r.stderr and "GME_RECWATCH_ADMIN_PORT" in r.stderr
    assert "address already in use" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_taken_admin_port_is_the_only_one_the_error_names(tmp_path: Path) -> None:
    import socket

    from .conftest import free_port

    callback_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin_port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GME_RECWATCH_")},
            "GME_RECWATCH_SECRET_KEY": "k",
            "GME_RECWATCH_HOST": "127.0.0.1",
            "GME_RECWATCH_ADMIN_HOST": "127.0.0.1",
            "GME_RECWATCH_PORT": str(callback_port),
            "GME_RECWATCH_ADMIN_PORT": str(admin_port),
            "GME_RECWATCH_LOG_FORMAT": "json",
        }
        exe = str(Path(sys.executable).with_name("gme-recwatch"))
        r = subprocess.run([exe, "serve"], env=env, capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"could not listen on 127.0.0.1:{admin_port}" in out
    assert str(callback_port) not in out.split("could not listen")[-1]


@pytest.mark.parametrize("stack", ["auto", "python"])
def test_both_http_stacks_keep_every_http_behaviour(service_factory: object, stack: str) -> None:
    """uvloop + httptools (the default) and the pure-Python fallback answer alike: a signed
    callback 200, another method 405 with Allow, a streamed body over the limit 413."""
    svc: RunningService = service_factory(
        GME_RECWATCH_HTTP_STACK=stack,  # type: ignore[operator]
        GME_RECWATCH_MAX_BODY_BYTES="4096",
    )
    assert f'"http_stack": "{stack}"' in svc.logs()
    assert svc.send(1, room=f"stack-{stack}").status_code == 200
    r = httpx.get(svc.callback_url)
    assert r.status_code == 405 and r.headers["allow"] == "POST"

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    r = httpx.post(svc.callback_url, content=chunks(), headers={"Signature": "x"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert svc.stop() == 0
    assert '"event": "stopped"' in svc.logs()
