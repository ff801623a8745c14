"""`gme-recwatch canary` against the real service: it travels the callback path, proves it works,
and leaves no trace in the recording metrics or the tracked segments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SECRET, RunningService

pytestmark = pytest.mark.e2e
EXE = str(Path(sys.executable).with_name("gme-recwatch"))


def canary(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, "canary", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_a_canary_is_counted_apart_from_recordings(service: RunningService) -> None:
    before = service.metric("gme_recording_last_callback_timestamp_seconds")
    done = canary("--url", service.callback_url, "--secret", SECRET)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("canary ok: 200")
    assert service.metric("gme_recording_canary_last_success_timestamp_seconds") > 0
    assert service.metric("gme_recording_canary_callbacks_total") == 1
    # Nothing in the recording metrics or the tracked segments.
    assert service.metric("gme_recording_callbacks_total") == 0
    assert service.metric("gme_recording_tracked_segments") == 0
    assert service.metric("gme_recording_last_callback_timestamp_seconds") == before == 0


def test_a_canary_with_the_wrong_key_fails_and_counts_as_a_bad_signature(service: RunningService) -> None:
    done = canary("--url", service.callback_url, "--secret", "not-the-key")
    assert done.returncode == 1
    assert "canary failed: 401" in done.stderr or "canary failed: 403" in done.stderr
    assert service.metric("gme_recording_canary_last_success_timestamp_seconds") == 0
    assert service.metric("gme_recording_signature_failures_total", reason="mismatch") == 1


def test_a_canary_signs_with_the_keyring_file_key_of_its_app(service_factory: object, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("1400000001=app-one-key\n")
    svc: RunningService = service_factory(
        GME_RECWATCH_SECRET_KEY="",  # type: ignore[operator]
        GME_RECWATCH_KEYS_FILE=str(keys),
    )
    done = canary(
        "--url", svc.callback_url, "--biz-id", "1400000001", env={"GME_RECWATCH_KEYS_FILE": str(keys)}
    )
    assert done.returncode == 0, done.stderr
    assert svc.metric("gme_recording_canary_callbacks_total") == 1


def test_a_broken_path_fails_the_canary_fast(tmp_path: Path) -> None:
    from .conftest import free_port

    done = canary("--url", f"http://127.0.0.1:{free_port()}/callback", "--secret", SECRET, "--timeout", "2")
    assert done.returncode == 1
    assert "ConnectError" in done.stderr


def test_a_canary_without_a_key_says_how_to_give_one() -> None:
    done = canary("--url", "http://127.0.0.1:9/callback")
    assert done.returncode == 2
    assert "--secret" in done.stderr
