"""Logs: one line per rejection with its reason, and never a secret, a signature or a body."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_app import SECRET, Harness, body

from gme_recwatch import logging as log_setup
from gme_recwatch.app import build_apps
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    log_setup.configure("debug", "json", stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def harness(**overrides: object) -> Harness:
    settings = Settings(**{"secret_key": SECRET, **overrides}).validate()  # type: ignore[arg-type]
    service = Service(settings)
    service.ready = True
    cb, admin = build_apps(service)
    return Harness(service, cb, admin)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_rejected_callback_logs_one_line_with_reason_and_remote(captured: io.StringIO) -> None:
    h = harness()
    h.post(body(1), sig="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    rejected = [ln for ln in lines(captured) if ln["event"] == "callback_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["reason"] == "mismatch" and rejected[0]["remote"] == "203.0.113.9"
    assert rejected[0]["level"] == "warning"


def test_secrets_signatures_and_bodies_never_reach_the_logs(captured: io.StringIO) -> None:
    h = harness(accepted_log_level="info")
    marker = "BODY-MARKER-7f3a"
    good = body(1, room=marker)
    good_sig = sign(good, SECRET)
    h.post(good, sig=good_sig)  # accepted
    h.post(good, sig=sign(good, "wrong"))  # mismatch
    bad = b'{"EventType":1,"Junk":"' + marker.encode() + b'-in-malformed"}'
    h.post(bad, sig=sign(bad, SECRET))  # malformed
    h.post(b"x" * 100_000)  # too large
    h.get("/no/such/page")
    out = captured.getvalue()
    assert "callback_accepted" in out and "callback_rejected" in out
    assert SECRET not in out
    assert good_sig not in out
    assert "-in-malformed" not in out  # no raw body
    assert '"Junk"' not in out


def test_accepted_callbacks_log_at_the_chosen_level(captured: io.StringIO) -> None:
    h = harness(log_level="debug")  # accepted_log_level's default: debug
    h.post(body(1))
    accepted = [ln for ln in lines(captured) if ln["event"] == "callback_accepted"]
    assert accepted and accepted[0]["level"] == "debug"
    assert accepted[0]["task_id"] == "446946705284000000"


def test_accepted_callbacks_below_the_log_level_are_not_even_formatted(captured: io.StringIO) -> None:
    h = harness(log_level="info")  # the default: the debug line is skipped before it is built
    assert not h.service.intake._log_accepted
    h.post(body(1))
    assert [ln for ln in lines(captured) if ln["event"] == "callback_accepted"] == []
    h2 = harness(log_level="info", accepted_log_level="info")
    h2.post(body(1, seq=1))
    assert [ln["level"] for ln in lines(captured) if ln["event"] == "callback_accepted"] == ["info"]


def test_log_lines_carry_trace_and_span_ids_when_tracing_is_on(captured: io.StringIO) -> None:
    service = Service(Settings(secret_key=SECRET), span_exporter=InMemorySpanExporter())
    cb, admin = build_apps(service)
    Harness(service, cb, admin).post(body(1), sig=None)
    (line,) = [ln for ln in lines(captured) if ln["event"] == "callback_rejected"]
    assert len(str(line["trace_id"])) == 32 and len(str(line["span_id"])) == 16


def test_without_an_exporter_there_are_no_dangling_trace_ids(captured: io.StringIO) -> None:
    harness().post(body(1), sig=None)
    (line,) = [ln for ln in lines(captured) if ln["event"] == "callback_rejected"]
    assert "trace_id" not in line


def test_redact_processor_masks_sensitive_fields() -> None:
    event = log_setup.redact(
        None, "info", {"event": "x", "signature": "abc", "secret": "s", "body": b"raw", "room_id": "r"}
    )
    assert event == {
        "event": "x",
        "signature": "[redacted]",
        "secret": "[redacted]",
        "body": "[redacted]",
        "room_id": "r",
    }


def test_library_logs_go_through_the_same_renderer(captured: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("library says %s", "hi")
    (line,) = lines(captured)
    assert line["event"] == "library says hi" and line["level"] == "warning"


def test_keys_file_errors_are_logged_without_key_material(captured: io.StringIO, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys"
    keys.write_text("*=first-key-value\n")
    h = harness(secret_key="", keys_file=str(keys))
    keys.write_text("garbage-line-with-new-secret-value\n")
    import os

    os.utime(keys, (time.time() + 5, time.time() + 5))
    asyncio.run(h.service.reload_keys())
    out = captured.getvalue()
    assert "keyring_reload_failed" in out
    assert "new-secret-value" not in out and "first-key-value" not in out
    assert h.metric("gme_recording_keyring_reloads_total", result="failure") == 1
    assert h.metric("gme_recording_keyring_file_valid") == 0
    for _ in range(3):  # every poll of the same broken version: no new failure, still invalid
        asyncio.run(h.service.reload_keys())
    assert h.metric("gme_recording_keyring_reloads_total", result="failure") == 1
    assert h.metric("gme_recording_keyring_file_valid") == 0
    assert captured.getvalue().count("keyring_reload_failed") == 1
    keys.write_text("*=second-key-value\n")
    os.utime(keys, (time.time() + 10, time.time() + 10))
    asyncio.run(h.service.reload_keys())
    assert h.metric("gme_recording_keyring_file_valid") == 1


def test_the_cos_client_s_debug_lines_stay_quiet_even_at_debug(captured: io.StringIO) -> None:
    """botocore's debug lines print request headers (Authorization names the API key) as plain
    text, where the redacting processor cannot see them."""
    for name in log_setup.QUIET_LOGGERS:
        logging.getLogger(name).debug("Authorization: AWS4-HMAC-SHA256 Credential=AKIDleak")
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    assert "AKIDleak" not in captured.getvalue()
    logging.getLogger("botocore.endpoint").warning("still heard")
    assert "still heard" in captured.getvalue()
