"""The exposition, byte for byte: a fixed scenario must produce tests/golden/metrics.prom.

A renamed metric or label, a new series or a changed help text shows up as a diff of that file
in review. After an intended change: ``pytest tests/test_metrics.py --update-golden``.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gme_recwatch import __version__
from gme_recwatch.clock import FakeClock
from gme_recwatch.events import encode_callback
from gme_recwatch.metrics import EVENT_TYPES, INVALID_REASONS, RECORD_MODES, RESULTS, STATES
from gme_recwatch.service import Service
from gme_recwatch.settings import Settings
from gme_recwatch.signature import sign

GOLDEN = Path(__file__).resolve().parent / "golden" / "metrics.prom"
SECRET = "golden-secret"
APP = "1400000000"
NOW = 1_700_000_000


def _scenario() -> str:
    """Three segments through their lifecycles, deadlines, and two rejections."""
    clock = FakeClock(mono=1000.0, wall=float(NOW))
    service = Service(
        Settings(
            secret_key=SECRET, max_recording_seconds=3600, upload_grace_seconds=600, reorder_window_seconds=60
        ).validate(),
        clock=clock,
    )

    async def go() -> None:
        await service.start()

        async def send(event_type: int, room: str, ts: int, *, signed: bool = True) -> None:
            b = encode_callback(
                biz_id=1400000000,
                room_id=room,
                user_id="u",
                task_id=1,
                seq_no=0,
                event_type=event_type,
                record_mode=1,
                timestamp=ts,
                file_name="f.mp3",
            )
            await service.intake.handle(b, sign(b, SECRET if signed else "wrong"), "golden")

        await send(1, "done", NOW - 900)
        await send(2, "done", NOW - 300)
        await send(3, "done", NOW - 290)
        await send(3, "done", NOW - 290)  # a duplicate
        await send(1, "long", NOW - 10)
        await send(2, "lost-start", NOW - 5)
        await send(1, "forged", NOW, signed=False)
        await service.intake.handle(b"{}", sign(b"{}", SECRET), "golden")  # malformed
        clock.advance(3601)
        await service.sweep()
        await service.refresh_stats()

    asyncio.run(go())
    text = generate_latest(service.metrics.registry).decode()
    kept = [
        line
        for line in text.splitlines(keepends=True)
        if not re.match(r"(# (HELP|TYPE) )?(process|python)_", line)
    ]
    return (
        "".join(kept)
        .replace(f'version="{__version__}"', 'version="<version>"')
        .replace('python_version="', 'python_version="<python>" x="')
    )


def _normalised(text: str) -> str:
    return re.sub(r'python_version="<python>" x="[^"]*"', 'python_version="<python>"', text)


def test_exposition_of_a_fixed_scenario_matches_the_golden_file(request: pytest.FixtureRequest) -> None:
    got = _normalised(_scenario())
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), (
        "the /metrics exposition changed: review the diff and run "
        "`pytest tests/test_metrics.py --update-golden` if it is intended"
    )


def test_series_that_alerts_use_exist_at_zero_for_every_label_value() -> None:
    metrics = Service(Settings(secret_key=SECRET)).metrics
    metrics.touch_app(APP)  # what every stats refresh does for each app the store knows
    text = generate_latest(metrics.registry).decode()
    for e in EVENT_TYPES:
        for r in RESULTS:
            assert f'gme_recording_callbacks_total{{app_id="{APP}",event_type="{e}",result="{r}"}} 0.0' in text
    for reason in INVALID_REASONS:
        assert f'gme_recording_callbacks_invalid_total{{reason="{reason}"}} 0.0' in text
    for mode in RECORD_MODES:
        assert f'gme_recording_duration_seconds_count{{record_mode="{mode}"}} 0.0' in text
    for state in STATES:
        assert f'gme_recording_tracked_segments{{state="{state}"}} 0.0' in text


def test_cos_error_classes_are_the_checkers_and_problem_labels_exist_per_app() -> None:
    from typing import get_args

    from gme_recwatch import cos, metrics

    assert metrics.RECONCILE_ERRORS == get_args(cos.ErrorReason)
    m = metrics.Metrics()
    m.touch_app("1400000000")
    text = generate_latest(m.registry).decode()
    for state in metrics.PROBLEM_STATES:
        for confirmed in metrics.CONFIRMED:
            assert (
                f'gme_recording_problem_segments_total{{app_id="1400000000",'
                f'confirmed="{confirmed}",state="{state}"}} 0.0'
            ) in text


def test_no_label_value_names_a_room_user_or_task() -> None:
    samples = [line for line in _scenario().splitlines() if not line.startswith("#")]
    label_values = set(re.findall(r'="([^"]*)"', "\n".join(samples)))
    assert label_values.isdisjoint({"done", "long", "lost-start", "forged", "u", "1"})
    assert not any(name in line for line in samples for name in ("user_id", "room_id", "task_id"))
