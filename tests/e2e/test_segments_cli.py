"""`gme-recwatch segments`: the drill-down API as a table in the terminal, against the real
service."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gme_recwatch import cli

from .conftest import RunningService

EXE = str(Path(sys.executable).with_name("gme-recwatch"))


def segments(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "segments", *args], capture_output=True, text=True, timeout=30)


def stuck_service(service_factory: object, n: int) -> RunningService:
    svc: RunningService = service_factory(GME_RECWATCH_MAX_RECORDING_SECONDS="1")  # type: ignore[operator]
    for seq in range(n):
        # A stream each (its own user): no SeqNo is revealed as never announced.
        assert svc.send(1, room=f"room-{seq % 2}", user=f"u{seq}", seq=seq).status_code == 200
    deadline = time.monotonic() + 15
    while svc.metric("gme_recording_tracked_segments", state="stuck") < n:
        assert time.monotonic() < deadline, svc.logs()
        time.sleep(0.2)
    return svc


def test_segments_prints_a_table_of_stuck_segments_with_the_total(service_factory: object) -> None:
    svc = stuck_service(service_factory, 3)
    r = segments("--url", svc.admin_url, "--state", "stuck", "--limit", "2")
    assert r.returncode == 0, r.stderr
    header, *rows, footer = r.stdout.strip().splitlines()
    assert header.split()[:3] == ["STATE", "SINCE", "APP"]
    assert len(rows) == 2 and all(row.split()[0] == "stuck" for row in rows)
    assert "max_recording_seconds" in rows[0] and "446946705284000001" in rows[0]
    assert footer.startswith("2 of 3 matching segments (raise --limit for more)")
    r = segments("--url", svc.admin_url, "--room-id", "room-1", "--json")
    doc = json.loads(r.stdout)
    assert doc["total"] == 1 and doc["segments"][0]["reason"].startswith("still recording 1 s")


def test_segments_follows_the_cursor_across_pages(
    service_factory: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = stuck_service(service_factory, 5)
    monkeypatch.setattr(cli, "_PAGE_MAX", 2)  # pages of 2, so that 5 need three
    assert cli.main(["segments", "--url", svc.admin_url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 5 and sorted(s["seq_no"] for s in doc["segments"]) == [0, 1, 2, 3, 4]


def test_segments_says_when_the_admin_port_does_not_answer(tmp_path: Path) -> None:
    from .conftest import free_port

    r = segments("--url", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1 and "ConnectError" in r.stderr and "port-forward" in r.stderr


def test_segments_into_a_reader_that_stops_early_ends_quietly(service_factory: object) -> None:
    """`gme-recwatch segments --json | head`: the reader closes the pipe after three lines, the
    command stops without a traceback and exits 0 (so `set -o pipefail` scripts go on)."""
    import shlex

    svc: RunningService = service_factory()  # type: ignore[operator]
    for seq in range(150):  # about 90 kB of JSON: more than a pipe holds, so a write meets EPIPE
        assert svc.send(1, room=f"room-{seq}", seq=seq).status_code == 200
    r = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"{shlex.quote(EXE)} segments --json --limit 1000 --url {svc.admin_url} | head -n 3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and len(r.stdout.splitlines()) == 3
